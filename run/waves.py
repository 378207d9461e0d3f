"""Commit as the run goes: a run's items are cut into waves, and each wave is published on its own.

A run first lists every pending source's items (one small pipeline: feeds, playlists and folders
expanded, done items left out, limits applied), then cuts the items, in sources-file order, into
waves of at most ``--commit_every_hours`` of audio (stated durations; a local file's header, or
its size at 16 kB/s; a feed enclosure's stated size at 16 kB/s; ``UNKNOWN_S`` when nothing is
known, with at least ``WAVE_MIN_ITEMS`` items in a wave of such guesses) and runs and publishes them one after another. A
crash or Ctrl-C loses at most the wave in flight.

The plan — the items and their waves — is saved in the work area (``_work/plan-{key}/``; it holds
source URLs as given, credentials included, so it stays out of the published folders and is
deleted when the run completes). The plan's key comes from the sources file's entries and the
settings, not from what is done, so the rerun of an interrupted run finds its plan and carries on
with the first wave not yet committed: the finished corpus is the same, byte for byte, as one
built without the interruption.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Optional

import soundfile

from corpus.layout import Layout, committed_runs, read_table
from schemas.keys import stable_hash
from schemas.records import Source
from storage import fs

ITEMS_TABLE = "items.parquet"
UNKNOWN_S = 900.0  # a media item whose length nothing states counts as a quarter of an hour
BYTES_PER_S = 16000  # ≈ 128 kbit/s: compressed speech (podcast MP3/AAC) whose length only its size tells
HEADER_FORMATS = frozenset(".wav .flac .ogg .oga .opus .aif .aiff .aifc .au .snd .caf .w64 .rf64".split())
WAVE_MIN_ITEMS = 200  # a wave whose hours are partly guessed closes only once it holds this many items
PLAN_FILE = "plan.json"


def expansion_tag(key: str) -> str:
    return f"plan-{key}"


@dataclass
class Plan:
    key: str
    tags: List[str]  # one run tag per wave
    waves: List[List[str]]  # each wave's items, as JSON

    def items(self, i: int) -> List[Source]:
        return [Source.from_json(x) for x in self.waves[i]]

    def pending_waves(self, layout: Layout) -> List[int]:
        done = committed_runs(layout)
        return [i for i, t in enumerate(self.tags) if t not in done]

    def work_names(self) -> List[str]:
        return [expansion_tag(self.key)] + list(self.tags)


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


def cut(items: List[Source], hours: float, min_items: int = WAVE_MIN_ITEMS) -> List[List[Source]]:
    """Consecutive waves of items whose estimated audio fits ``hours`` (an item longer than that is a wave).

    An item nothing tells the length of counts as ``UNKNOWN_S``, but a wave holding such guesses is
    not closed before it has ``min_items`` items: 20,000 direct links make at most 100 waves, not
    20,000 × 15 min / ``hours`` of them (each wave is a pipeline start)."""
    out, cur, used, guessed = [], [], 0.0, False
    for item in items:
        known = known_s(item)
        need = UNKNOWN_S if known is None else known
        if cur and used + need > hours * 3600 and (len(cur) >= min_items or not guessed):
            out.append(cur)
            cur, used, guessed = [], 0.0, False
        cur.append(item)
        used += need
        guessed = guessed or known is None
    if cur or not out:
        out.append(cur)
    return out


def plan(key: str, items: List[Source], hours: float, corpus_state: str = "") -> Plan:
    """Waves of ``items`` in sources-file order. Wave tags depend on the items and on ``corpus_state``
    (the committed runs so far), so a later run's waves never take the name of an earlier run's."""
    from transforms.expand import natural_key
    ordered = sorted(items, key=lambda s: (natural_key(s.origin), s.source_id))
    groups = cut(ordered, hours)
    salt = stable_hash(corpus_state + "|" + ",".join(s.source_id for s in ordered), 16)
    return Plan(key, [stable_hash(f"{key}:{salt}:wave:{i}", 12) for i in range(len(groups))],
                [[s.to_json() for s in g] for g in groups])


def _path(layout: Layout, key: str) -> str:
    return layout.work(expansion_tag(key)).path(PLAN_FILE)


def save(layout: Layout, p: Plan) -> None:
    fs.atomic_write_bytes(_path(layout, p.key), json.dumps({"key": p.key, "tags": p.tags, "waves": p.waves}).encode())


def load(layout: Layout, key: str) -> Optional[Plan]:
    """The saved plan with this key, if a run with the same sources and settings was interrupted."""
    path = _path(layout, key)
    if not fs.exists(path):
        return None
    d = json.loads(fs.read_bytes(path))
    p = Plan(d["key"], d["tags"], d["waves"])
    return p if p.pending_waves(layout) else None


def merge_expansion_rows(layout: Layout, p: Plan, work: Layout, tag: str) -> None:
    """Add the listing's rejected and source rows to the first wave's tables (as rows of that wave)."""
    from corpus.shards import table_bytes
    from schemas import tables
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
