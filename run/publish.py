"""Publishing a finished run's work area into the corpus, the page rebuilt after it, and the leftovers
of dead runs cleaned under the lock."""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Iterable

from corpus import commit, guard
from corpus.layout import REJECTED_MANIFEST, REJECTED_SHARDS, WORK, Layout
from report import build_report
from storage import fs


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
        build_report(layout)
    except Exception as e:  # whatever broke the page must not fail the committed run
        print(f"[speechmill] warning: report.html was not rebuilt ({type(e).__name__}: {str(e)[:300]}); the run "
              f"is committed; 'python -m pipelines.report {layout.root}' builds it again", file=sys.stderr, flush=True)


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
    guard.check_no_links(layout.root)  # a linked _work/ or _staging/ is refused, never emptied
    if fs.is_local(work_root):
        local = fs.local_path(work_root)
        names = os.listdir(local) if os.path.isdir(local) else []
        stale = [n for n in names if n not in keep]
        for n in stale:
            guard.delete_tree(layout.root, os.path.join(local, n))
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
    if inside:
        guard.inside(layout.root, staging_dir, "the staging folder", "--staging_dir")
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
            if age >= min_age_s:  # a link is removed itself, never what it points to
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else fs.delete_if_exists(p)
                removed += 1
        return removed
    for p in fs.list_dir(staging_dir):
        if fs.is_temporary(p) and fs.modified_age_s(p) >= min_age_s:
            fs.delete_if_exists(p)
            removed += 1
    return removed
