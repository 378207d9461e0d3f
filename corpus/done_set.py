"""Data the driver hands to every worker through storage rather than through the job graph.

A run's done set (millions of source ids, for a big corpus), the speakers the corpus already
knows and the published clips' fingerprints and transcripts (the dedup index) are written once by
the driver into the run's work area and read by each worker process on first use. The file name
carries a digest of its content, so a process that caches what it read by path can never see
stale content, and the job graph holds only the path.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
from typing import FrozenSet, Iterable, List

import pyarrow as pa
import pyarrow.parquet as pq

from storage import fs


def write_lookup(folder: str, stem: str, lines: Iterable[str]) -> str:
    """Write ``lines`` to ``folder/{stem}-{digest}.txt`` (atomically) and return its path."""
    body = "".join(f"{line}\n" for line in lines).encode()
    path = fs.join(folder, f"{stem}-{hashlib.sha256(body).hexdigest()[:16]}.txt")
    fs.atomic_write_bytes(path, body)
    return path


def write_table_lookup(folder: str, stem: str, table: pa.Table) -> str:
    """Write ``table`` to ``folder/{stem}-{digest}.parquet`` (atomically) and return its path."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    body = buf.getvalue()
    path = fs.join(folder, f"{stem}-{hashlib.sha256(body).hexdigest()[:16]}.parquet")
    fs.atomic_write_bytes(path, body)
    return path


def read_table_lookup(path: str) -> pa.Table:
    """A table written by ``write_table_lookup``."""
    return pq.read_table(io.BytesIO(fs.read_bytes(path)))


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
