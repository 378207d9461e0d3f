"""Write one WebDataset shard and its manifest part.

A shard holds samples in key order, each as ``{key}.flac``, ``{key}.txt``, ``{key}.json``, written
with webdataset's ``TarWriter`` at a fixed mtime, so the same samples always give the same bytes.
The FLAC bytes are copied from the sources' clip packs (no decode, no re-encode). The tar and its
``manifest/{shard}.parquet`` are written under temporary names and renamed when complete.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Dict, List, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas import tables
from schemas.records import Transcript
from storage import fs

TAR_MTIME = 946684800.0  # 2000-01-01: fixed so reruns are byte-identical
TAR_USER = "speechmill"


@dataclass(frozen=True)
class ShardInfo:
    name: str
    n_samples: int
    duration_s: float
    n_bytes: int


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}"


def json_bytes(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class PackReader:
    """Reads clip bytes from clip packs, keeping one open handle per pack."""

    def __init__(self):
        self._open: Dict[str, object] = {}

    def read(self, path: str, offset: int, length: int) -> bytes:
        f = self._open.get(path)
        if f is None:
            f = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
            self._open[path] = f
        f.seek(offset)
        data = f.read(length)
        if len(data) != length:
            raise IOError(f"clip pack {path} is short: wanted {length} bytes at {offset}, got {len(data)}")
        return data

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


def table_bytes(rows: List[dict], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf, compression="zstd")
    return buf.getvalue()


def write_shard(shards_dir: str, manifest_dir: str, name: str,
                transcripts: Sequence[Transcript]) -> ShardInfo:
    """A shard of kept samples and its manifest part."""
    entries = [(t.key, t.segment, t.text, tables.sample_metadata(t, name), tables.manifest_row(t, name))
               for t in transcripts]
    return _write_entries(shards_dir, manifest_dir, name, entries, tables.MANIFEST)


def write_rejected_shard(shards_dir: str, manifest_dir: str, name: str, rejections: Sequence) -> ShardInfo:
    """A shard of rejected clips (``--keep_rejected_audio``): the same layout, the rejected row as metadata."""
    entries = []
    for r in rejections:
        row = {**tables.rejected_row(r, run=""), "shard": name}
        row.pop("run")
        entries.append((r.key, r.segment, r.text or "", row, row))
    return _write_entries(shards_dir, manifest_dir, name, entries, tables.REJECTED_MANIFEST)


def _write_entries(shards_dir: str, manifest_dir: str, name: str, entries, schema: pa.Schema) -> ShardInfo:
    items = sorted(entries, key=lambda e: e[0])
    keys = [e[0] for e in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"shard {name} would hold duplicate keys")
    tar_path = fs.join(shards_dir, name + ".tar")
    reader = PackReader()
    written = {"bytes": 0}

    def write_tar(f):
        counting = _Counting(f)
        tw = wds.TarWriter(counting, user=TAR_USER, group=TAR_USER, mtime=TAR_MTIME)
        try:
            for key, seg, text, meta, _ in items:
                tw.write({
                    "__key__": key,
                    "flac": reader.read(seg.pack_path, seg.pack_offset, seg.pack_length),
                    "txt": text.encode("utf-8"),
                    "json": json_bytes(meta),
                })
        finally:
            tw.close()
        written["bytes"] = counting.n

    try:
        fs.atomic_write(tar_path, write_tar)
    finally:
        reader.close()
    rows = [{k: e[4].get(k) for k in schema.names} for e in items]
    fs.atomic_write_bytes(fs.join(manifest_dir, name + ".parquet"), table_bytes(rows, schema))
    return ShardInfo(name, len(items), round(sum(e[1].duration_s for e in items), 3), written["bytes"])


class _Counting:
    """A write-only file wrapper that counts bytes (tarfile's stream mode needs only write)."""

    def __init__(self, f):
        self._f, self.n = f, 0

    def write(self, data) -> int:
        self.n += len(data)
        self._f.write(data)
        return len(data)

    def close(self) -> None:  # the caller owns the underlying file
        pass

    def flush(self) -> None:
        pass
