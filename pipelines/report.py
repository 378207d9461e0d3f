"""Build a corpus's report page: ``python -m pipelines.report OUTPUT``.

Writes OUTPUT/report.html (one page that opens from disk: the funnel from hours in to hours kept,
rejects by stage and reason, distributions of every score, speakers, sources, throughput) and an
audit view of randomly sampled kept and rejected clips to listen to, whose audio is copied into
OUTPUT/report_audio/. Every publish of a build rebuilds the page; this command rebuilds it on
demand, e.g. with another seed or a larger sample. It reads only committed runs, and takes the
output's lock while it writes. Object stores take the storage options a build takes
(--s3_endpoint_url, --s3_access_key_id, --s3_secret_access_key, --s3_region_name, --project ...).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from corpus import commit, integrity
from corpus.layout import Layout
from report import build_report
from report.data import ReportConfig
from run.console import logger
from run.lock import LockedError, OutputLock
from storage import fs, object_store

log = logger("report")


def build_parser() -> argparse.ArgumentParser:
    d = ReportConfig()
    p = argparse.ArgumentParser(prog="python -m pipelines.report", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("output", help="the corpus directory (local, gs:// or s3://)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the audit sample (default {d.seed})")
    p.add_argument("--kept_samples", type=int, default=d.kept_samples,
                   help=f"kept clips in the audit view (default {d.kept_samples})")
    p.add_argument("--rejected_per_reason", type=int, default=d.rejected_per_reason,
                   help=f"rejected clips per reason in the audit view (default {d.rejected_per_reason})")
    p.add_argument("--max_sources", type=int, default=d.max_sources,
                   help=f"rows of the sources table, the largest sources first (default {d.max_sources})")
    p.add_argument("--low_word_confidence", type=float, default=d.low_word_confidence,
                   help=f"mark transcript words below this confidence (default {d.low_word_confidence:g})")
    return p


def is_corpus(layout: Layout) -> bool:
    """True when something was ever published to ``layout`` (or a publish was under way)."""
    return bool(fs.list_dir(layout.path("runs"), suffix=".json")
                or fs.list_dir(layout.path(commit.JOURNAL), suffix=".json"))


def report(output: str, cfg=None):
    """Rebuild ``report.html`` of the corpus at ``output`` under its lock; returns the ``ReportResult``."""
    layout = Layout(output.rstrip("/"))
    if not is_corpus(layout):
        raise ValueError(f"{output} is not a speechmill corpus: it has no runs/*.json (nothing was ever "
                         f"published there; build one with python -m pipelines.build_corpus)")
    with OutputLock(layout.root, "report", log=log):
        commit.recover(layout.root, log)
        integrity.check_open(layout)
        return build_report(layout, cfg or ReportConfig(), log)


def storage_options(extra: List[str]) -> None:
    """Let file access see the storage options a build takes (``--s3_endpoint_url`` ...)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    unknown = [a for a in extra if a.startswith("-") and not a.startswith(("--s3_", "--gcs_", "--project", "--hdfs_"))]
    if unknown:
        raise ValueError(f"unknown option {unknown[0]} (see --help)")
    options = PipelineOptions(extra)
    FileSystems.set_options(options)
    object_store.set_options(options)


def main(argv: Optional[List[str]] = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    try:
        storage_options(extra)
        cfg = ReportConfig(seed=args.seed, kept_samples=args.kept_samples,
                           rejected_per_reason=args.rejected_per_reason, max_sources=args.max_sources,
                           low_word_confidence=args.low_word_confidence)
        result = report(args.output, cfg)
    except (ValueError, LockedError) as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: the previous report.html is unchanged or replaced whole")
        return 130
    except Exception as e:  # storage and format errors: one line, not a traceback
        log(f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return 1
    log(f"wrote {result.path} ({result.n_bytes / 1e6:.2f} MB; {result.kept_clips:,} kept clips summarised, "
        f"{result.audit_clips} clips in the audit view) in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
