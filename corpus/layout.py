"""The output directory: where each table lives, what is already done, and how a run is published.

A run writes everything under ``_work/{run_tag}/`` and is published only after the pipeline
succeeds: shards, manifest parts, rejected rows and source rows are renamed into place, then
``runs/{run_tag}.json`` marks the run complete. So a crashed run leaves nothing visible, and its
rerun (same pending sources, same settings, same tag) writes the same files again.

A source is done once it has a row in ``sources/``; a rerun skips it, so rerunning a finished
corpus adds nothing and changes no byte.
"""
from __future__ import annotations

import datetime
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set

import pyarrow as pa
import pyarrow.parquet as pq

from corpus import fs
from schemas.keys import stable_hash
from schemas.records import SCHEMA_VERSION

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
        return self.path("_staging")

    def work(self, tag: str) -> "Layout":
        """The same layout rooted in this run's private work area."""
        return Layout(self.path("_work", tag))

    @property
    def pack_dir(self) -> str:
        return self.path("packs")

    def run_table(self, table: str, tag: str) -> str:
        return self.path(table, f"run-{tag}.parquet")


def read_table(paths: Iterable[str], columns: Optional[List[str]] = None) -> pa.Table:
    tables = [pq.read_table(io.BytesIO(fs.read_bytes(p)), columns=columns) for p in paths]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({c: [] for c in (columns or [])})
    return pa.concat_tables(tables, promote_options="default")


def run_order(layout: Layout) -> Dict[str, int]:
    """Published runs, oldest first (by the time they were published)."""
    runs = []
    for p in fs.glob(layout.path("runs", "*.json")):
        info = json.loads(fs.read_bytes(p))
        runs.append((info.get("published_at", ""), info.get("run", p.rsplit("/", 1)[-1][:-5])))
    return {tag: i for i, (_, tag) in enumerate(sorted(runs))}


def latest_rows(table: pa.Table, order: Dict[str, int]) -> List[dict]:
    """Each source's row from the newest run that has one (an earlier transient failure is history)."""
    best: Dict[str, dict] = {}
    for row in table.to_pylist():
        rank = order.get(row.get("run") or "", -1)
        cur = best.get(row["source_id"])
        if cur is None or rank >= order.get(cur.get("run") or "", -1):
            best[row["source_id"]] = row
    return list(best.values())


def done_source_ids(layout: Layout) -> Set[str]:
    """Sources finished for good: their latest row is neither a transient failure nor deferred."""
    rows = latest_rows(read_table(fs.glob(layout.path("sources", "*.parquet"))), run_order(layout))
    return {r["source_id"] for r in rows if not r.get("retryable")}


_SHARD_INDEX = re.compile(r"-(\d{6,})\.tar$")


def next_shard_index(layout: Layout, prefix: str) -> int:
    indices = [int(m.group(1)) for p in fs.glob(layout.path("shards", f"{prefix}-*.tar"))
               if (m := _SHARD_INDEX.search(p))]
    return max(indices) + 1 if indices else 0


def run_tag(source_ids: Iterable[str], settings: dict) -> str:
    """A name for this run: the same pending sources with the same settings give the same tag."""
    blob = json.dumps({"sources": sorted(source_ids), "settings": settings}, sort_keys=True, default=str)
    return stable_hash(blob, 12)


def publish(layout: Layout, tag: str, summary: dict) -> None:
    """Move a finished run's files into place; the ``runs/`` marker is written last."""
    work = layout.work(tag)
    for sub in ("shards", "manifest"):
        for src in fs.glob(work.path(sub, "*")):
            fs.move(src, layout.path(sub, src.rsplit("/", 1)[-1]))
    for table in ("rejected", "sources"):
        src = work.path(f"{table}.parquet")
        if fs.exists(src):
            fs.move(src, layout.run_table(table, tag))
    summary = {**summary, "run": tag,
               "published_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")}
    fs.atomic_write_bytes(layout.path("runs", f"{tag}.json"),
                          json.dumps(summary, indent=2, sort_keys=True).encode())


def summarise(sources: List[dict], manifest: pa.Table, rejected: List[dict], n_shards: int) -> dict:
    """Totals over the given rows: hours in and kept, rejects by reason."""
    statuses = Counter(r["status"] for r in sources)
    reasons: Dict[str, Dict[str, float]] = {}
    for r in rejected:
        entry = reasons.setdefault(f"{r['stage']}/{r['reason']}", {"count": 0, "hours": 0.0})
        entry["count"] += 1
        entry["hours"] += (r["duration_s"] or 0.0) / 3600
    for entry in reasons.values():
        entry["hours"] = round(entry["hours"], 4)
    durations = manifest.column("duration_s").to_pylist() if manifest.num_rows else []
    return {
        "schema_version": SCHEMA_VERSION,
        "sources": {"total": len(sources),
                    **{k: statuses.get(k, 0) for k in ("ok", "failed", "rejected", "deferred")}},
        "hours_in": round(sum(r["duration_s"] or 0.0 for r in sources) / 3600, 4),
        "segments": int(sum(r["n_segments"] or 0 for r in sources)),
        "kept": manifest.num_rows,
        "hours_kept": round(sum(durations) / 3600, 4),
        "rejected_segments": sum(1 for r in rejected if r["key"] is not None),
        "rejects_by_reason": dict(sorted(reasons.items())),
        "shards": n_shards,
    }


def corpus_report(layout: Layout) -> dict:
    """Totals over everything published in ``layout``, each source counted by its latest run."""
    order = run_order(layout)
    sources = latest_rows(read_table(fs.glob(layout.path("sources", "*.parquet"))), order)
    current = {(r["source_id"], r.get("run")) for r in sources}
    rejected = [r for r in read_table(fs.glob(layout.path("rejected", "*.parquet"))).to_pylist()
                if (r["source_id"], r.get("run")) in current]
    return summarise(sources, read_table(fs.glob(layout.path("manifest", "*.parquet")), ["key", "duration_s"]),
                     rejected, len(fs.glob(layout.path("shards", "*.tar"))))


def run_report(layout: Layout, tag: str) -> dict:
    """Totals over one run's work area, before it is published."""
    work = layout.work(tag)
    return summarise(
        read_table(fs.glob(work.path("sources.parquet"))).to_pylist(),
        read_table(fs.glob(work.path("manifest", "*.parquet")), ["key", "duration_s"]),
        read_table(fs.glob(work.path("rejected.parquet"))).to_pylist(),
        len(fs.glob(work.path("shards", "*.tar"))),
    )


def write_report(layout: Layout, report: dict) -> None:
    fs.atomic_write_bytes(layout.path("report.json"), json.dumps(report, indent=2, sort_keys=True).encode())
