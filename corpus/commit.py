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
"""
from __future__ import annotations

import datetime
import json
from typing import Callable, Dict, List, Sequence, Tuple

from storage import fs

JOURNAL = "_journal"


def _journal_path(root: str, tag: str) -> str:
    return fs.join(root, JOURNAL, f"{tag}.json")


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def commit(root: str, tag: str, moves: Sequence[Tuple[str, str]], record: dict,
           deletes: Sequence[str] = (), before_apply: Callable[[], None] = lambda: None) -> dict:
    """Publish ``moves`` (work file → corpus file) and ``deletes`` atomically as run ``tag``."""
    record = {**record, "run": tag, "published_at": now_iso()}
    plan = {"run": tag, "moves": [list(m) for m in moves], "deletes": list(deletes), "record": record}
    fs.atomic_write_bytes(_journal_path(root, tag), json.dumps(plan, indent=1, sort_keys=True).encode())
    before_apply()
    _apply(root, plan)
    return record


def _apply(root: str, plan: dict) -> None:
    for src, dst in plan["moves"]:
        if fs.exists(src):
            fs.move(src, dst)
        elif not fs.exists(dst):
            raise FileNotFoundError(f"commit {plan['run']}: {src} is gone and {dst} was never written")
    for path in plan["deletes"]:
        fs.delete_if_exists(path)
    fs.atomic_write_bytes(fs.join(root, "runs", f"{plan['run']}.json"),
                          json.dumps(plan["record"], indent=2, sort_keys=True).encode())
    fs.delete_if_exists(_journal_path(root, plan["run"]))


def recover(root: str, log: Callable[[str], None] = lambda m: None) -> Dict[str, List[str]]:
    """Finish or undo every interrupted commit; returns {"finished": [...], "undone": [...]}."""
    done = {"finished": [], "undone": []}
    for path in fs.list_dir(fs.join(root, JOURNAL), suffix=".json"):
        if fs.is_temporary(path):
            continue
        plan = json.loads(fs.read_bytes(path))
        tag = plan["run"]
        if all(fs.exists(s) or fs.exists(d) for s, d in plan["moves"]):
            _apply(root, plan)
            done["finished"].append(tag)
            log(f"finished publishing run {tag}, which an interrupted command had left half done")
        else:
            for _, dst in plan["moves"]:
                fs.delete_if_exists(dst)
            fs.delete_if_exists(fs.join(root, "runs", f"{tag}.json"))
            fs.delete_if_exists(path)
            done["undone"].append(tag)
            log(f"undid run {tag}'s interrupted publish (its files were incomplete); its sources will be "
                f"processed again")
    return done
