"""What the report shows, gathered from the committed tables only (what a reader of the corpus sees).

``read_corpus`` reads each table once, with only the columns the report needs (never the speaker
embeddings), and every other function here is a pure function of what it read: the funnel, the
rejects by reason, the per-source table, the runs' throughput, and the clips the audit view plays,
drawn with a fixed seed so the same corpus always gives the same page.
"""
from __future__ import annotations

import io
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus.guard import CorpusDamaged
from corpus.integrity import check_part
from corpus.layout import REJECTED_MANIFEST, Layout, committed_runs, committed_table, latest_rows, run_order
from schemas import tables
from schemas.outcomes import AUDIO_GATE_REASONS, Status
from schemas.records import SCORE_FIELDS
from storage import fs

MAX_SHOWN = 300  # characters of a title, reason or detail on the page
MAX_TEXT = 2000  # characters of a transcript on the page
MAX_LINK = 2000

MANIFEST_COLUMNS = ["key", "shard", "source_id", "speaker", "title", "original_url", "source_uri", "start_s",
                    "end_s", "duration_s", "text", "confidence", "chars_per_s", "sentence_end", *SCORE_FIELDS]
REJECTED_COLUMNS = ["source_id", "source_uri", "key", "stage", "reason", "detail", "duration_s", "run", "text",
                    *SCORE_FIELDS]

# clip-level rejections in the order a clip meets them (transforms.segment, .transcribe, .quality)
BEFORE_ASR = (("segment", "too_short"), ("segment", "too_quiet"), *(("quality", r) for r in AUDIO_GATE_REASONS),
              ("segment", "multi_speaker"))
AT_ASR = (("transcribe", "asr_error"),)
AFTER_ASR = tuple(("quality", r) for r in ("empty_transcript", "too_short", "too_long", "low_confidence",
                                           "speaking_rate_low", "speaking_rate_high", "speaking_rate_outlier"))


@dataclass(frozen=True)
class ReportConfig:
    """How much the page samples and shows; the seed makes the audit sample reproducible."""

    seed: int = 13
    kept_samples: int = 12
    rejected_per_reason: int = 3
    max_sources: int = 300  # rows of the per-source table (the largest sources first)
    max_runs: int = 60  # rows of the runs table (the newest first)
    low_word_confidence: float = 0.5  # words under this are marked in transcripts
    bins: int = 40

    def __post_init__(self):
        for name in ("kept_samples", "rejected_per_reason", "max_sources", "max_runs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if not 0.0 <= self.low_word_confidence <= 1.0:
            raise ValueError(f"low_word_confidence must be within 0..1, got {self.low_word_confidence}")
        if not isinstance(self.bins, int) or self.bins < 2:
            raise ValueError(f"bins must be a whole number >= 2, got {self.bins!r}")


@dataclass
class Corpus:
    """The committed tables the report is made of."""

    root: str
    runs: Dict[str, dict]
    sources: List[dict]  # each source's latest committed row
    rejected: List[dict]  # rejected rows of those latest runs
    manifest: pa.Table  # kept clips, MANIFEST_COLUMNS
    rejected_audio: Dict[str, str] = field(default_factory=dict)  # rejected clip key → its rejected shard
    n_shards: int = 0


def read_columns(paths: Sequence[str], schema: pa.Schema, columns: Sequence[str], shard_part: bool = False) -> pa.Table:
    """``columns`` of the Parquet files at ``paths``, typed as in ``schema``; a column a file lacks is null.

    ``shard_part``: each file is a shard's manifest part, whose keys must be valid sample keys and
    whose rows must all name that shard: they become paths (``report_audio/``, the shard to open).
    """
    target = pa.schema([schema.field(c) for c in columns])
    parts = []
    for p in paths:
        try:
            f = pq.ParquetFile(io.BytesIO(fs.read_bytes(p)))
            present = [c for c in columns if c in f.schema_arrow.names]
            t = f.read(columns=present)
        except (pa.ArrowException, OSError) as e:
            raise CorpusDamaged(f"{p}: not a readable Parquet file ({str(e).splitlines()[0][:200]})") from e
        if shard_part:
            check_part(p, t)
        for c in columns:
            if c not in present:
                t = t.append_column(c, pa.nulls(t.num_rows, schema.field(c).type))
        parts.append(t.select(list(columns)).cast(target))
    return pa.concat_tables(parts) if parts else target.empty_table()


def _committed_files(directory: str, suffix: str) -> List[str]:
    return [p for p in fs.list_dir(directory, suffix=suffix) if not fs.is_temporary(p)]


def read_corpus(layout: Layout) -> Corpus:
    """Everything committed in ``layout``, each source counted by its latest run (as ``corpus_report``)."""
    runs = committed_runs(layout)
    order = run_order(layout, runs)
    sources = latest_rows(committed_table(layout, "sources", order), order)
    current = {(r["source_id"], r.get("run")) for r in sources}
    rejected_paths = [p for p in fs.list_dir(layout.path("rejected"), prefix="run-", suffix=".parquet")
                      if not fs.is_temporary(p) and p.rsplit("/", 1)[-1][4:-8] in order]
    rejected = [r for r in read_columns(rejected_paths, tables.REJECTED, REJECTED_COLUMNS).to_pylist()
                if (r["source_id"], r.get("run")) in current]
    manifest = read_columns(_committed_files(layout.manifest_dir, ".parquet"), tables.MANIFEST, MANIFEST_COLUMNS,
                            shard_part=True)
    kept_audio = read_columns(_committed_files(layout.path(REJECTED_MANIFEST), ".parquet"),
                              tables.REJECTED_MANIFEST, ["key", "shard"], shard_part=True)
    rejected_audio = dict(zip(kept_audio.column("key").to_pylist(), kept_audio.column("shard").to_pylist()))
    n_shards = len(_committed_files(layout.shards_dir, ".tar"))
    return Corpus(layout.root, runs, sources, rejected, manifest, rejected_audio, n_shards)


def column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64) if table.num_rows \
        else np.zeros(0, dtype=np.float64)


def hours(seconds) -> float:
    return float(np.nansum(np.asarray(seconds, dtype=np.float64))) / 3600.0


# ---- the funnel -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelStep:
    """What is left after one step, and what that step removed."""

    label: str
    sources: Optional[int]
    clips: Optional[int]
    hours: Optional[float]
    removed: str = ""  # what this step took out, in words
    removed_hours: Optional[float] = 0.0


def reason_order(reasons: Sequence[Tuple[str, str]]) -> Tuple[List, List, List]:
    """Clip-level (stage, reason) groups split into before, at and after transcription, in pipeline order."""
    known = {g: i for i, g in enumerate(BEFORE_ASR + AT_ASR + AFTER_ASR)}
    before, at, after = [], [], []
    for g in sorted(set(reasons), key=lambda g: (known.get(g, len(known)), g)):
        if g in BEFORE_ASR or (g not in known and g[0] == "segment"):
            before.append(g)
        elif g in AT_ASR or (g not in known and g[0] == "transcribe"):
            at.append(g)
        else:
            after.append(g)
    return before, at, after


def _sources(n: int) -> str:
    return f"{n} source" if n == 1 else f"{n} sources"


def _count_phrase(counter: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def funnel(sources: List[dict], rejected: List[dict], kept_clips: int, kept_hours: float) -> List[FunnelStep]:
    """Sources listed → decoded → with speech → cut into clips → past each gate → transcribed → kept."""
    failed = defaultdict(int)
    for r in sources:
        if r["status"] in (Status.FAILED, Status.DEFERRED):
            failed[f"{r['status']}: {r.get('reason') or '?'}"] += 1
    decoded = [r for r in sources if r["status"] not in (Status.FAILED, Status.DEFERRED)]
    with_speech = [r for r in decoded if r["status"] == Status.OK]
    no_speech = defaultdict(int)
    for r in decoded:
        if r["status"] != Status.OK:
            no_speech[r.get("reason") or "?"] += 1
    decoded_h = hours([r["duration_s"] or 0.0 for r in decoded])
    speech_h = hours([r["duration_s"] or 0.0 for r in with_speech])
    clip_rows = [r for r in rejected if r["key"] is not None]
    groups: Dict[Tuple[str, str], List[float]] = defaultdict(list)
    for r in clip_rows:
        groups[(r["stage"], r["reason"])].append(r["duration_s"] or 0.0)
    clips = kept_clips + len(clip_rows)
    left_h = kept_hours + hours([d for ds in groups.values() for d in ds])
    steps = [
        FunnelStep("sources listed", len(sources), None, None),
        FunnelStep("decoded", len(decoded), None, decoded_h,
                   f"{_sources(sum(failed.values()))} not read ({_count_phrase(failed)})" if failed else "",
                   None),  # how long an unread source is, nobody knows
        FunnelStep("with speech", len(with_speech), None, speech_h,
                   f"{_sources(sum(no_speech.values()))} rejected whole ({_count_phrase(no_speech)})"
                   if no_speech else "", decoded_h - speech_h),
        FunnelStep("cut into clips", len(with_speech), clips, left_h,
                   "pauses, silence and speech outside clips", max(0.0, speech_h - left_h)),
    ]
    before, at, after = reason_order(list(groups))

    def gate(g):
        nonlocal clips, left_h
        n, h = len(groups[g]), hours(groups[g])
        clips, left_h = clips - n, left_h - h
        return FunnelStep(f"past {g[1]}", None, clips, left_h, f"{n} clip{'' if n == 1 else 's'} ({g[0]}/{g[1]})", h)

    steps += [gate(g) for g in before + at]
    steps.append(FunnelStep("transcribed", None, clips, left_h))
    steps += [gate(g) for g in after]
    steps.append(FunnelStep("kept", None, kept_clips, kept_hours))
    return steps


# ---- rejects, sources, runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectGroup:
    stage: str
    reason: str
    level: str  # "source" or "clip"
    count: int
    hours: float
    example: str  # one row's detail


def reject_groups(rejected: List[dict]) -> List[RejectGroup]:
    """Rejected rows by stage and reason (sources and clips apart), the largest first."""
    by: Dict[Tuple[str, str, str], List[dict]] = defaultdict(list)
    for r in rejected:
        by[(r["stage"], r["reason"], "clip" if r["key"] is not None else "source")].append(r)
    out = []
    for (stage, reason, level), rows in by.items():
        first = min(rows, key=lambda r: (r["key"] or "", r["source_id"]))
        out.append(RejectGroup(cap(stage), cap(reason), level, len(rows), hours([r["duration_s"] or 0.0 for r in rows]),
                               cap(first.get("detail"))))
    return sorted(out, key=lambda g: (-g.count, g.stage, g.reason, g.level))


@dataclass(frozen=True)
class SourceLine:
    source_id: str
    title: str
    link: Optional[str]
    status: str
    reason: str
    hours_in: float
    hours_kept: float
    clips: int
    speakers: int
    rejected_clips: int


def source_lines(sources: List[dict], manifest: pa.Table, rejected: List[dict]) -> List[SourceLine]:
    """One line per source, the most audio first."""
    kept: Dict[str, Tuple[float, int, int]] = {}
    if manifest.num_rows:
        g = manifest.group_by("source_id").aggregate(
            [("duration_s", "sum"), ("key", "count"), ("speaker", "count_distinct")])
        for sid, d, n, s in zip(*(g.column(c).to_pylist() for c in
                                   ("source_id", "duration_s_sum", "key_count", "speaker_count_distinct"))):
            kept[sid] = (d or 0.0, n, s)
    rejects = defaultdict(int)
    for r in rejected:
        if r["key"] is not None:
            rejects[r["source_id"]] += 1
    lines = []
    for r in sources:
        d, n, s = kept.get(r["source_id"], (0.0, 0, 0))
        lines.append(SourceLine(r["source_id"], cap(r.get("title") or r.get("uri") or r["source_id"]),
                                safe_link(r.get("original_url") or r.get("uri")), r["status"], cap(r.get("reason")),
                                (r["duration_s"] or 0.0) / 3600, d / 3600, n, s, rejects[r["source_id"]]))
    return sorted(lines, key=lambda x: (-x.hours_in, -x.hours_kept, x.source_id))


@dataclass(frozen=True)
class RunLine:
    run: str
    published_at: str
    wave: str
    hours_in: float
    elapsed_s: float
    realtime: Optional[float]  # hours of audio per hour of wall time
    asr_padding: Optional[float]
    kept: int
    asr_model: str


def run_lines(runs: Dict[str, dict]) -> List[RunLine]:
    """The build runs (each wave is one) with their throughput and ASR padding, newest first."""
    out = []
    for tag, r in runs.items():
        if "elapsed_s" not in r:
            continue  # a compaction, not a build
        elapsed = float(r.get("elapsed_s") or 0.0)
        h = float(r.get("hours_in") or 0.0)
        wave = f"{r['wave'] + 1} of {r['waves']}" if r.get("waves") else ""
        realtime = h * 3600 / elapsed if elapsed > 0 else None
        out.append(RunLine(tag, r.get("published_at", ""), wave, h, elapsed, realtime, r.get("asr_padding_fraction"),
                           int(r.get("kept") or 0), str(r.get("asr_model") or "")))
    return sorted(out, key=lambda x: (x.published_at, x.run), reverse=True)


def sentence_end_share(manifest: pa.Table) -> Optional[float]:
    """Share of kept clips whose transcript ends a sentence, over the clips that record it."""
    if not manifest.num_rows:
        return None
    ends = [e for e in manifest.column("sentence_end").to_pylist() if e is not None]
    return sum(ends) / len(ends) if ends else None


def speakers_per_source(manifest: pa.Table) -> np.ndarray:
    if not manifest.num_rows:
        return np.zeros(0, dtype=np.int64)
    g = manifest.group_by("source_id").aggregate([("speaker", "count_distinct")])
    return g.column("speaker_count_distinct").to_numpy()


def clips_per_speaker(manifest: pa.Table) -> np.ndarray:
    if not manifest.num_rows:
        return np.zeros(0, dtype=np.int64)
    return manifest.group_by("speaker").aggregate([("key", "count")]).column("key_count").to_numpy()


def safe_link(url: Optional[str]) -> Optional[str]:
    """``url`` when it is one a page may link to (http or https), else None: titles and links come from
    the internet (or a feed), and neither a ``javascript:`` nor a ``file:`` link may reach the page;
    one longer than ``MAX_LINK`` is left off too."""
    if not url or len(url) > MAX_LINK:
        return None
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    return url if scheme in ("http", "https") else None


def cap(text, limit: int = None) -> str:
    """A string the page shows, at most ``limit`` characters (an ellipsis marks the cut): titles and
    reasons come from feeds, and a 1 MB title must not make a 3 MB page."""
    text = "" if text is None else str(text)
    limit = MAX_SHOWN if limit is None else limit
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---- the audit sample -------------------------------------------------------------------------------------


def sample_indices(n: int, k: int, seed: int, salt: str = "") -> List[int]:
    """``k`` of ``range(n)`` chosen by ``seed`` (and ``salt``, so each reason draws on its own), ascending."""
    if n <= 0 or k <= 0:
        return []
    rng = np.random.default_rng([seed, zlib.crc32(salt.encode())])
    return sorted(int(i) for i in rng.choice(n, size=min(k, n), replace=False))


def kept_sample(manifest: pa.Table, cfg: ReportConfig) -> List[dict]:
    """The kept clips the audit view plays: manifest rows, by key."""
    if not manifest.num_rows:
        return []
    order = pc.sort_indices(manifest, sort_keys=[("key", "ascending")])
    picked = order.take(pa.array(sample_indices(manifest.num_rows, cfg.kept_samples, cfg.seed, "kept")))
    return manifest.take(picked).to_pylist()


def rejected_sample(rejected: List[dict], cfg: ReportConfig) -> Dict[Tuple[str, str], List[dict]]:
    """Per clip-level (stage, reason): the rejected clips the audit view shows, by key."""
    by: Dict[Tuple[str, str], List[dict]] = defaultdict(list)
    for r in rejected:
        if r["key"] is not None:
            by[(r["stage"], r["reason"])].append(r)
    out = {}
    for g in sorted(by):
        rows = sorted(by[g], key=lambda r: r["key"])
        out[g] = [rows[i] for i in sample_indices(len(rows), cfg.rejected_per_reason, cfg.seed, "/".join(g))]
    return out
