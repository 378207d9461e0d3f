"""Commit as the run goes: a run's items are cut into waves, and each wave is published on its own.

A run first lists every pending source's items (one small pipeline: feeds, playlists and folders
expanded, done items left out, limits applied), then cuts the items, in sources-file order, into
waves of at most ``--commit_every_hours`` of audio (stated durations; a local file's header, or
its size at 16 kB/s; a feed enclosure's stated size at 16 kB/s; ``UNKNOWN_S`` when nothing is
known, with at least ``WAVE_MIN_ITEMS`` items in a wave of such guesses) and runs and publishes them one after another. A
crash or Ctrl-C loses at most the wave in flight. A source of known length longer than a wave is
planned as several parts, a wave each (``part_count``; ``transforms.parts`` says how they stay
byte-identical to the source done in one piece), so a crash loses at most the part in flight.

The plan — the items and their waves — is saved in the work area (``_work/plan-{key}/``; it holds
source URLs as given, credentials included, so it stays out of the published folders and is
deleted when the run completes). The plan's key comes from the sources file's entries and the
settings, not from what is done, so the rerun of an interrupted run finds its plan and carries on
with the first wave not yet committed: the finished corpus is the same, byte for byte, as one
built without the interruption.
"""
from __future__ import annotations

import hashlib
import heapq
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile

from corpus.layout import Layout, committed_runs, read_table
from corpus.parts import PartStore
from corpus.shards import table_bytes
from schemas import tables
from schemas.keys import stable_hash
from schemas.records import Source
from storage import fs

ITEMS_PREFIX = "items"  # the listing's items: items-part-NNNNN.parquet (and items-driver.parquet) in the plan's folder
ITEM_PARTS = 16  # files the listing's items are written to, by a hash of their id
UNKNOWN_S = 900.0  # a media item whose length nothing states counts as a quarter of an hour
BYTES_PER_S = 16000  # ≈ 128 kbit/s: compressed speech (podcast MP3/AAC) whose length only its size tells
HEADER_FORMATS = frozenset(".wav .flac .ogg .oga .opus .aif .aiff .aifc .au .snd .caf .w64 .rf64".split())
WAVE_MIN_ITEMS = 200  # a wave whose hours are partly guessed closes only once it holds this many items
PLAN_FILE = "plan.json"
PART_MIN_S = 60.0  # a long source's parts are at least this long: a shorter one saves less than its wave costs


def expansion_tag(key: str) -> str:
    return f"plan-{key}"


@dataclass
class Plan:
    """Wave tags and, per wave, its item count and estimated seconds; each wave's items are a file of
    JSON lines in the plan's folder (written as the plan is cut, read one wave at a time)."""
    key: str
    tags: List[str]  # one run tag per wave
    sizes: List[int]  # items per wave
    seconds: List[float]  # estimated audio per wave
    folder: str = ""
    parts: List[Optional[List]] = field(default_factory=list)  # per wave: [k, n, source_id] for part k of n

    def part(self, i: int) -> Optional[Tuple[int, int, str]]:
        """(k, n, checkpoint folder) when wave ``i`` is part k of n of a long source (``transforms.parts``)."""
        got = self.parts[i] if i < len(self.parts) else None
        return None if got is None else (got[0], got[1], parts_folder(self.folder, got[2]))

    def publishes(self, i: int) -> bool:
        """Whether wave ``i`` is published (a part before a source's last is a checkpoint, never published)."""
        got = self.part(i)
        return got is None or got[0] == got[1] - 1

    def first_published(self) -> int:
        return next(i for i in range(len(self.tags)) if self.publishes(i))

    def items(self, i: int) -> List[Source]:
        path = fs.join(self.folder, _wave_file(i))
        text = fs.read_bytes(path).decode() if self.sizes[i] else ""
        return [Source.from_json(x) for x in text.split("\n") if x]

    def pending_waves(self, layout: Layout) -> List[int]:
        done = committed_runs(layout)
        return [i for i, t in enumerate(self.tags) if t not in done and not self._part_saved(i)]

    def _part_saved(self, i: int) -> bool:
        got = self.part(i)
        return got is not None and not self.publishes(i) and PartStore(got[2]).has_asr(got[0])

    def work_names(self) -> List[str]:
        return [expansion_tag(self.key)] + list(self.tags)


def _wave_file(i: int) -> str:
    return f"wave-{i:06d}.jsonl"


def parts_folder(plan_folder: str, source_id: str) -> str:
    """Where a long source's parts keep their checkpoints (``corpus.parts``): in the plan, until it is done."""
    return fs.join(plan_folder, "parts", source_id)


def part_count(item: Source, hours: float) -> int:
    """How many parts a source is worked in: one per ``hours`` of its known length (at least
    ``PART_MIN_S`` each); 1 when its length is a guess or within one wave."""
    known = known_s(item)
    if known is None:
        return 1
    return max(1, min(math.ceil(known / (hours * 3600)), int(known // PART_MIN_S)))


_MP3_KBPS = {1: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
             2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]}
_MP3_RATES = [44100, 48000, 32000]


def mp3_duration_s(path: str) -> Optional[float]:
    """An MP3's length from its first frame header (one 64 KiB read): the frame count of a Xing/Info
    header (VBR), else the file's size at the frame's bitrate (CBR)."""
    with open(path, "rb") as f:
        head = f.read(65536)
        size = os.fstat(f.fileno()).st_size
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        start = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
    for i in range(start, len(head) - 4):
        if head[i] != 0xFF or head[i + 1] & 0xE6 != 0xE2:  # frame sync, Layer III
            continue
        version = (head[i + 1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        kbps = _MP3_KBPS[1 if version == 3 else 2][head[i + 2] >> 4] if head[i + 2] >> 4 < 15 else 0
        rate_i = (head[i + 2] >> 2) & 3
        if version == 1 or not kbps or rate_i == 3:
            continue
        rate = _MP3_RATES[rate_i] // {3: 1, 2: 2, 0: 4}[version]
        tag = max(head.find(b"Xing", i, i + 200), head.find(b"Info", i, i + 200))
        if tag > 0 and head[tag + 7] & 1:
            frames = int.from_bytes(head[tag + 8:tag + 12], "big")
            return frames * (1152 if version == 3 else 576) / rate
        return (size - i) * 8 / (kbps * 1000)
    return None


def local_duration_s(path: str) -> Optional[float]:
    """A local file's length from its header (WAV, FLAC, Ogg, AIFF …: frames and rate; MP3: the
    first frame), one small read, or None for formats whose header does not state it."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mp3":
        try:
            return mp3_duration_s(path)
        except OSError:
            return None
    if ext not in HEADER_FORMATS:
        return None
    try:
        info = soundfile.info(path)
    except (RuntimeError, OSError, ValueError):  # soundfile.LibsndfileError is a RuntimeError
        return None
    return info.frames / info.samplerate if info.samplerate > 0 and info.frames > 0 else None


def known_s(item: Source) -> Optional[float]:
    """The item's length from what is cheap and true: a stated duration, a local file's header, or
    a size (local file, feed enclosure) at ``BYTES_PER_S``; None when nothing tells."""
    if item.declared_duration_s:
        return float(item.declared_duration_s)
    if item.uri.startswith("file://"):
        path = fs.local_path(item.uri)
        got = local_duration_s(path)
        if got is not None:
            return got
        try:
            return os.path.getsize(path) / BYTES_PER_S
        except OSError:
            return None
    if item.size_bytes:
        return item.size_bytes / BYTES_PER_S
    return None


def estimated_s(item: Source) -> float:
    got = known_s(item)
    return UNKNOWN_S if got is None else got


def waves_of(items: Iterable[Source], hours: float, min_items: int = WAVE_MIN_ITEMS) -> Iterator[List[Source]]:
    """Consecutive waves of items whose estimated audio fits ``hours`` (an item longer than that is a wave).

    An item nothing tells the length of counts as ``UNKNOWN_S``, but a wave holding such guesses is
    not closed before it has ``min_items`` items: 20,000 direct links make at most 100 waves, not
    20,000 × 15 min / ``hours`` of them (each wave is a pipeline start)."""
    cur, used, guessed, any_wave = [], 0.0, False, False
    for item in items:
        known = known_s(item)
        need = UNKNOWN_S if known is None else known
        if cur and used + need > hours * 3600 and (len(cur) >= min_items or not guessed):
            yield cur
            any_wave = True
            cur, used, guessed = [], 0.0, False
        cur.append(item)
        used += need
        guessed = guessed or known is None
    if cur or not any_wave:
        yield cur


def cut(items: List[Source], hours: float, min_items: int = WAVE_MIN_ITEMS) -> List[List[Source]]:
    return list(waves_of(items, hours, min_items))


CHUNK = 20_000  # items decoded from the listing at a time


def item_files(folder: str) -> List[str]:
    return [p for p in fs.list_dir(folder, prefix=ITEMS_PREFIX + "-", suffix=".parquet") if not fs.is_temporary(p)]


MERGE_BATCH = 1_000  # rows of each sorted run held at a time while merging


def _sorted_rows(paths: List[str], scratch: str) -> Iterator[Tuple[str, str, str]]:
    """(order, source_id, item JSON) of the listing's tables in sources-file order, by an external
    sort: ``CHUNK`` rows at a time are sorted in Arrow and written to a run in ``scratch``, then the
    runs are merged. Memory holds one chunk, then ``MERGE_BATCH`` rows per run."""
    runs = []
    for p in paths:
        f = pq.ParquetFile(fs.local_path(p) if fs.is_local(p) else io.BytesIO(fs.read_bytes(p)))
        for batch in f.iter_batches(batch_size=CHUNK, columns=["order", "source_id", "item"]):
            t = pa.Table.from_batches([batch])
            t = t.take(pc.sort_indices(t, sort_keys=[("order", "ascending"), ("source_id", "ascending")]))
            runs.append(os.path.join(scratch, f"run-{len(runs):06d}.parquet"))
            pq.write_table(t, runs[-1], row_group_size=MERGE_BATCH)

    def read_run(path: str) -> Iterator[Tuple[str, str, str]]:
        for b in pq.ParquetFile(path).iter_batches(batch_size=MERGE_BATCH):
            yield from zip(b.column("order").to_pylist(), b.column("source_id").to_pylist(),
                           b.column("item").to_pylist())

    return heapq.merge(*(read_run(r) for r in runs))


def make_plan(layout: Layout, key: str, items_paths: List[str], hours: float, corpus_state: str = "",
              log=lambda line: None) -> Plan:
    """Cut the listing in ``items_paths`` into waves in sources-file order and save the plan, one wave
    file at a time, in memory that does not grow with the number of items (see ``_sorted_rows``).
    Wave tags depend on the items and on ``corpus_state`` (the committed runs so far), so a later
    run's waves never take the name of an earlier run's."""
    salt = hashlib.sha1((corpus_state + "|").encode())
    folder = layout.work(expansion_tag(key)).root
    sizes, seconds, parts = [], [], []
    with tempfile.TemporaryDirectory(prefix="speechmill-plan-") as scratch:

        def items() -> Iterator[Source]:
            seen = set()  # an id listed twice (a file named directly and inside a listed feed) is one item
            for n, (_, sid, text) in enumerate(_sorted_rows(items_paths, scratch), start=1):
                if sid not in seen:
                    seen.add(sid)
                    salt.update(sid.encode() + b",")
                    yield Source.from_json(text)
                if n % (10 * CHUNK) == 0:
                    log(f"run {key}: cutting waves: {n:,} items")

        for wave in waves_of(items(), hours):
            n = part_count(wave[0], hours) if len(wave) == 1 else 1  # a long item is a wave of its own
            for k in range(n):
                fs.atomic_write_bytes(fs.join(folder, _wave_file(len(sizes))),
                                      "".join(s.to_json() + "\n" for s in wave).encode())
                sizes.append(len(wave))
                seconds.append(sum(estimated_s(s) for s in wave) / n)
                parts.append([k, n, wave[0].source_id] if n > 1 else None)
    salt_hex = salt.hexdigest()[:16]
    p = Plan(key, [stable_hash(f"{key}:{salt_hex}:wave:{i}", 12) for i in range(len(sizes))], sizes, seconds, folder,
             parts)
    save(layout, p)
    return p


def _path(layout: Layout, key: str) -> str:
    return layout.work(expansion_tag(key)).path(PLAN_FILE)


def save(layout: Layout, p: Plan) -> None:
    fs.atomic_write_bytes(_path(layout, p.key), json.dumps(
        {"key": p.key, "tags": p.tags, "sizes": p.sizes, "seconds": p.seconds, "parts": p.parts}).encode())


def load(layout: Layout, key: str) -> Optional[Plan]:
    """The saved plan with this key, if a run with the same sources and settings was interrupted."""
    path = _path(layout, key)
    if not fs.exists(path):
        return None
    d = json.loads(fs.read_bytes(path))
    if "sizes" not in d:  # a plan saved before waves had files of their own: cut again
        return None
    p = Plan(d["key"], d["tags"], d["sizes"], d["seconds"], layout.work(expansion_tag(key)).root, d.get("parts") or [])
    return p if p.pending_waves(layout) else None


def merge_expansion_rows(layout: Layout, p: Plan, work: Layout, tag: str) -> None:
    """Add the listing's rejected and source rows to the first wave's tables (as rows of that wave)."""
    listing = layout.work(expansion_tag(p.key))
    for name, schema in (("rejected", tables.REJECTED), ("sources", tables.SOURCES)):
        extra = listing.path(f"{name}.parquet")
        if not fs.exists(extra):
            continue
        rows = [{**r, "run": tag} for r in read_table([extra]).to_pylist()]
        mine = work.path(f"{name}.parquet")
        if fs.exists(mine):
            rows = read_table([mine]).to_pylist() + rows
        rows.sort(key=lambda r: tuple("" if v is None else str(v) for v in r.values()))
        fs.atomic_write_bytes(mine, table_bytes([{k: r.get(k) for k in schema.names} for r in rows], schema))


def finish(layout: Layout, p: Plan, keep_work: bool = False) -> None:
    """The plan is complete: remove it and its listing (wave work areas go as each wave is published)."""
    if not keep_work:
        fs.delete_tree(layout.work(expansion_tag(p.key)).root)


def item_part(source_id: str) -> int:
    """Which of the ``ITEM_PARTS`` listing files an item goes to (a stable hash: any worker, any run)."""
    return int(stable_hash(source_id, 8), 16) % ITEM_PARTS


def write_item_part(part_rows, folder: str) -> str:
    """Write one part's item rows as ``items-part-NNNNN.parquet`` in ``folder``; returns its path."""
    part, rows = part_rows
    path = fs.join(folder, f"{ITEMS_PREFIX}-part-{part:05d}.parquet")
    fs.atomic_write_bytes(path, table_bytes(list(rows), tables.ITEMS))
    return path
