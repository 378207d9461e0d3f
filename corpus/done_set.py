"""Data the driver hands to every worker through storage rather than through the job graph.

A run's done set (millions of source ids, for a big corpus) and the speakers the corpus already
knows are written once by the driver into the run's work area and read by each worker process on
first use. The file name carries a digest of its content, so a process that caches what it read
by path can never see stale content, and the job graph holds only the path.
"""
from __future__ import annotations

import functools
import hashlib
import json
from typing import FrozenSet, Iterable, List

from storage import fs


def write_lookup(folder: str, stem: str, lines: Iterable[str]) -> str:
    """Write ``lines`` to ``folder/{stem}-{digest}.txt`` (atomically) and return its path."""
    body = "".join(f"{line}\n" for line in lines).encode()
    path = fs.join(folder, f"{stem}-{hashlib.sha256(body).hexdigest()[:16]}.txt")
    fs.atomic_write_bytes(path, body)
    return path


def _lines(path: str) -> List[str]:
    return [line for line in fs.read_bytes(path).decode().split("\n") if line]


@functools.lru_cache(maxsize=8)
def load_ids(path: str) -> FrozenSet[str]:
    """The ids in a lookup file (one per line), read once per process."""
    return frozenset(_lines(path))


@functools.lru_cache(maxsize=8)
def load_json_lines(path: str) -> tuple:
    """The JSON records in a lookup file (one per line), read once per process."""
    return tuple(json.loads(line) for line in _lines(path))
