"""Build a transcribed speech corpus: ``python -m pipelines.build_corpus --sources S --output O``.

This file only wires the stages together; each stage lives in ``transforms/``, and what a run may
do to an existing corpus lives in ``corpus/`` (lock, commit, state).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from typing import Callable, List, Optional, Set, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from acquisition.sources_file import SourcesFileError, read_sources
from asr.model import ModelLoadError, check_available
from corpus import commit, done_set, fs, live_progress, object_store, rewrite, waves
from corpus.layout import REJECTED_MANIFEST, REJECTED_SHARDS, Layout, clean_leftovers, corpus_report, \
    next_shard_index, publish, read_table, run_report, run_tag, shard_indices, write_report
from corpus.waves import ITEMS_TABLE
from corpus.lock import LockedError, LockLost, OutputLock
from corpus.state import CorpusSettingsError, CorpusState, check_settings
from pipelines.engine import engine, run_to_end
from pipelines.console import FilteredStderr, beam_quiet_args, quiet_libraries, visible_stream
from pipelines.options import CorpusSettings, OptionError, parse_args
from schemas import tables
from schemas.records import Source, SourceResult
from schemas.redact import safe
from transforms.acquire import Acquire
from transforms.expand import Expand
from transforms.quality import Quality
from transforms.routing import REJECTED, SOURCES
from transforms.segment import SegmentAudio, SegmentConfig
from speakers.cluster import ClusterParams
from speakers.turns import TurnParams
from transforms.shard import ShardConfig, WriteShards
from transforms.speakers import SPEAKERS, AssignSpeakers
from transforms.transcribe import USAGE, Transcribe, WriteUsage, read_usage
from transforms.write_table import WriteTable


ASR_USAGE = "asr_usage.json"  # a wave's model input totals, read by the driver (not published)


def log(msg: str) -> None:
    bar = live_progress.ACTIVE
    if bar is not None:
        bar.print_above(f"[speechmill] {msg}")
    else:
        print(f"[speechmill] {msg}", file=sys.stderr, flush=True)


def build_expansion(p: beam.Pipeline, sources: List[Source], bad_lines: list, settings: CorpusSettings,
                    work: Layout, tag: str, done_path: str) -> beam.PCollection:
    """The plan's first pipeline: list every pending source's items (``items.parquet``), with rows for
    the sources that could not be listed, items deferred by a limit, and unusable lines.

    ``done_path`` is a lookup file of finished source ids (``corpus.done_set``) that each worker
    reads from storage. Returns the pipeline's one final PCollection (see ``finished``).
    """
    expanded = (p
                | "Sources" >> beam.Create(sources)
                | "Spread" >> beam.Reshuffle()
                | "Expand" >> Expand(settings.acquire, done_path))
    written = [expanded["items"] | "WriteItems" >> WriteTable(work.path(ITEMS_TABLE), tables.ITEMS, tables.item_row)]
    bad_rows = p | "BadLines" >> beam.Create([r for _, r in bad_lines])
    bad_sources = p | "BadLineSources" >> beam.Create(
        [SourceResult.of(s, "failed", r.reason) for s, r in bad_lines])
    rejected = (expanded[REJECTED], bad_rows) | "AllRejections" >> beam.Flatten()
    written.append(rejected | "WriteRejected" >> WriteTable(work.path("rejected.parquet"), tables.REJECTED,
                                                            functools.partial(tables.rejected_row, run=tag)))
    results = (expanded[SOURCES], bad_sources) | "AllSources" >> beam.Flatten()
    written.append(results | "WriteSources" >> WriteTable(work.path("sources.parquet"), tables.SOURCES,
                                                          functools.partial(tables.source_row, run=tag)))
    return finished(written)


def finished(written: List[beam.PCollection]) -> beam.PCollection:
    """Join every write's output into one last PCollection, applied last.

    A runner that computes only what the pipeline's final transform depends on (the Dask runner)
    then still runs every write; on the others it is a no-op.
    """
    return tuple(written) | "Finished" >> beam.Flatten()


def build_wave(p: beam.Pipeline, items: List[Source], settings: CorpusSettings, work: Layout, first_index: int,
               tag: str, first_rejected_index: int = 0, known_speakers_path: Optional[str] = None) -> beam.PCollection:
    """One wave: fetch, segment, transcribe, judge and shard ``items``, writing into the wave's work area.

    Returns the pipeline's one final PCollection (see ``finished``). With ``--asr_accelerator`` only
    the transcription step gets a GPU, so the segment step's models (DNSMOS, voice encoder) run on CPU.
    """
    side_device = "cpu" if settings.asr_accelerator else settings.asr.device
    seg_cfg = SegmentConfig(pack_dir=work.pack_dir, split=settings.split,
                            output_sample_rate=settings.output_sample_rate,
                            asr_batch_seconds=settings.asr_batch_seconds,
                            decode_timeout_s=settings.decode_timeout_s,
                            max_duration_s=settings.acquire.max_duration_s,
                            max_scratch_bytes=int(settings.max_scratch_gb * 2 ** 30),
                            scratch_dir=settings.scratch_dir, vad=settings.vad == "silero", gates=settings.gates,
                            dnsmos=settings.dnsmos, dnsmos_device=side_device,
                            speakers=settings.speakers, turns=TurnParams(device=side_device))
    shard_cfg = ShardConfig(shards_dir=work.shards_dir, manifest_dir=work.manifest_dir,
                            prefix=settings.shard_prefix, samples_per_shard=settings.samples_per_shard,
                            first_index=first_index)

    acquired = (p
                | "Items" >> beam.Create(items)
                | "Spread" >> beam.Reshuffle()
                | "Acquire" >> Acquire(settings.acquire))
    segmented = acquired["audio"] | "Segment" >> SegmentAudio(seg_cfg)
    transcribed = segmented["batches"] | "Transcribe" >> Transcribe(settings.asr, settings.transcribe,
                                                                           accelerator=settings.asr_accelerator)
    judged = transcribed["transcripts"] | "Quality" >> Quality(settings.quality)
    kept = judged["kept"]
    written = [transcribed[USAGE] | "WriteUsage" >> WriteUsage(work.path(ASR_USAGE))]
    if settings.speakers:
        voiced = kept | "Speakers" >> AssignSpeakers(ClusterParams(similar_k=settings.similar_k), known_speakers_path)
        kept = voiced["kept"]
        written.append(voiced[SPEAKERS] | "WriteSpeakers" >> WriteTable(
            work.path("speakers.parquet"), tables.SPEAKERS, functools.partial(tables.speaker_row, run=tag)))
    written.append(kept | "Shard" >> WriteShards(shard_cfg))

    rejected = ((acquired[REJECTED], segmented[REJECTED], transcribed["failed"], judged[REJECTED])
                | "AllRejections" >> beam.Flatten())
    written.append(rejected | "WriteRejected" >> WriteTable(work.path("rejected.parquet"), tables.REJECTED,
                                                            functools.partial(tables.rejected_row, run=tag)))
    if settings.keep_rejected_audio:
        rejected_cfg = ShardConfig(shards_dir=work.path(REJECTED_SHARDS), manifest_dir=work.path(REJECTED_MANIFEST),
                                   prefix=settings.shard_prefix, samples_per_shard=settings.samples_per_shard,
                                   first_index=first_rejected_index, rejected=True)
        written.append(rejected
                       | "WithAudio" >> beam.Filter(lambda r: r.segment is not None)
                       | "RejectedShards" >> WriteShards(rejected_cfg))
    results = (acquired[SOURCES], segmented[SOURCES]) | "AllSources" >> beam.Flatten()
    written.append(results | "WriteSources" >> WriteTable(work.path("sources.parquet"), tables.SOURCES,
                                                          functools.partial(tables.source_row, run=tag)))
    return finished(written)


def clear_staging(staging_dir: str, done: Set[str]) -> None:
    """Delete staged downloads of sources that are done (kept for resuming until then)."""
    for path in fs.list_dir(staging_dir):
        name = path.rsplit("/", 1)[-1]
        if name.split(".", 1)[0] in done:
            fs.delete(path)


def print_summary(title: str, report: dict, output: Optional[str] = None) -> None:
    s = report["sources"]
    lines = [
        f"{title}: sources {s['total']} ({s['ok']} ok, {s['failed']} failed, {s['rejected']} rejected"
        + (f", {s['deferred']} deferred to the next run" if s.get("deferred") else "") + ")",
        f"  hours in {report['hours_in']:.3f}, hours kept {report['hours_kept']:.3f} "
        f"({report['kept']} samples in {report['shards']} shards)",
        f"  segments {report['segments']}, rejected segments {report['rejected_segments']}",
    ]
    if report.get("asr_hours_saved"):
        lines.append(f"  audio gates removed {report['asr_hours_saved']:.3f} h before transcription")
    if report.get("asr_padding_fraction") is not None:
        lines.append(f"  ASR input that was padding: {report['asr_padding_fraction']:.1%}")
    if report["rejects_by_reason"]:
        lines.append("  rejects by reason:")
        for reason, r in report["rejects_by_reason"].items():
            lines.append(f"    {reason:32s} {r['count']:6d}  ({r['hours']:.3f} h)")
    examples = report.get("failed_examples") or []
    if examples:
        n_bad = s["failed"] + s["rejected"]
        lines.append(f"  failed or rejected sources ({len(examples)} of {n_bad}"
                     + (f"; all in {output}/sources/*.parquet and rejected/*.parquet" if output else "") + "):")
        for e in examples:
            lines.append(f"    {e['origin'] or '?'}: {safe(e['uri'] or '')[:90]} — {e['status']}, {e['reason']}")
    if report.get("retried_next_run"):
        lines.append(f"  {report['retried_next_run']} of them failed for reasons that are tried again on the next run")
    log("\n".join(lines))


def _preflight_storage(settings: CorpusSettings, parsed_sources: List[Source]) -> None:
    """Fail fast, with the options to set, when an object store cannot be used with our credentials.

    The output and staging stores must work; for sources only missing or refused credentials stop
    the run (they would fail every object alike) — a missing bucket or object is that source's row.
    """
    for path in (settings.output + "/", settings.acquire.staging_dir + "/"):
        if not fs.is_local(path):
            problem = object_store.check_access(path)
            if problem:
                raise OptionError(problem)
    buckets = {}
    for s in parsed_sources:
        if s.uri.split("://", 1)[0] in ("s3", "gs"):
            buckets.setdefault(s.uri.split("/", 3)[2], s.uri)
    for path in list(buckets.values())[:10]:
        problem = object_store.check_access(path)
        if isinstance(problem, object_store.NoCredentials):
            raise OptionError(problem)


def _redo_plan(state: CorpusState, settings: CorpusSettings) -> Tuple[Set[str], Set[str]]:
    """(source ids to process again, source ids whose old samples may be replaced)."""
    redo = state.select(settings.redo) if settings.redo else set()
    retry = state.failed() if settings.retry_failed else set()
    return redo | retry, redo


def _replace_old_samples(layout: Layout, work: Layout, settings: CorpusSettings, replaced: Set[str],
                         first_index: int) -> List[str]:
    """Rewrite committed shards without the samples of ``replaced`` sources; returns paths to delete."""
    names = [f"{settings.shard_prefix}-{i:06d}" for i in shard_indices(layout, settings.shard_prefix)]
    affected = rewrite.shards_holding(layout.manifest_dir, names, replaced)
    if not affected:
        return []
    result = rewrite.rewrite(layout.shards_dir, layout.manifest_dir, affected,
                             lambda key, row: row["source_id"] not in replaced,
                             work.shards_dir, work.manifest_dir, settings.shard_prefix, first_index,
                             settings.samples_per_shard)
    log(f"--redo: {result.dropped} old samples of reprocessed sources leave {len(affected)} shards, "
        f"which are rewritten as {len(result.new_shards)}")
    return [p for n in affected for p in (layout.path("shards", n + ".tar"), layout.path("manifest", n + ".parquet"))]


def run(argv: Optional[List[str]] = None, make_pipeline: Optional[Callable[[], beam.Pipeline]] = None) -> dict:
    """Run one build; returns the whole corpus report. Raises ``SystemExit(2)`` on bad options."""
    try:
        settings, beam_args = parse_args(argv)
        beam_args = beam_quiet_args(beam_args, settings.verbose)
        options = PipelineOptions(beam_args)
        # driver-side file access (sources file, done set, publishing) sees the same storage options
        FileSystems.set_options(options)
        object_store.set_options(options)
        from pipelines.options import check_output
        check_output(settings.output)
        check_available(settings.asr)
        if not fs.is_local(settings.sources):
            problem = object_store.check_access(settings.sources)
            if problem:
                raise OptionError(f"--sources {settings.sources}: {problem}")
        parsed = read_sources(settings.sources)
        _preflight_storage(settings, parsed.sources)
    except (OptionError, ValueError, ModelLoadError, SourcesFileError) as e:
        log(f"error: {e}")
        raise SystemExit(2)

    layout = Layout(settings.output)
    try:
        lock = OutputLock(layout.root, "build_corpus", log=log).acquire()
    except LockedError as e:
        log(f"error: {e}")
        raise SystemExit(2)
    try:
        with engine(beam_args) as args:
            return _run_locked(settings, args, parsed, layout, lock,
                               make_pipeline or (lambda: beam.Pipeline(options=PipelineOptions(args))))
    finally:
        lock.release()


def _run_locked(settings, beam_args, parsed, layout: Layout, lock: OutputLock, make_pipeline) -> dict:
    commit.recover(layout.root, log)
    state = CorpusState.read(layout)
    try:
        check_settings(state.shaping, settings.shaping(), settings.redo, settings.output)
        again, replaced = _redo_plan(state, settings)
    except (CorpusSettingsError, ValueError) as e:
        log(f"error: {e}")
        raise SystemExit(2)
    done = state.done() - again
    for sid in again:  # an alias of a source picked again must not keep it done
        done.discard(next((r.get("alias") for r in state.rows if r["source_id"] == sid and r.get("alias")), None))

    def is_done(s: Source) -> bool:
        return s.source_id in done or (s.alias is not None and s.alias in done)

    key = run_tag([s.source_id for s in parsed.sources] + [s.source_id for s, _ in parsed.bad_lines],
                  {**settings.fingerprint(), "again": sorted(again)})
    plan = waves.load(layout, key)
    if plan is not None:
        log(f"run {key}: going on with {len(plan.pending_waves(layout))} of {len(plan.tags)} waves not yet committed")
    pending = [s for s in parsed.sources if not is_done(s)]
    bad_lines = [(s, r) for s, r in parsed.bad_lines if s.source_id not in done]
    if plan is None:
        log(f"{len(parsed.sources)} sources in {settings.sources} ({parsed.duplicates} duplicate lines "
            f"ignored, {len(parsed.bad_lines)} unusable lines); {len(parsed.sources) - len(pending)} already "
            f"done in {settings.output}; {len(pending)} to process"
            + (f"; {len(again)} picked again by --redo/--retry_failed" if again else ""))
        if not pending and not bad_lines:
            clean_leftovers(layout, settings.acquire.staging_dir, log=log)
            report = corpus_report(layout)
            write_report(layout, report)
            print_summary("nothing to do; corpus", report, settings.output)
            return report
        clean_leftovers(layout, settings.acquire.staging_dir, log=log)
        plan = _make_plan(layout, key, pending, bad_lines, done, settings, make_pipeline)
    else:
        clean_leftovers(layout, settings.acquire.staging_dir, keep_work=plan.work_names(), log=log)

    total = {"elapsed": 0.0}
    pending = plan.pending_waves(layout)
    live = start_live_progress(plan, pending)
    try:
        for i in pending:
            live.begin_wave(i)
            summary = _run_wave(layout, plan, i, settings, beam_args, lock, replaced, make_pipeline)
            live.end_wave(summary.get("hours_in", 0.0), summary.get("kept", 0), summary.get("rejected_segments", 0))
            total["elapsed"] += summary.get("elapsed_s", 0.0)
            print_summary(f"run {key}, wave {i + 1} of {len(plan.tags)} ({summary.get('elapsed_s', 0):.1f} s)",
                          summary, settings.output)
    finally:
        live.stop()
    waves.finish(layout, plan, keep_work=settings.keep_work)
    report = corpus_report(layout)
    write_report(layout, report)
    clear_staging(settings.acquire.staging_dir, CorpusState.read(layout).done())
    print_summary(f"corpus after run {key} ({total['elapsed']:.1f} s)", report, settings.output)
    return report


def start_live_progress(plan, pending: List[int]) -> "live_progress.LiveProgress":
    """A bar on a terminal, periodic lines elsewhere: hours of the pending waves' items as known."""
    stream = visible_stream()
    known_h = sum(waves.estimated_s(item) for i in pending for item in plan.items(i)) / 3600
    tty = bool(getattr(stream, "isatty", lambda: False)())
    interval = float(os.environ.get("SPEECHMILL_PROGRESS_S", "10")) if not tty else 0.5
    return live_progress.LiveProgress(hours_known=known_h, waves=len(plan.tags), stream=stream, tty=tty,
                                      interval_s=interval).start()


def _make_plan(layout: Layout, key: str, pending: List[Source], bad_lines: list, done: Set[str],
               settings: CorpusSettings, make_pipeline) -> "waves.Plan":
    """List the pending sources' items (one pipeline), then cut them into waves and save the plan."""
    work = layout.work(waves.expansion_tag(key))
    fs.delete_tree(work.root)
    fs.mkdirs(work.root)
    done_path = done_set.write_lookup(work.root, "done", sorted(done))
    log(f"run {key}: listing the items of {len(pending)} sources")
    started = time.monotonic()
    p = make_pipeline()
    build_expansion(p, pending, bad_lines, settings, work, waves.expansion_tag(key), done_path)
    run_to_end(p)
    items = [tables.item_from_row(r) for r in read_table([work.path(ITEMS_TABLE)]).to_pylist()] \
        if fs.exists(work.path(ITEMS_TABLE)) else []
    plan = waves.plan(key, items, settings.commit_every_hours, ",".join(sorted(CorpusState.read(layout).runs)))
    waves.save(layout, plan)
    log(f"run {key}: {len(items)} items in {len(plan.tags)} waves of at most {settings.commit_every_hours:g} h "
        f"({time.monotonic() - started:.1f} s); each wave is published as it completes")
    return plan


def _run_wave(layout: Layout, plan, i: int, settings: CorpusSettings, beam_args, lock: OutputLock, replaced: Set[str],
              make_pipeline) -> dict:
    """Run wave ``i`` of the plan and publish it as one commit (the first wave also carries the listing's rows)."""
    tag = plan.tags[i]
    state = CorpusState.read(layout)
    work = layout.work(tag)
    fs.delete_tree(work.root)
    fs.mkdirs(work.root)
    first_index = next_shard_index(layout, settings.shard_prefix)
    first_rejected = next_shard_index(layout, settings.shard_prefix, REJECTED_SHARDS)
    known_path = done_set.write_lookup(work.root, "known_speakers", [json.dumps(k) for k in state.known_speakers()])
    items = plan.items(i)
    log(f"run {plan.key}, wave {i + 1} of {len(plan.tags)}: {len(items)} items, writing to {work.root}, "
        f"shards from index {first_index}")
    started = time.monotonic()
    if items:
        p = make_pipeline()
        build_wave(p, items, settings, work, first_index, tag, first_rejected, known_path)
        run_to_end(p)
    if i == 0:  # the listing's rows (unlistable sources, deferred items, bad lines) go with the first wave
        waves.merge_expansion_rows(layout, plan, work, tag)
    elapsed = time.monotonic() - started
    summary = run_report(layout, tag)
    if summary["sources"]["total"] == 0 and not summary["rejected_segments"] and not replaced:
        fs.delete_tree(work.root)  # nothing new (every item was done): no empty commit
        return {**summary, "elapsed_s": round(elapsed, 1)}
    deletes = []
    if replaced:
        rows_path = work.path("sources.parquet")
        processed = ({r["source_id"] for r in read_table([rows_path]).to_pylist()}
                     if fs.exists(rows_path) else set())
        deletes = _replace_old_samples(layout, work, settings, replaced & processed,
                                       first_index + summary["shards"])
        summary["shards"] = len([x for x in fs.list_dir(work.shards_dir, suffix=".tar") if not fs.is_temporary(x)])
    summary.update(elapsed_s=round(elapsed, 1), asr_model=settings.asr.label,
                   **{"asr_padding_fraction": None, **read_usage(work.path(ASR_USAGE))},
                   settings=json.loads(json.dumps(settings.fingerprint(), default=str)),
                   shaping=json.loads(json.dumps(settings.shaping(), default=str)),
                   redo=list(settings.redo), retry_failed=settings.retry_failed, plan=plan.key, wave=i,
                   waves=len(plan.tags))
    publish(layout, tag, summary, before_apply=lock.check, deletes=deletes)
    if not settings.keep_work:
        fs.delete_tree(work.root)
    return summary


class _Interrupt:
    """Ctrl-C: remember it, then let Python raise ``KeyboardInterrupt`` as usual."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    quiet_libraries(verbose)
    interrupt = _Interrupt()
    previous = signal.signal(signal.SIGINT, interrupt)
    with FilteredStderr(passthrough=verbose) as console:
        try:
            run(argv)
        except SystemExit as e:
            return int(e.code or 0)
        except BaseException as e:  # noqa: B902 - Ctrl-C surfaces as whatever Beam was doing
            if interrupt.seen or isinstance(e, KeyboardInterrupt):
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message
                console.write_visible("[speechmill] interrupted: the waves already published are kept; run the "
                                      "same command again to go on from the next one")
                return 130
            if isinstance(e, LockLost):
                console.write_visible(f"[speechmill] error: {e}")
                return 1
            console.dump_hidden()
            console.write_visible(f"[speechmill] failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            console.write_visible("[speechmill] the waves already published are kept; fix the cause and run "
                                  "again to go on (--verbose shows every log line)")
            return 1
        finally:
            signal.signal(signal.SIGINT, previous)
    return 0


if __name__ == "__main__":
    code = main()
    # Everything the run writes is committed and the lock released by now. Leave without the
    # interpreter's teardown: after Ctrl-C Beam's worker threads may still be blocked in a download,
    # and after a multi-process run the runner's gRPC threads can abort the process while native
    # libraries are torn down ("terminate called without an active exception"), turning a finished
    # run into exit status -6.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
