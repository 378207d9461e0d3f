"""Merge a corpus's partial shards into full ones: ``python -m pipelines.compact OUTPUT``.

Every build run starts new shards after the highest index, so a corpus grown by many small runs
ends up with many partial shards (each run's last one). Compaction copies the samples of every
shard holding fewer than ``--samples_per_shard`` samples, in shard order, into new shards of that
size (no audio is decoded), rewrites their manifest parts, and replaces the old shards in one
journaled commit under the output's lock: a reader sees either the old shards or the new ones,
never both, and a crash half way is finished by the next command that opens the output.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from corpus import commit, guard, integrity, rewrite
from corpus.layout import Layout, committed_runs, shard_indices
from corpus.summary import corpus_report, write_report
from run.console import logger
from run.lock import LockedError, OutputLock
from run.publish import rebuild_html_report
from schemas.keys import stable_hash
from storage import fs

log = logger("compact")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.compact", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("output", help="the corpus directory (local, gs:// or s3://)")
    p.add_argument("--samples_per_shard", type=int, default=None,
                   help="target shard size (default: the corpus's latest run's --samples_per_shard)")
    p.add_argument("--shard_prefix", default="shard", help="shard file name prefix (default 'shard')")
    p.add_argument("--dry_run", action="store_true", help="say what would be merged, change nothing")
    return p


def _target_size(layout: Layout, given: Optional[int]) -> int:
    if given is not None:
        if given < 1:
            raise ValueError(f"--samples_per_shard must be >= 1, got {given}")
        return given
    builds = [r for r in committed_runs(layout).values() if r.get("settings")]
    latest = max(builds, key=lambda r: r.get("published_at", "")) if builds else {}
    size = latest.get("settings", {}).get("samples_per_shard")
    if not size:
        raise ValueError("the corpus records no --samples_per_shard; pass --samples_per_shard N")
    return int(size)


def compact(output: str, samples_per_shard: Optional[int] = None, prefix: str = "shard",
            dry_run: bool = False) -> dict:
    """Merge partial shards; returns what was done (counts and the new shard names)."""
    layout = Layout(output.rstrip("/"))
    if fs.is_local(layout.root) and not fs.exists(layout.path("runs")):
        raise ValueError(f"{output} is not a speechmill corpus (no runs/ folder)")
    with OutputLock(layout.root, "compact", log=log):
        commit.recover(layout.root, log)
        published = integrity.check_open(layout)
        size = _target_size(layout, samples_per_shard)
        names = [n for n in (f"{prefix}-{i:06d}" for i in shard_indices(layout, prefix))
                 if f"shards/{n}.tar" in published.files]
        sizes = rewrite.shard_sizes(layout.manifest_dir, names)
        partial = [n for n in names if sizes[n] < size]
        n_samples = sum(sizes[n] for n in partial)
        result = {"partial_shards": len(partial), "samples": n_samples, "new_shards": [], "samples_per_shard": size}
        if len(partial) < 2:
            log(f"nothing to merge: {len(partial)} partial shard(s) of {len(names)} ({n_samples} samples; target {size})")
            return result
        if dry_run:
            log(f"would merge {len(partial)} partial shards ({n_samples} samples) into "
                f"{(n_samples + size - 1) // size}")
            return result
        first = (shard_indices(layout, prefix) or [-1])[-1] + 1
        tag = "compact-" + stable_hash(",".join(partial) + f":{size}:{first}", 12)
        work = layout.work(tag)
        guard.delete_tree(layout.root, work.root)
        log(f"merging {len(partial)} partial shards ({n_samples} samples) into shards from index {first}")
        out = rewrite.rewrite(layout.shards_dir, layout.manifest_dir, partial, lambda k, r: True,
                              work.shards_dir, work.manifest_dir, prefix, first, size, expected=published.files)
        if out.kept != n_samples:
            raise RuntimeError(f"copied {out.kept} samples but the manifests list {n_samples}; nothing changed")
        moves = [(work.path(sub, n + ext), layout.path(sub, n + ext))
                 for n in out.new_shards for sub, ext in (("shards", ".tar"), ("manifest", ".parquet"))]
        deletes = [layout.path(sub, n + ext) for n in partial for sub, ext in (("shards", ".tar"), ("manifest", ".parquet"))]
        record = {"kind": "compact", "merged": partial, "files": {"shards": [n + ".tar" for n in out.new_shards]},
                  "samples": out.kept, "samples_per_shard": size}
        commit.commit(layout.root, tag, moves, record, deletes=deletes)
        guard.delete_tree(layout.root, work.root)
        write_report(layout, corpus_report(layout))
        rebuild_html_report(layout)  # the page names shards: point it at the merged ones
        log(f"merged {len(partial)} partial shards into {len(out.new_shards)}: "
            f"{', '.join(out.new_shards[:3])}{' ...' if len(out.new_shards) > 3 else ''}")
        result["new_shards"] = out.new_shards
        return result


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        compact(args.output, args.samples_per_shard, args.shard_prefix, args.dry_run)
    except (ValueError, LockedError) as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: nothing was changed (or the next command finishes the merge)")
        return 130
    except OSError as e:  # a full disk, a storage error: one line; the next command finishes or undoes the merge
        log(f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; the corpus is unchanged or "
            f"the next command finishes the merge")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
