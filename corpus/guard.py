"""A corpus is untrusted input: every path derived from its contents stays inside it.

Corpora are downloaded, synced from buckets and written by other people, so a command that opens
one treats its journals, run records and tables like any other input. One rule: every path a
command derives from corpus content (a journal's moves and deletes, a run tag, a shard name from a
run record or a manifest row, a sample key) is checked against the corpus's own naming rules and
resolved inside the corpus root (or, on an object store, under its prefix) before it is used, and
refused otherwise; cleaning never follows a symbolic link. A refused corpus raises
``CorpusDamaged``, whose message names the file, and the commands stop with exit status 2.
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
from typing import Iterable, Optional

from schemas.keys import is_valid_key
from storage import fs

# the folders a commit publishes into, and the folders of a corpus that commands clean or write
PUBLISHED_DIRS = ("shards", "manifest", "rejected_shards", "rejected_manifest", "rejected", "sources", "speakers")
WORK = "_work"
MANAGED_DIRS = PUBLISHED_DIRS + ("runs", "_journal", WORK, "_staging", "report_audio", "packs")

RUN_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}-\d{6,}$")
TABLE_FILE = re.compile(r"^run-[A-Za-z0-9][A-Za-z0-9_-]{0,99}\.parquet$")


class CorpusDamaged(ValueError):
    """The corpus cannot be trusted as it is: the message names the file and what is wrong with it."""


def _is_under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def real_root(root: str) -> str:
    """The corpus root as compared against: local roots with their links resolved (the root itself may be
    a link the user made), object-store prefixes normalised."""
    if fs.is_local(root):
        return os.path.realpath(fs.local_path(root))
    scheme, rest = root.split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest)}"


def inside(root: str, path: str, what: str, source: str) -> str:
    """``path`` when it lies inside the corpus at ``root`` (links resolved), else ``CorpusDamaged``.

    ``what`` says what the path is, ``source`` which corpus file named it.
    """
    base = real_root(root)
    if fs.is_local(root):
        if not fs.is_local(path):
            raise CorpusDamaged(f"{source}: {what} {path!r} is not inside the corpus {root}")
        resolved = os.path.realpath(fs.local_path(path))
        if not _is_under(resolved, base) or resolved == base:
            raise CorpusDamaged(f"{source}: {what} {path!r} is not inside the corpus {root}")
        return path
    if fs.is_local(path) or "://" not in path:
        raise CorpusDamaged(f"{source}: {what} {path!r} is not inside the corpus {root}")
    scheme, rest = path.split("://", 1)
    norm = f"{scheme}://{posixpath.normpath(rest)}"
    if norm != f"{scheme}://{rest}" or not _is_under(norm, base) or norm == base:
        raise CorpusDamaged(f"{source}: {what} {path!r} is not inside the corpus {root}")
    return path


def under(root: str, path: str, folders: Iterable[str], what: str, source: str) -> str:
    """``path`` relative to the corpus root when it is inside it and in one of its ``folders``
    (``shards``, ``_work`` ...), else ``CorpusDamaged``."""
    inside(root, path, what, source)
    base = real_root(root)
    resolved = os.path.realpath(fs.local_path(path)) if fs.is_local(root) else path
    rel = resolved[len(base) + 1:] if fs.is_local(root) else _relative(root, path)
    if rel.split("/", 1)[0] not in tuple(folders) or "/" not in rel:
        raise CorpusDamaged(f"{source}: {what} {path!r} is not in {' or '.join(f'{f}/' for f in folders)} of "
                            f"the corpus")
    return rel


def _relative(root: str, path: str) -> str:
    scheme, rest = path.split("://", 1)
    base = real_root(root)
    return f"{scheme}://{posixpath.normpath(rest)}"[len(base) + 1:]


def check_run_tag(tag, source: str) -> str:
    if not isinstance(tag, str) or not RUN_TAG.match(tag):
        raise CorpusDamaged(f"{source}: run tag {tag!r} is not a run tag (letters, digits, '-' and '_')")
    return tag


def check_shard_name(name, source: str) -> str:
    """A shard's name without ``.tar`` (``shard-000012``)."""
    if not isinstance(name, str) or not SHARD_NAME.match(name):
        raise CorpusDamaged(f"{source}: {name!r} is not a shard name (prefix-NNNNNN)")
    return name


def check_key(key, source: str) -> str:
    if not isinstance(key, str) or not is_valid_key(key):
        raise CorpusDamaged(f"{source}: sample key {key!r} is not a valid key ([A-Za-z0-9_-], at most 80)")
    return key


def check_published_name(rel: str, source: str) -> str:
    """A path a run record lists, relative to the corpus root (``shards/shard-000003.tar``,
    ``sources/run-TAG.parquet``): one of the published folders and a name of its kind."""
    folder, _, name = (rel or "").partition("/")
    ok = folder in PUBLISHED_DIRS and "/" not in name
    if ok and folder in ("shards", "rejected_shards"):
        ok = name.endswith(".tar") and bool(SHARD_NAME.match(name[:-4]))
    elif ok and folder in ("manifest", "rejected_manifest"):
        ok = name.endswith(".parquet") and bool(SHARD_NAME.match(name[:-8]))
    elif ok:
        ok = bool(TABLE_FILE.match(name))
    if not ok:
        raise CorpusDamaged(f"{source}: {rel!r} is not a file a run publishes")
    return rel


def check_no_links(root: str, folders: Iterable[str] = MANAGED_DIRS) -> None:
    """Refuse a local corpus whose managed folders, or the files in them, are symbolic links."""
    if not fs.is_local(root):
        return
    base = fs.local_path(root)
    for name in [*folders, "_lock.json", "report.html", "report.json"]:
        p = os.path.join(base, name)
        if os.path.islink(p):
            raise CorpusDamaged(f"{p} is a symbolic link; a corpus's own folders and files must not be links")
        if name in folders and os.path.isdir(p):
            for e in os.scandir(p):
                if e.is_symlink():
                    raise CorpusDamaged(f"{e.path} is a symbolic link; a corpus's own files must not be links")


def delete_tree(root: str, path: str, source: str = "cleaning") -> None:
    """Delete the folder ``path`` inside the corpus without following a link anywhere below it."""
    if fs.is_local(path):
        local = fs.local_path(path)
        if os.path.islink(local):
            raise CorpusDamaged(f"{local} is a symbolic link; it is not followed (remove it by hand)")
        if not os.path.lexists(local):
            return
        inside(root, path, "folder", source)
        shutil.rmtree(local)  # removes links inside the tree without entering them
        return
    inside(root, path, "folder", source)
    fs.delete_tree(path)


def relative(root: str, path: str) -> Optional[str]:
    """``path`` relative to ``root`` (None when it is not under it)."""
    r = root.rstrip("/")
    return path[len(r) + 1:] if path.startswith(r + "/") else None
