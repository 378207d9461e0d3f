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
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set

import pyarrow as pa
import pyarrow.parquet as pq

from corpus import commit, fs
from schemas.keys import stable_hash
from schemas.outcomes import AUDIO_GATE_REASONS
from schemas.records import SCHEMA_VERSION

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


def read_table(paths: Iterable[str], columns: Optional[List[str]] = None) -> pa.Table:
    tables = []
    for p in paths:
        t = pq.read_table(io.BytesIO(fs.read_bytes(p)))
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
        info = json.loads(fs.read_bytes(p))
        runs[info.get("run", p.rsplit("/", 1)[-1][:-5])] = info
    return runs


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
    became a content fingerprint) is history too.
    """
    best: Dict[str, dict] = {}
    for row in table.to_pylist():
        rank = order.get(row.get("run") or "", -1)
        cur = best.get(row["source_id"])
        if cur is None or rank >= order.get(cur.get("run") or "", -1):
            best[row["source_id"]] = row
    superseded = {r["alias"]: order.get(r.get("run") or "", -1) for r in best.values()
                  if r.get("alias") and r["alias"] != r["source_id"]}
    return [r for sid, r in best.items()
            if not (sid in superseded and superseded[sid] >= order.get(r.get("run") or "", -1))]


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


def publish(layout: Layout, tag: str, summary: dict, before_apply=lambda: None,
            deletes: Iterable[str] = ()) -> dict:
    """Commit a finished run's work area into the corpus (see ``corpus.commit``)."""
    work = layout.work(tag)
    moves, files = [], {"shards": [], "manifest": [], "tables": [], REJECTED_SHARDS: [], REJECTED_MANIFEST: []}
    for sub in ("shards", "manifest", REJECTED_SHARDS, REJECTED_MANIFEST):
        for src in fs.list_dir(work.path(sub)):
            if fs.is_temporary(src):
                continue
            name = src.rsplit("/", 1)[-1]
            moves.append((src, layout.path(sub, name)))
            files[sub].append(name)
    for table in ("rejected", "sources", "speakers"):
        src = work.path(f"{table}.parquet")
        if fs.exists(src):
            moves.append((src, layout.run_table(table, tag)))
            files["tables"].append(f"{table}/run-{tag}.parquet")
    if len(files["shards"]) != summary.get("shards", len(files["shards"])):
        raise RuntimeError(f"run {tag}: {summary['shards']} shards were written but {len(files['shards'])} "
                           f"are in {work.path('shards')}; nothing is published")
    record = {**summary, "files": files}
    record = commit.commit(layout.root, tag, moves, record, deletes=list(deletes), before_apply=before_apply)
    rebuild_html_report(layout)
    return record


def rebuild_html_report(layout: Layout) -> None:
    """Rebuild ``report.html`` after a publish. The run is already committed, so a failure here is only
    a warning: ``python -m pipelines.report OUTPUT`` builds the page again."""
    try:
        from corpus.report import build_report
        build_report(layout)
    except Exception as e:  # noqa: BLE001 - whatever broke the page must not fail the committed run
        print(f"[speechmill] warning: report.html was not rebuilt ({type(e).__name__}: {str(e)[:300]}); the run "
              f"is committed; 'python -m pipelines.report {layout.root}' builds it again", file=sys.stderr, flush=True)


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
    failed = [r for r in sources if r["status"] in ("failed", "rejected")]
    return {
        "schema_version": SCHEMA_VERSION,
        "sources": {"total": len(sources),
                    **{k: statuses.get(k, 0) for k in ("ok", "failed", "rejected", "deferred")}},
        "retried_next_run": sum(1 for r in sources if r["status"] != "ok" and r.get("retryable")),
        "failed_examples": [{"uri": r.get("uri"), "origin": r.get("origin"), "status": r["status"],
                             "reason": r.get("reason")} for r in sorted(failed, key=lambda r: r.get("origin") or "")[:5]],
        "hours_in": round(sum(r["duration_s"] or 0.0 for r in sources) / 3600, 4),
        "segments": int(sum(r["n_segments"] or 0 for r in sources)),
        "kept": manifest.num_rows,
        "hours_kept": round(sum(durations) / 3600, 4),
        "rejected_segments": sum(1 for r in rejected if r["key"] is not None),
        "asr_hours_saved": round(sum((r["duration_s"] or 0.0) for r in rejected
                                     if r["key"] is not None and r["stage"] == "quality"
                                     and r["reason"] in AUDIO_GATE_REASONS) / 3600, 4),
        "rejects_by_reason": dict(sorted(reasons.items())),
        "shards": n_shards,
    }


def corpus_report(layout: Layout) -> dict:
    """Totals over everything committed in ``layout``, each source counted by its latest run."""
    order = run_order(layout)
    sources = latest_rows(committed_table(layout, "sources", order), order)
    current = {(r["source_id"], r.get("run")) for r in sources}
    rejected = [r for r in committed_table(layout, "rejected", order).to_pylist()
                if (r["source_id"], r.get("run")) in current]
    manifests = [p for p in fs.list_dir(layout.manifest_dir, suffix=".parquet") if not fs.is_temporary(p)]
    shards = [p for p in fs.list_dir(layout.shards_dir, suffix=".tar") if not fs.is_temporary(p)]
    return summarise(sources, read_table(manifests, ["key", "duration_s"]), rejected, len(shards))


def run_report(layout: Layout, tag: str) -> dict:
    """Totals over one run's work area, before it is published."""
    work = layout.work(tag)
    one = lambda name: [p for p in [work.path(name)] if fs.exists(p)]  # noqa: E731
    return summarise(
        read_table(one("sources.parquet")).to_pylist(),
        read_table([p for p in fs.list_dir(work.manifest_dir, suffix=".parquet") if not fs.is_temporary(p)],
                   ["key", "duration_s"]),
        read_table(one("rejected.parquet")).to_pylist(),
        len([p for p in fs.list_dir(work.shards_dir, suffix=".tar") if not fs.is_temporary(p)]),
    )


def write_report(layout: Layout, report: dict) -> None:
    fs.atomic_write_bytes(layout.path("report.json"), json.dumps(report, indent=2, sort_keys=True).encode())


def clean_leftovers(layout: Layout, staging_dir: str, keep_work: Iterable[str] = (),
                    log=lambda m: None, external_age_s: float = 6 * 3600) -> int:
    """Delete what dead runs left: work areas, temporary files, partial downloads. Returns the count.

    Runs under the output's lock, so anything temporary inside the output belongs to no live run.
    A staging store outside the output may be shared, so there only leftovers older than
    ``external_age_s`` go.
    """
    removed = 0
    keep = set(keep_work)
    work_root = layout.path(WORK)
    if fs.is_local(work_root):
        local = fs.local_path(work_root)
        names = os.listdir(local) if os.path.isdir(local) else []
        stale = [n for n in names if n not in keep]
        for n in stale:
            fs.delete_tree(os.path.join(local, n))
        removed += len(stale)
    else:
        for p in fs.list_tree(work_root):
            tag = p[len(work_root) + 1:].split("/", 1)[0]
            if tag not in keep:
                fs.delete_if_exists(p)
                removed += 1
    for sub in ("", "shards", "manifest", "rejected", "sources", "speakers", "runs", REJECTED_SHARDS, REJECTED_MANIFEST,
                commit.JOURNAL):
        for p in fs.list_dir(layout.path(sub) if sub else layout.root):
            if fs.is_temporary(p):
                fs.delete_if_exists(p)
                removed += 1
    inside = staging_dir.rstrip("/").startswith(layout.root.rstrip("/") + "/")
    min_age = 0.0 if inside else external_age_s
    removed += _clean_staging(staging_dir, min_age)
    if removed:
        log(f"removed {removed} leftovers of interrupted runs (work areas, temporary files, partial downloads)")
    return removed


def _clean_staging(staging_dir: str, min_age_s: float) -> int:
    removed = 0
    if fs.is_local(staging_dir):
        d = fs.local_path(staging_dir)
        if not os.path.isdir(d):
            return 0
        for n in os.listdir(d):
            p = os.path.join(d, n)
            if not (n.startswith(".dl-") or fs.is_temporary(p)):
                continue
            try:
                age = time.time() - os.path.getmtime(p)
            except OSError:
                continue
            if age >= min_age_s:
                fs.delete_tree(p) if os.path.isdir(p) else fs.delete_if_exists(p)
                removed += 1
        return removed
    for p in fs.list_dir(staging_dir):
        if fs.is_temporary(p) and fs.modified_age_s(p) >= min_age_s:
            fs.delete_if_exists(p)
            removed += 1
    return removed
