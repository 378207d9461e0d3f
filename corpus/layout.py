"""The output directory: where each table lives, what is already done, and how a run is published.

A run writes everything under ``_work/{run_tag}/`` and is published only after the pipeline
succeeds, as one journaled commit (``corpus.commit``): shards, manifest parts, rejected rows and
source rows are moved into place, then ``runs/{run_tag}.json`` marks the run committed. Readers
count a run's rows only once that record exists, and the next command that opens the output
finishes (or undoes) a commit a crash interrupted, so a crash leaves nothing half-published and a
rerun duplicates nothing.

A source is done once the latest committed row for it is ``ok`` or a final failure (see
``schemas.outcomes``); a rerun skips it, so rerunning a finished corpus adds nothing and changes no
byte. Shards are sized per run: each run fills new shards of ``--samples_per_shard`` samples
starting after the highest index present, so its last shard is usually partial;
``python -m pipelines.compact`` merges partial shards.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set

import pyarrow as pa
import pyarrow.parquet as pq

from corpus.guard import CorpusDamaged, check_run_tag
from schemas.keys import stable_hash
from schemas.outcomes import Status
from storage import fs

WORK = "_work"
STAGING = "_staging"
REJECTED_SHARDS = "rejected_shards"
REJECTED_MANIFEST = "rejected_manifest"


@dataclass(frozen=True)
class Layout:
    root: str

    def path(self, *parts: str) -> str:
        return fs.join(self.root, *parts)

    @property
    def shards_dir(self) -> str:
        return self.path("shards")

    @property
    def manifest_dir(self) -> str:
        return self.path("manifest")

    @property
    def staging_dir(self) -> str:
        return self.path(STAGING)

    def work(self, tag: str) -> "Layout":
        """The same layout rooted in this run's private work area."""
        return Layout(self.path(WORK, tag))

    @property
    def pack_dir(self) -> str:
        return self.path("packs")

    def run_table(self, table: str, tag: str) -> str:
        return self.path(table, f"run-{tag}.parquet")


def read_parquet(path: str, columns: Optional[List[str]] = None) -> pa.Table:
    """The Parquet file at ``path``; ``CorpusDamaged`` naming it when it is not one."""
    data = fs.read_bytes(path)
    try:
        return pq.read_table(io.BytesIO(data), columns=columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise CorpusDamaged(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:200]})") from e


def read_table(paths: Iterable[str], columns: Optional[List[str]] = None) -> pa.Table:
    tables = []
    for p in paths:
        t = read_parquet(p)
        if columns:
            t = t.select([c for c in columns if c in t.column_names])
        if t.num_rows:
            tables.append(t)
    if not tables:
        return pa.table({c: [] for c in (columns or [])})
    return pa.concat_tables(tables, promote_options="default")


def committed_runs(layout: Layout) -> Dict[str, dict]:
    """Every committed run's record, by tag."""
    runs = {}
    for p in fs.list_dir(layout.path("runs"), suffix=".json"):
        if fs.is_temporary(p):
            continue
        runs[check_run_tag(p.rsplit("/", 1)[-1][:-5], p)] = read_run_record(p)
    return runs


def read_run_record(path: str) -> dict:
    """A run's record (``runs/{tag}.json``); ``CorpusDamaged`` naming the file when it is not one."""
    tag = path.rsplit("/", 1)[-1][:-len(".json")]
    try:
        info = json.loads(fs.read_bytes(path))
    except ValueError as e:
        raise CorpusDamaged(f"{path}: not a readable run record ({e})") from e
    if not isinstance(info, dict) or info.get("run", tag) != tag:
        raise CorpusDamaged(f"{path}: not the record of run {tag}")
    if not isinstance(info.get("files", {}), dict):
        raise CorpusDamaged(f"{path}: its files are not a table")
    return info


def run_order(layout: Layout, runs: Optional[Dict[str, dict]] = None) -> Dict[str, int]:
    """Committed runs, oldest first (by the time they were published)."""
    runs = committed_runs(layout) if runs is None else runs
    ordered = sorted((info.get("published_at", ""), tag) for tag, info in runs.items())
    return {tag: i for i, (_, tag) in enumerate(ordered)}


def committed_table(layout: Layout, table: str, order: Dict[str, int]) -> pa.Table:
    """A per-run table's rows from committed runs only."""
    paths = [p for p in fs.list_dir(layout.path(table), prefix="run-", suffix=".parquet")
             if not fs.is_temporary(p) and p.rsplit("/", 1)[-1][4:-8] in order]
    return read_table(paths)


def latest_rows(table: pa.Table, order: Dict[str, int]) -> List[dict]:
    """Each source's row from the newest run that has one (an earlier transient failure is history).

    A row whose id is the ``alias`` of a source recorded later (a local file seen before its id
    became a content fingerprint) is history too, and so is everything before a ``listed`` row (a
    folder or feed that failed, then listed): that source has no current row, as one listed at once.
    """
    best: Dict[str, dict] = {}
    for row in table.to_pylist():
        rank = order.get(row.get("run") or "", -1)
        cur = best.get(row["source_id"])
        if cur is None or rank >= order.get(cur.get("run") or "", -1):
            best[row["source_id"]] = row
    superseded = {r["alias"]: order.get(r.get("run") or "", -1) for r in best.values()
                  if r.get("alias") and r["alias"] != r["source_id"]}
    return [r for sid, r in best.items() if r["status"] != Status.LISTED
            and not (sid in superseded and superseded[sid] >= order.get(r.get("run") or "", -1))]


def latest_source_rows(layout: Layout) -> List[dict]:
    order = run_order(layout)
    return latest_rows(committed_table(layout, "sources", order), order)


def done_source_ids(layout: Layout, rows: Optional[List[dict]] = None) -> Set[str]:
    """Sources finished for good: their latest row is ok or a final failure (``schemas.outcomes``)."""
    rows = latest_source_rows(layout) if rows is None else rows
    done = set()
    for r in rows:
        if not r.get("retryable"):
            done.add(r["source_id"])
            if r.get("alias"):
                done.add(r["alias"])
    return done


_SHARD_INDEX = re.compile(r"-(\d{6,})\.tar$")


def shard_indices(layout: Layout, prefix: str, folder: str = "shards") -> List[int]:
    return sorted(int(m.group(1)) for p in fs.list_dir(layout.path(folder), prefix=prefix + "-", suffix=".tar")
                  if (m := _SHARD_INDEX.search(p)) and p.rsplit("/", 1)[-1][len(prefix) + 1:-4].isdigit())


def next_shard_index(layout: Layout, prefix: str, folder: str = "shards") -> int:
    indices = shard_indices(layout, prefix, folder)
    return indices[-1] + 1 if indices else 0


def run_tag(source_ids: Iterable[str], settings: dict) -> str:
    """A name for this run: the same pending sources with the same settings give the same tag."""
    blob = json.dumps({"sources": sorted(source_ids), "settings": settings}, sort_keys=True, default=str)
    return stable_hash(blob, 12)


