"""Commit as the run goes: a run's items are cut into waves, and each wave is published on its own.

A run first lists every pending source's items (one small pipeline: feeds, playlists and folders
expanded, done items left out, limits applied), then cuts the items, in sources-file order, into
waves of at most ``--commit_every_hours`` of audio (stated durations; a local file's size at
16 kB/s; ``UNKNOWN_S`` when nothing is known) and runs and publishes them one after another. A
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

from corpus.layout import Layout, committed_runs, read_table
from corpus.shards import table_bytes
from schemas import tables
from schemas.keys import stable_hash
from schemas.records import Source
from storage import fs
from transforms.expand import natural_key

ITEMS_TABLE = "items.parquet"
UNKNOWN_S = 900.0  # a media item whose length nothing states counts as a quarter of an hour
LOCAL_BYTES_PER_S = 16000  # ≈ 128 kbit/s: most compressed speech is smaller, WAV larger (more waves, no harm)
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


def estimated_s(item: Source) -> float:
    if item.declared_duration_s:
        return float(item.declared_duration_s)
    if item.uri.startswith("file://"):
        try:
            return os.path.getsize(fs.local_path(item.uri)) / LOCAL_BYTES_PER_S
        except OSError:
            return UNKNOWN_S
    return UNKNOWN_S


def cut(items: List[Source], hours: float) -> List[List[Source]]:
    """Consecutive waves of items whose estimated audio fits ``hours`` (an item longer than that is a wave)."""
    out, cur, used = [], [], 0.0
    for item in items:
        need = estimated_s(item)
        if cur and used + need > hours * 3600:
            out.append(cur)
            cur, used = [], 0.0
        cur.append(item)
        used += need
    if cur or not out:
        out.append(cur)
    return out


def plan(key: str, items: List[Source], hours: float, corpus_state: str = "") -> Plan:
    """Waves of ``items`` in sources-file order. Wave tags depend on the items and on ``corpus_state``
    (the committed runs so far), so a later run's waves never take the name of an earlier run's."""
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
