"""A long source's checkpoints: what its parts have finished, kept until the source is published.

A source longer than ``--commit_every_hours`` is worked in parts (``run.waves``, ``transforms.parts``),
and each part leaves its results here, in ``_work/plan-{key}/parts/{source_id}/``:

* ``first.jsonl`` — the first part's pass over the whole source: its rejection rows, its result
  row and the clips kept for transcription (with their scores, voice embeddings and fingerprints);
  ``clips.pack`` beside it holds those clips' audio (``audio.flac``), which later parts and the
  shard writer read by offset;
* ``asr-NNNN.jsonl`` — part N's transcripts and transcription failures. Its presence is what marks
  the part done: it is written last, in one atomic put.

Records are stored as JSON with their types named, and only the record types listed here are read
back (nothing in the work area is ever unpickled or executed). Floats round-trip exactly (``repr``),
so a record read back equals the one written, and what is built from it is byte-identical.
"""
from __future__ import annotations

import base64
import dataclasses
import json
from enum import Enum
from typing import Iterable, List, Optional

import numpy as np

from schemas.outcomes import Stage, Status
from schemas.records import ClipScores, Rejection, Segment, Source, SourceResult, Transcript
from storage import fs

FIRST = "first.jsonl"
PACK = "clips.pack"
_RECORDS = {c.__name__: c for c in (Source, ClipScores, Segment, Transcript, Rejection, SourceResult)}
_ENUMS = {c.__name__: c for c in (Stage, Status)}


def encode(x):
    """A record (or any value inside one) as JSON-ready data that ``decode`` turns back into an equal value."""
    if dataclasses.is_dataclass(x) and type(x).__name__ in _RECORDS:
        return {"@": type(x).__name__, **{f.name: encode(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, Enum):
        return {"@e": type(x).__name__, "v": x.value}
    if isinstance(x, bytes):
        return {"@b": base64.b64encode(x).decode()}
    if isinstance(x, tuple):
        return {"@t": [encode(v) for v in x]}
    if isinstance(x, list):
        return [encode(v) for v in x]
    if isinstance(x, np.ndarray):
        return {"@a": x.dtype.str, "shape": list(x.shape), "b": base64.b64encode(x.tobytes()).decode()}
    if isinstance(x, np.generic):
        return {"@n": x.dtype.str, "v": x.item()}
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    raise TypeError(f"a checkpoint cannot hold a {type(x).__name__}")


def decode(d):
    if isinstance(d, list):
        return [decode(v) for v in d]
    if not isinstance(d, dict):
        return d
    if "@" in d:
        cls = _RECORDS[d["@"]]
        return cls(**{k: decode(v) for k, v in d.items() if k != "@"})
    if "@e" in d:
        return _ENUMS[d["@e"]](d["v"])
    if "@b" in d:
        return base64.b64decode(d["@b"])
    if "@t" in d:
        return tuple(decode(v) for v in d["@t"])
    if "@a" in d:
        return np.frombuffer(base64.b64decode(d["b"]), dtype=np.dtype(d["@a"])).reshape(d["shape"]).copy()
    if "@n" in d:
        return np.dtype(d["@n"]).type(d["v"])
    raise ValueError(f"not a checkpoint record: {sorted(d)[:5]}")


class PartStore:
    """One source's checkpoints in ``folder`` (any storage)."""

    def __init__(self, folder: str):
        self.folder = folder

    @property
    def pack_dir(self) -> str:
        return self.folder

    def asr_path(self, part: int) -> str:
        return fs.join(self.folder, f"asr-{part:04d}.jsonl")

    def _write(self, path: str, records: Iterable) -> None:
        fs.atomic_write_bytes(path, "".join(json.dumps(encode(r), sort_keys=True) + "\n" for r in records).encode())

    def _read(self, path: str) -> List:
        return [decode(json.loads(line)) for line in fs.read_bytes(path).decode().split("\n") if line]

    def write_first(self, records: List) -> None:
        self._write(fs.join(self.folder, FIRST), records)

    def read_first(self) -> Optional[List]:
        path = fs.join(self.folder, FIRST)
        return self._read(path) if fs.exists(path) else None

    def write_asr(self, part: int, records: Iterable) -> int:
        """Part ``part``'s transcripts and failures, in key order (so the file is the same on every run)."""
        rows = sorted(records, key=lambda r: (r.key or "", type(r).__name__))
        self._write(self.asr_path(part), rows)
        return len(rows)

    def read_asr(self, part: int) -> List:
        return self._read(self.asr_path(part))

    def has_asr(self, part: int) -> bool:
        return fs.exists(self.asr_path(part))
