"""Drive one build: check the corpus under its lock, list the items once, cut them into waves, run and
publish each wave, and report. ``pipelines.build_corpus`` parses the command line and calls ``drive``."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from acquisition.expand import is_own_item
from acquisition.sources_file import SourcesFileError, read_sources
from asr.model import ModelLoadError, check_available
from corpus import commit, done_set, guard, identity_key, integrity, rewrite
from corpus.layout import REJECTED_SHARDS, Layout, next_shard_index, read_table, run_tag, shard_indices
from corpus.summary import corpus_report, run_report, write_report
from run import live_progress, waves
from run.console import filtering, log, print_summary, visible_stream
from run.engine import cluster_of, engine, run_to_end
from run.graph import ASR_USAGE, build_expansion, build_wave
from run.lock import LockedError, OutputLock
from run.publish import clean_leftovers, publish
from run.settings import CorpusSettings, OptionError
from run.state import CorpusSettingsError, CorpusState, check_settings
from schemas import tables
from schemas.records import Source
from storage import fs, object_store
from transforms.dedup import PUBLISHED_COLUMNS
from transforms.parts import PartSpec
from transforms.progress import progress
from transforms.transcribe import read_usage


def drive(settings: CorpusSettings, beam_args: List[str],
          make_pipeline: Optional[Callable[[], beam.Pipeline]] = None, check_output=lambda output: None,
          option_of: Mapping[str, str] = {}) -> dict:
    """Run one build with validated settings; returns the whole corpus report.

    Raises ``SystemExit(2)`` after one line naming the problem when the output, the model, the
    sources file or the storage cannot be used, before any work.
    """
    try:
        options = PipelineOptions(beam_args)
        # driver-side file access (sources file, done set, publishing) sees the same storage options
        FileSystems.set_options(options)
        object_store.set_options(options)
        # the sources first: a missing file is the first thing to hear about, before any model lookup
        if not fs.is_local(settings.sources):
            problem = object_store.check_access(settings.sources)
            if problem:
                raise OptionError(f"--sources {settings.sources}: {problem}")
        # a new corpus's key is made here and saved once the lock is held: a refused run leaves nothing
        _preflight_output(settings)
        key = identity_key.read(settings.output) or identity_key.new()
        settings = dataclasses.replace(settings, acquire=dataclasses.replace(settings.acquire, id_key=key))
        parsed = read_sources(settings.sources, settings.acquire.id_key, log=log)
        check_output(settings.output)
        check_available(settings.asr)
        _preflight_sources(parsed.iter_sources())
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
        if not identity_key.read(settings.output):
            identity_key.save(settings.output, settings.acquire.id_key)
        if identity_key.read(settings.output) != settings.acquire.id_key:  # a build beside this one made the key
            settings = dataclasses.replace(settings, acquire=dataclasses.replace(
                settings.acquire, id_key=identity_key.read(settings.output)))
            parsed = read_sources(settings.sources, settings.acquire.id_key)
        with engine(beam_args) as args:
            return _run_locked(settings, args, parsed, layout, lock,
                               make_pipeline or (lambda: beam.Pipeline(options=PipelineOptions(args))), option_of)
    except guard.CorpusDamaged as e:  # the output is someone's damaged or tampered corpus: nothing is changed
        log(f"error: {e}")
        raise SystemExit(2)
    finally:
        lock.release()


def clear_staging(staging_dir: str, done: Set[str]) -> None:
    """Delete staged downloads of sources that are done (kept for resuming until then)."""
    for path in fs.list_dir(staging_dir):
        name = path.rsplit("/", 1)[-1]
        if name.split(".", 1)[0] in done:
            fs.delete(path)


def _preflight_output(settings: CorpusSettings) -> None:
    """Fail fast, with the options to set, when the output or staging store cannot be used with our
    credentials (before anything is read from the output, such as its identity key)."""
    for path in (settings.output + "/", settings.acquire.staging_dir + "/"):
        if not fs.is_local(path):
            problem = object_store.check_access(path)
            if problem:
                raise OptionError(problem)


def _preflight_sources(parsed_sources: Iterable[Source]) -> None:
    """For sources in object stores only missing or refused credentials stop the run (they would fail
    every object alike); a missing bucket or object is that source's row."""
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
    published = integrity.check_open(layout)
    names = [n for n in (f"{settings.shard_prefix}-{i:06d}" for i in shard_indices(layout, settings.shard_prefix))
             if f"shards/{n}.tar" in published.files]
    affected = rewrite.shards_holding(layout.manifest_dir, names, replaced)
    if not affected:
        return []
    result = rewrite.rewrite(layout.shards_dir, layout.manifest_dir, affected,
                             lambda key, row: row["source_id"] not in replaced,
                             work.shards_dir, work.manifest_dir, settings.shard_prefix, first_index,
                             settings.samples_per_shard, expected=published.files)
    log(f"--redo: {result.dropped} old samples of reprocessed sources leave {len(affected)} shards, "
        f"which are rewritten as {len(result.new_shards)}")
    return [p for n in affected for p in (layout.path("shards", n + ".tar"), layout.path("manifest", n + ".parquet"))]


def _run_locked(settings, beam_args, parsed, layout: Layout, lock: OutputLock, make_pipeline,
                option_of: Mapping[str, str]) -> dict:
    commit.recover(layout.root, log)
    integrity.check_open(layout)
    progress().reset()
    state = CorpusState.read(layout)
    try:
        check_settings(state.shaping, settings.shaping(), settings.redo, settings.output, option_of,
                       {r for rs in state.rejected_reasons.values() for r in rs})
        again, replaced = _redo_plan(state, settings)
    except (CorpusSettingsError, ValueError) as e:
        log(f"error: {e}")
        raise SystemExit(2)
    done = state.done() - again
    for sid in again:  # an alias of a source picked again must not keep it done
        done.discard(next((r.get("alias") for r in state.rows if r["source_id"] == sid and r.get("alias")), None))

    def is_done(s: Source) -> bool:
        return s.source_id in done or (s.alias is not None and s.alias in done)

    key = run_tag([s.source_id for s in parsed.iter_sources()] + [s.source_id for s, _ in parsed.bad_lines],
                  {**settings.fingerprint(), "again": sorted(again)})
    plan = waves.load(layout, key)
    if plan is not None:
        log(f"run {key}: going on with {len(plan.pending_waves(layout))} of {len(plan.tags)} waves not yet committed")
    n_pending = sum(1 for s in parsed.iter_sources() if not is_done(s))

    def pending() -> Iterator[Source]:  # read again from the parsed file, never held as a list
        return (s for s in parsed.iter_sources() if not is_done(s))
    bad_lines = [(s, r) for s, r in parsed.bad_lines if s.source_id not in done]
    if plan is None:
        log(f"{parsed.count} entries in {settings.sources} ({parsed.duplicates} duplicate lines "
            f"ignored, {len(parsed.bad_lines)} unusable lines); {parsed.count - n_pending} already "
            f"done in {settings.output}; {n_pending} to process (a folder, feed or channel is one entry "
            f"until its items are listed)"
            + (f"; {len(again)} picked again by --redo/--retry_failed" if again else ""))
        if not n_pending and not bad_lines:
            clean_leftovers(layout, settings.acquire.staging_dir, log=log)
            report = corpus_report(layout)
            write_report(layout, report)
            print_summary("nothing to do; corpus", report, settings.output)
            return report
        clean_leftovers(layout, settings.acquire.staging_dir, log=log)
        plan = _make_plan(layout, key, pending(), n_pending, bad_lines, done, settings, make_pipeline,
                          state.failed())
    else:
        clean_leftovers(layout, settings.acquire.staging_dir, keep_work=plan.work_names(), log=log)

    total = {"elapsed": 0.0}
    pending = plan.pending_waves(layout)
    live = start_live_progress(plan, pending, beam_args)
    try:
        for i in pending:
            live.begin_wave(i)
            summary = _run_wave(layout, plan, i, settings, beam_args, lock, replaced, make_pipeline)
            live.end_wave(_hours_done(plan, i, summary), summary.get("kept", 0), summary.get("rejected_segments", 0))
            total["elapsed"] += summary.get("elapsed_s", 0.0)
            if len(plan.tags) > 1 and plan.publishes(i):  # one wave: the corpus summary below says it all
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


def _hours_done(plan, i: int, summary: dict) -> float:
    """Hours wave ``i`` adds to the progress: a long source's part counts its share of the source
    when it is saved, and the last part what the earlier ones did not count."""
    part = plan.part(i)
    if part is None:
        return summary.get("hours_in", 0.0)
    share = plan.seconds[i] / 3600
    return share if not plan.publishes(i) else max(0.0, summary.get("hours_in", 0.0) - (part[1] - 1) * share)


def start_live_progress(plan, pending: List[int], beam_args: List[str] = ()) -> "live_progress.LiveProgress":
    """A bar on a terminal, periodic lines elsewhere: hours of the pending waves' items as known; on
    the Dask runner with the hours its workers decode."""
    cluster = cluster_of(list(beam_args))
    remote = live_progress.WorkerCounts.connect(cluster) if cluster else None
    stream = visible_stream()
    known_h = sum(plan.seconds[i] for i in pending) / 3600
    tty = filtering() and bool(getattr(stream, "isatty", lambda: False)())
    interval = float(os.environ.get("SPEECHMILL_PROGRESS_S", "10")) if not tty else 0.5
    return live_progress.LiveProgress(hours_known=known_h, waves=len(plan.tags), stream=stream, tty=tty,
                                      interval_s=interval, remote=remote).start()


def _make_plan(layout: Layout, key: str, pending: Iterable[Source], n_pending: int, bad_lines: list, done: Set[str],
               settings: CorpusSettings, make_pipeline, failed: Set[str] = frozenset()) -> "waves.Plan":
    """List the pending sources' items (one pipeline), then cut them into waves and save the plan.

    The sources go to the listing as a file of JSON lines and the plan is written a wave at a time,
    so the driver's memory does not grow with the number of sources or items."""
    work = layout.work(waves.expansion_tag(key))
    guard.delete_tree(layout.root, work.root)
    fs.mkdirs(work.root)
    done_path = done_set.write_lookup(work.root, "done", sorted(done))
    failed_path = done_set.write_lookup(work.root, "failed", sorted(failed))
    log(f"run {key}: listing the items of {n_pending} sources")
    started = time.monotonic()
    # the job graph carries a path, not a million sources; sources that are their own one item (local
    # files, kind direct) skip the pipeline and go straight to the listing's items
    own = settings.acquire.max_hours_total is None  # a budget is applied across all items in the pipeline
    source_files, lines = [], []

    def flush_lines():
        if lines:
            source_files.append(work.path(f"pending-{len(source_files):06d}.jsonl"))
            fs.atomic_write_bytes(source_files[-1], "".join(lines).encode())
            lines.clear()
    with items_writer(work.path(waves.ITEMS_PREFIX + "-driver.parquet")) as items:
        for s in pending:
            if own and is_own_item(s):
                items.add(s)
            else:
                lines.append(s.to_json() + "\n")
                if len(lines) >= waves.CHUNK:
                    flush_lines()
    flush_lines()
    p = make_pipeline()
    build_expansion(p, source_files, bad_lines, settings, work, waves.expansion_tag(key), done_path, failed_path)
    run_to_end(p)
    plan = waves.make_plan(layout, key, waves.item_files(work.root), settings.commit_every_hours,
                           ",".join(sorted(CorpusState.read(layout).runs)), log=log)
    log(f"run {key}: {sum(plan.sizes)} items in {len(plan.tags)} waves of at most {settings.commit_every_hours:g} h "
        f"({time.monotonic() - started:.1f} s); each wave is published as it completes")
    return plan


def _dedup_lookup(layout: Layout, work: Layout, replaced: Set[str]) -> str:
    """The published clips' keys, speakers, transcripts and fingerprints as a lookup file: the index
    this wave's clips are judged against. Read from the committed manifests, so whatever ``--redo``
    or ``compact`` rewrote is what it holds; the samples of sources being reprocessed are left out."""
    parts = [p for p in fs.list_dir(layout.manifest_dir, suffix=".parquet") if not fs.is_temporary(p)]
    table = read_table(parts, ["source_id"] + PUBLISHED_COLUMNS)
    if table.num_rows and replaced:
        table = table.filter(pc.invert(pc.is_in(table.column("source_id"), pa.array(sorted(replaced)))))
    table = table.select([c for c in PUBLISHED_COLUMNS if c in table.column_names])
    if table.num_rows:
        table = table.sort_by("key")
    return done_set.write_table_lookup(work.root, "dedup_index", table)
@contextlib.contextmanager
def fs_writer(path: str):
    """A binary file for ``path`` (any storage): written on local disk, then put in place (uploaded
    as a stream, or as one put when empty) once the block ends without error."""
    with tempfile.TemporaryFile() as f:
        yield f
        if not f.tell():
            fs.atomic_write_bytes(path, b"")
            return
        f.seek(0)
        fs.atomic_write(path, lambda out: shutil.copyfileobj(f, out, 1 << 20))


class _ItemsWriter:
    """Items as rows of the listing's table, written ``waves.CHUNK`` at a time."""

    def __init__(self, f):
        self.writer, self.rows = pq.ParquetWriter(f, tables.ITEMS), []

    def add(self, s: Source) -> None:
        self.rows.append(tables.item_row(s))
        if len(self.rows) >= waves.CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, tables.ITEMS))
            self.rows = []


@contextlib.contextmanager
def items_writer(path: str):
    with fs_writer(path) as f:
        w = _ItemsWriter(f)
        yield w
        w.flush()
        w.writer.close()


def _save_part(plan, i: int, part: PartSpec, items: List[Source], settings: CorpusSettings, work: Layout,
               make_pipeline) -> dict:
    """Wave ``i`` is a part of a long source before its last: its pipeline saves the part's
    transcripts as a checkpoint (``corpus.parts``), which is the part's commit; nothing is published."""
    log(f"run {plan.key}, wave {i + 1} of {len(plan.tags)}: part {part.index + 1} of {part.count} of "
        f"{items[0].source_id}, saved to {part.folder}")
    started = time.monotonic()
    p = make_pipeline()
    build_wave(p, items, settings, work, 0, plan.tags[i], part=part)
    run_to_end(p)
    fs.delete_tree(work.root)
    return {"elapsed_s": round(time.monotonic() - started, 1), "part": [part.index, part.count]}


def _run_wave(layout: Layout, plan, i: int, settings: CorpusSettings, beam_args, lock: OutputLock, replaced: Set[str],
              make_pipeline) -> dict:
    """Run wave ``i`` of the plan and publish it as one commit (the first published wave also carries the
    listing's rows); a part of a long source before its last is saved instead (``_save_part``)."""
    tag = plan.tags[i]
    work = layout.work(tag)
    guard.delete_tree(layout.root, work.root)
    fs.mkdirs(work.root)
    items = plan.items(i)
    part = plan.part(i)
    if part is not None:
        part = PartSpec(*part)
    if not plan.publishes(i):
        return _save_part(plan, i, part, items, settings, work, make_pipeline)
    state = CorpusState.read(layout)
    first_index = next_shard_index(layout, settings.shard_prefix)
    first_rejected = next_shard_index(layout, settings.shard_prefix, REJECTED_SHARDS)
    known_path = done_set.write_lookup(work.root, "known_speakers", [json.dumps(k) for k in state.known_speakers()])
    dedup_path = _dedup_lookup(layout, work, replaced) if settings.dedup.active else None
    log(f"run {plan.key}, wave {i + 1} of {len(plan.tags)}: {len(items)} items"
        + (f" (part {part.index + 1} of {part.count}: the last)" if part else "")
        + f", writing to {work.root}, shards from index {first_index}")
    started = time.monotonic()
    if items:
        p = make_pipeline()
        build_wave(p, items, settings, work, first_index, tag, first_rejected, known_path, dedup_path, part)
        run_to_end(p)
    if i == plan.first_published():  # the listing's rows (unlistable sources, deferred items, bad lines) go
        waves.merge_expansion_rows(layout, plan, work, tag)  # with the first published wave
    elapsed = time.monotonic() - started
    summary = run_report(layout, tag)
    rows_path = work.path("sources.parquet")
    if (summary["sources"]["total"] == 0 and not summary["rejected_segments"] and not replaced
            and not (fs.exists(rows_path) and read_table([rows_path]).num_rows)):  # a listed row is news too
        fs.delete_tree(work.root)  # nothing new (every item was done): no empty commit
        return {**summary, "elapsed_s": round(elapsed, 1)}
    deletes = []
    if replaced:
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
