"""Build a transcribed speech corpus: ``python -m pipelines.build_corpus --sources S --output O``.

This file only wires the stages together; each stage lives in ``transforms/``.
"""
from __future__ import annotations

import functools
import json
import sys
import time
from typing import List, Optional, Set

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from acquisition.sources_file import SourcesFileError, read_sources
from asr.model import ModelLoadError, check_available
from corpus import fs
from corpus.layout import Layout, corpus_report, done_source_ids, next_shard_index, publish, run_report, \
    run_tag, write_report
from pipelines.options import CorpusSettings, parse_args
from schemas import tables
from schemas.keys import stable_hash
from schemas.records import Source, SourceResult
from transforms.acquire import Acquire
from transforms.expand import Expand
from transforms.quality import Quality
from transforms.segment import SegmentAudio, SegmentConfig
from transforms.shard import ShardConfig, WriteShards
from transforms.transcribe import Transcribe
from transforms.write_table import WriteTable


def log(msg: str) -> None:
    print(f"[speechmill] {msg}", file=sys.stderr, flush=True)


def build(p: beam.Pipeline, sources: List[Source], bad_lines: list, settings: CorpusSettings,
          work: Layout, first_index: int, tag: str, done: Set[str] = frozenset()) -> None:
    """Add the corpus pipeline for ``sources`` to ``p``, writing into the run's work area."""
    seg_cfg = SegmentConfig(pack_dir=work.pack_dir, split=settings.split,
                            output_sample_rate=settings.output_sample_rate,
                            asr_batch_seconds=settings.asr_batch_seconds,
                            decode_timeout_s=settings.decode_timeout_s,
                            max_duration_s=settings.acquire.max_duration_s)
    shard_cfg = ShardConfig(shards_dir=work.shards_dir, manifest_dir=work.manifest_dir,
                            prefix=settings.shard_prefix, samples_per_shard=settings.samples_per_shard,
                            first_index=first_index)

    expanded = (p
                | "Sources" >> beam.Create(sources)
                | "Spread" >> beam.Reshuffle()
                | "Expand" >> Expand(settings.acquire, done))
    acquired = expanded["items"] | "Acquire" >> Acquire(settings.acquire)
    segmented = acquired.audio | "Segment" >> SegmentAudio(seg_cfg)
    transcribed = segmented.batches | "Transcribe" >> Transcribe(settings.asr, settings.transcribe)
    judged = transcribed["transcripts"] | "Quality" >> Quality(settings.quality)
    _ = judged.kept | "Shard" >> WriteShards(shard_cfg)

    bad_rows = p | "BadLines" >> beam.Create([r for _, r in bad_lines])
    bad_sources = p | "BadLineSources" >> beam.Create(
        [SourceResult(s, "failed", reason=r.reason) for s, r in bad_lines])
    rejected = ((expanded["failed"], acquired.failed, segmented.rejected, transcribed["failed"],
                 judged.rejected, bad_rows)
                | "AllRejections" >> beam.Flatten())
    _ = rejected | "WriteRejected" >> WriteTable(work.path("rejected.parquet"), tables.REJECTED,
                                                 functools.partial(tables.rejected_row, run=tag))
    results = ((expanded["sources"], acquired.sources, segmented.sources, bad_sources)
               | "AllSources" >> beam.Flatten())
    _ = results | "WriteSources" >> WriteTable(work.path("sources.parquet"), tables.SOURCES,
                                               functools.partial(tables.source_row, run=tag))


def clear_staging(staging_dir: str, done: Set[str]) -> None:
    """Delete staged downloads of sources that are done (kept for resuming until then)."""
    for path in fs.glob(fs.join(staging_dir, "*")):
        name = path.rsplit("/", 1)[-1]
        if name.split(".", 1)[0] in done:
            fs.delete(path)


def asr_padding_fraction(result) -> Optional[float]:
    """Share of the ASR model's input that was padding, from the run's Beam metrics."""
    from apache_beam.metrics.metric import MetricsFilter
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace("speechmill_asr"))["counters"]
    except Exception:  # runners without metrics support
        return None
    totals = {}
    for c in counters:
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + (c.committed or c.attempted or 0)
    real, pad = totals.get("audio_samples", 0), totals.get("padding_samples", 0)
    return round(pad / (real + pad), 4) if real + pad else None


def print_summary(title: str, report: dict) -> None:
    s = report["sources"]
    lines = [
        f"{title}: sources {s['total']} ({s['ok']} ok, {s['failed']} failed, {s['rejected']} rejected)",
        f"  hours in {report['hours_in']:.3f}, hours kept {report['hours_kept']:.3f} "
        f"({report['kept']} samples in {report['shards']} shards)",
        f"  segments {report['segments']}, rejected segments {report['rejected_segments']}",
    ]
    if report.get("asr_padding_fraction") is not None:
        lines.append(f"  ASR input that was padding: {report['asr_padding_fraction']:.1%}")
    if report["rejects_by_reason"]:
        lines.append("  rejects by reason:")
        for reason, r in report["rejects_by_reason"].items():
            lines.append(f"    {reason:32s} {r['count']:6d}  ({r['hours']:.3f} h)")
    log("\n".join(lines))


def run(argv: Optional[List[str]] = None, test_pipeline: Optional[beam.Pipeline] = None) -> dict:
    """Run one build; returns the whole corpus report. Raises ``SystemExit`` on bad options."""
    try:
        settings, beam_args = parse_args(argv)
        # driver-side file access (sources file, done set, publishing) sees the same storage
        # options (--s3_endpoint_url, GCS project ...) as the workers
        FileSystems.set_options(PipelineOptions(beam_args))
        check_available(settings.asr)
        parsed = read_sources(settings.sources)
    except (ValueError, ModelLoadError, SourcesFileError) as e:
        log(f"error: {e}")
        raise SystemExit(2)

    layout = Layout(settings.output)
    done = done_source_ids(layout)
    pending = [s for s in parsed.sources if s.source_id not in done]
    bad_lines = [(s, r) for s, r in parsed.bad_lines if s.source_id not in done]
    log(f"{len(parsed.sources)} sources in {settings.sources} ({parsed.duplicates} duplicate lines "
        f"ignored, {len(parsed.bad_lines)} unusable lines); {len(parsed.sources) - len(pending)} already "
        f"done in {settings.output}; {len(pending)} to process")
    if not pending and not bad_lines:
        report = corpus_report(layout)
        print_summary("nothing to do; corpus", report)
        return report

    first_index = next_shard_index(layout, settings.shard_prefix)
    ids = [s.source_id for s in pending + [s for s, _ in bad_lines]]
    tag = run_tag(ids, {**settings.fingerprint(), "first_shard": first_index,
                        "done": stable_hash(",".join(sorted(done)))})
    work = layout.work(tag)
    fs.delete_tree(work.root)
    fs.mkdirs(work.root)
    log(f"run {tag}: writing to {work.root}, shards from index {first_index}")

    started = time.monotonic()
    p = test_pipeline or beam.Pipeline(options=PipelineOptions(beam_args))
    build(p, pending, bad_lines, settings, work, first_index, tag, done)
    result = p.run()
    result.wait_until_finish()
    elapsed = time.monotonic() - started

    summary = run_report(layout, tag)
    if summary["sources"]["total"] == 0:
        fs.delete_tree(work.root)
        report = corpus_report(layout)
        print_summary(f"run {tag} ({elapsed:.1f} s) found nothing new; corpus", report)
        return report
    summary.update(elapsed_s=round(elapsed, 1), asr_model=settings.asr.label,
                   asr_padding_fraction=asr_padding_fraction(result),
                   settings=json.loads(json.dumps(settings.fingerprint(), default=str)))
    publish(layout, tag, summary)
    report = corpus_report(layout)
    write_report(layout, report)
    clear_staging(settings.acquire.staging_dir, done_source_ids(layout))
    if not settings.keep_work:
        fs.delete_tree(work.root)
    print_summary(f"run {tag} ({elapsed:.1f} s)", summary)
    print_summary("corpus", report)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    try:
        run(argv)
    except SystemExit as e:
        return int(e.code or 0)
    except KeyboardInterrupt:
        log("interrupted; nothing of this run was published, rerun to resume")
        return 130
    except Exception as e:
        log(f"failed: {type(e).__name__}: {e}")
        log("nothing of this run was published; fix the cause and rerun to resume")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
