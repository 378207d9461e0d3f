"""Publishing a run as one commit, and finishing a commit a crash interrupted.

A finished run's files sit in its work area. Publishing moves them into place, which on an object
store takes a copy and a delete per file and can take many seconds; a crash half way must leave
neither a corpus with samples the done-set does not know about (a rerun would write them again)
nor one with rows whose samples are missing. So publishing is a journaled commit:

1. the plan (every move and delete, and the run's record) is written to ``_journal/{tag}.json``;
2. the moves and deletes are applied; each is idempotent (a move whose target exists is done);
3. ``runs/{tag}.json`` is written: this is the commit point — the done-set, the report and every
   tool count a run's rows only once its record exists;
4. the journal is deleted.

``recover`` runs before anything else reads or writes the output (under its lock): a journal
whose moves can all still be completed is rolled forward; one that cannot (a file of the plan is
gone from both places) is rolled back, deleting what it had already moved, so its sources are
simply processed again.

The journal is written only while the lock is held (``check`` is called before and after it is
written), and it records the sha256 and size of every file it moves in. ``recover`` treats a
journal as untrusted input: its run tag, and every path it names, must be the corpus's own
(``corpus.guard``), or the command stops naming the journal; a roll forward never overwrites a
file it did not write, and an undo deletes only files whose checksum is the one the journal
recorded, so another run's files that took the same names stay. The checksums and the deleted
files go into the run's record, where ``pipelines.verify`` checks them.
"""
from __future__ import annotations

import datetime
import json
from typing import Callable, Dict, List, Sequence, Tuple

from corpus import guard
from storage import fs

JOURNAL = "_journal"


def _journal_path(root: str, tag: str) -> str:
    return fs.join(root, JOURNAL, f"{tag}.json")


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def _rel(root: str, path: str) -> str:
    rel = guard.relative(root, path)
    if rel is None:
        raise ValueError(f"{path} is not inside the corpus {root}")
    return rel


def commit(root: str, tag: str, moves: Sequence[Tuple[str, str]], record: dict,
           deletes: Sequence[str] = (), before_apply: Callable[[], None] = lambda: None) -> dict:
    """Publish ``moves`` (work file → corpus file) and ``deletes`` atomically as run ``tag``.

    ``before_apply`` (the lock's check) runs before the journal is written and again after: a run
    that lost its lock writes nothing, and one that loses it while writing takes its journal back.
    """
    guard.check_run_tag(tag, f"run {tag!r}")
    before_apply()
    digests = {}
    for src, dst in moves:
        sha, size = fs.digest(src)
        digests[_rel(root, dst)] = [sha, size]
    rel_moves = [[_rel(root, s), _rel(root, d)] for s, d in moves]
    rel_deletes = [_rel(root, p) for p in deletes]
    record = {**record, "run": tag, "published_at": now_iso(),
              "checksums": {rel: {"sha256": sha, "size": size} for rel, (sha, size) in sorted(digests.items())},
              "deleted": sorted(rel_deletes)}
    plan = {"run": tag, "moves": rel_moves, "deletes": rel_deletes, "digests": digests, "record": record}
    journal = _journal_path(root, tag)
    fs.atomic_write_bytes(journal, json.dumps(plan, indent=1, sort_keys=True).encode())
    try:
        before_apply()
    except BaseException:
        fs.delete_if_exists(journal)  # nothing of it was applied: the journal goes with the lost lock
        raise
    _apply(root, plan)
    return record


def _abs(root: str, path: str) -> str:
    """A journal's path: relative to the corpus root (absolute in journals of older versions)."""
    return path if path.startswith("/") or "://" in path else fs.join(root, path)


def check_plan(root: str, plan, source: str) -> dict:
    """The journal ``plan`` when every name and path in it is the corpus's own, else ``CorpusDamaged``."""
    if not isinstance(plan, dict) or not isinstance(plan.get("moves"), list) \
            or not isinstance(plan.get("deletes", []), list) or not isinstance(plan.get("record"), dict):
        raise guard.CorpusDamaged(f"{source}: not a commit journal (moves, deletes and record expected)")
    tag = guard.check_run_tag(plan.get("run"), source)
    if source.rsplit("/", 1)[-1] != f"{tag}.json":
        raise guard.CorpusDamaged(f"{source}: its run tag {tag!r} is not its file name")
    for move in plan["moves"]:
        if not (isinstance(move, list) and len(move) == 2 and all(isinstance(x, str) for x in move)):
            raise guard.CorpusDamaged(f"{source}: a move {move!r} is not a pair of paths")
        src, dst = (_abs(root, x) for x in move)
        guard.under(root, src, (guard.WORK,), "the move source", source)
        _published(root, dst, "the move target", source)
    for path in plan.get("deletes", []):
        if not isinstance(path, str):
            raise guard.CorpusDamaged(f"{source}: a delete {path!r} is not a path")
        _published(root, _abs(root, path), "a delete", source)
    digests = plan.get("digests", {})
    if not isinstance(digests, dict):
        raise guard.CorpusDamaged(f"{source}: its digests are not a table")
    return plan


def _published(root: str, path: str, what: str, source: str) -> None:
    guard.check_published_name(guard.under(root, path, guard.PUBLISHED_DIRS, what, source), source)


def _apply(root: str, plan: dict) -> None:
    for src, dst in plan["moves"]:
        src, dst = _abs(root, src), _abs(root, dst)
        if fs.exists(src):
            fs.move(src, dst)
        elif not fs.exists(dst):
            raise FileNotFoundError(f"commit {plan['run']}: {src} is gone and {dst} was never written")
    for path in plan["deletes"]:
        fs.delete_if_exists(_abs(root, path))
    fs.atomic_write_bytes(fs.join(root, "runs", f"{plan['run']}.json"),
                          json.dumps(plan["record"], indent=2, sort_keys=True).encode())
    fs.delete_if_exists(_journal_path(root, plan["run"]))


def _ours(root: str, plan: dict, rel_dst: str, dst: str) -> bool:
    """True when ``dst`` holds the file this commit moved there (a journal of an older version, which has
    no checksums, is taken at its word)."""
    if not fs.exists(dst):
        return False
    want = (plan.get("digests") or {}).get(rel_dst if not rel_dst.startswith("/") and "://" not in rel_dst
                                           else guard.relative(root, rel_dst) or rel_dst)
    if not want:
        return not plan.get("digests")
    return list(fs.digest(dst)) == list(want)


def recover(root: str, log: Callable[[str], None] = lambda m: None) -> Dict[str, List[str]]:
    """Finish or undo every interrupted commit; returns {"finished": [...], "undone": [...]}.

    Raises ``CorpusDamaged`` (naming the journal) for a journal whose names or paths are not the
    corpus's own; nothing of it is applied.
    """
    guard.check_no_links(root)
    done = {"finished": [], "undone": []}
    journals = [p for p in fs.list_dir(fs.join(root, JOURNAL), suffix=".json") if not fs.is_temporary(p)]
    plans = []
    for path in journals:
        try:
            plan = json.loads(fs.read_bytes(path))
        except ValueError as e:
            raise guard.CorpusDamaged(f"{path}: not a readable commit journal ({e})") from e
        plans.append((path, check_plan(root, plan, path)))
    for path, plan in plans:
        tag = plan["run"]
        moves = [(s, _abs(root, s), d, _abs(root, d)) for s, d in plan["moves"]]
        ours = {d: _ours(root, plan, rd, d) for _, _, rd, d in moves}
        if all(ours[d] or (fs.exists(s) and not fs.exists(d)) for _, s, _, d in moves):
            _apply(root, plan)
            done["finished"].append(tag)
            log(f"finished publishing run {tag}, which an interrupted command had left half done")
        else:
            for _, _, _, dst in moves:
                if ours[dst]:
                    fs.delete_if_exists(dst)
            fs.delete_if_exists(fs.join(root, "runs", f"{tag}.json"))
            fs.delete_if_exists(path)
            done["undone"].append(tag)
            log(f"undid run {tag}'s interrupted publish (its files were incomplete); its sources will be "
                f"processed again")
    return done
