"""``report.json``: totals over a corpus or one run's work area (hours in and kept, rejects by reason)."""
from __future__ import annotations

import json
from collections import Counter
from typing import Dict, List

import pyarrow as pa

from corpus.layout import Layout, committed_table, latest_rows, read_table, run_order
from schemas.outcomes import AUDIO_GATE_REASONS, DUPLICATE_REASONS, Status
from schemas.records import SCHEMA_VERSION
from storage import fs


def summarise(sources: List[dict], manifest: pa.Table, rejected: List[dict], n_shards: int) -> dict:
    """Totals over the given rows: hours in and kept, rejects by reason (``listed`` rows are no outcome)."""
    sources = [r for r in sources if r["status"] != Status.LISTED]
    statuses = Counter(r["status"] for r in sources)
    reasons: Dict[str, Dict[str, float]] = {}
    for r in rejected:
        entry = reasons.setdefault(f"{r['stage']}/{r['reason']}", {"count": 0, "hours": 0.0})
        entry["count"] += 1
        entry["hours"] += (r["duration_s"] or 0.0) / 3600
    for entry in reasons.values():
        entry["hours"] = round(entry["hours"], 4)
    durations = manifest.column("duration_s").to_pylist() if manifest.num_rows else []
    ends = ([e for e in manifest.column("sentence_end").to_pylist() if e is not None]
            if manifest.num_rows and "sentence_end" in manifest.column_names else [])
    failed = [r for r in sources if r["status"] in (Status.FAILED, Status.REJECTED)]
    # a failed source's own row in the rejected table (no clip key) says what to do about it
    detail = {r["source_id"]: r.get("detail") for r in rejected if r["key"] is None}
    uris = {r["source_id"]: r.get("uri") for r in sources}
    repeats = sorted((r for r in sources if r.get("duplicate_of")), key=lambda r: (r.get("uri") or "", r["source_id"]))
    return {
        "schema_version": SCHEMA_VERSION,
        "sources": {"total": len(sources),
                    **{k.value: statuses.get(k, 0) for k in Status if k != Status.LISTED}},
        "retried_next_run": sum(1 for r in sources if r["status"] != Status.OK and r.get("retryable")),
        "failed_examples": [{"uri": r.get("uri"), "origin": r.get("origin"), "status": r["status"],
                             "reason": r.get("reason"), "detail": detail.get(r["source_id"])}
                            for r in sorted(failed, key=lambda r: r.get("origin") or "")[:5]],
        "hours_in": round(sum(r["duration_s"] or 0.0 for r in sources) / 3600, 4),
        "segments": int(sum(r["n_segments"] or 0 for r in sources)),
        "kept": manifest.num_rows,
        "hours_kept": round(sum(durations) / 3600, 4),
        # share of kept clips whose transcript ends a sentence (None when no clip records it)
        "sentence_end_share": round(sum(ends) / len(ends), 4) if ends else None,
        "rejected_segments": sum(1 for r in rejected if r["key"] is not None),
        "asr_hours_saved": round(sum((r["duration_s"] or 0.0) for r in rejected
                                     if r["key"] is not None and r["stage"] == "quality"
                                     and r["reason"] in AUDIO_GATE_REASONS) / 3600, 4),
        "hours_duplicate": round(sum((r["duration_s"] or 0.0) for r in rejected
                                     if r["key"] is not None and r["reason"] in DUPLICATE_REASONS) / 3600, 4),
        "rejects_by_reason": dict(sorted(reasons.items())),
        # sources most of whose clips repeat one other source (a re-upload, a mirror): the sources table's
        # duplicate_of; the other source's URI when it is among these rows
        "duplicate_sources": {"count": len(repeats), "examples": [
            {"uri": r.get("uri"), "repeats": r["duplicate_of"], "repeats_uri": uris.get(r["duplicate_of"]),
             "share": r.get("duplicate_share")} for r in repeats[:5]]},
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
    return summarise(sources, read_table(manifests, ["key", "duration_s", "sentence_end"]), rejected, len(shards))


def run_report(layout: Layout, tag: str) -> dict:
    """Totals over one run's work area, before it is published."""
    work = layout.work(tag)
    one = lambda name: [p for p in [work.path(name)] if fs.exists(p)]
    return summarise(
        read_table(one("sources.parquet")).to_pylist(),
        read_table([p for p in fs.list_dir(work.manifest_dir, suffix=".parquet") if not fs.is_temporary(p)],
                   ["key", "duration_s", "sentence_end"]),
        read_table(one("rejected.parquet")).to_pylist(),
        len([p for p in fs.list_dir(work.shards_dir, suffix=".tar") if not fs.is_temporary(p)]),
    )


def write_report(layout: Layout, report: dict) -> None:
    fs.atomic_write_bytes(layout.path("report.json"), json.dumps(report, indent=2, sort_keys=True).encode())
