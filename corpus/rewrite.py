"""Rewrite committed shards: merge partial ones (compaction) or drop samples (a redo).

Samples are copied member by member (no decode): each sample's ``.flac`` and ``.txt`` bytes are
kept, its ``.json`` gets the new shard's name. New shards are written, in a work area, with
indices after every existing one, ``samples_per_shard`` samples each, in the old shards' order;
the caller commits them and the deletion of the old shards in one journaled commit, so readers
never see a sample twice or not at all.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import webdataset as wds

from corpus.guard import CorpusDamaged
from corpus.shards import TAR_MTIME, TAR_USER, json_bytes, shard_name, table_bytes
from schemas import tables
from storage import fs


@dataclass
class Rewritten:
    new_shards: List[str]  # names (without .tar) written in the work area
    dropped: int  # samples left out
    kept: int


def read_samples(tar_path: str) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """(key, {ext: bytes}) for each sample of a shard, in order."""
    with fs.local_copy(tar_path) as local, tarfile.open(local, "r") as tf:
        key, sample = None, {}
        for m in tf:
            if not m.isfile():
                continue
            base, _, ext = m.name.partition(".")
            if key is not None and base != key:
                yield key, sample
                sample = {}
            key = base
            sample[ext] = tf.extractfile(m).read()
        if key is not None:
            yield key, sample


def _samples(tar: str):
    try:
        yield from read_samples(tar)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorpusDamaged(f"{tar}: not a readable tar ({type(e).__name__}: {e}); nothing is rewritten") from e


def _manifest_rows(manifest_path: str) -> Dict[str, dict]:
    if not fs.exists(manifest_path):
        raise CorpusDamaged(f"{manifest_path}: missing; its shard is not rewritten around the hole")
    try:
        t = pq.read_table(io.BytesIO(fs.read_bytes(manifest_path)))
    except (pa.ArrowException, OSError) as e:
        raise CorpusDamaged(f"{manifest_path}: not a readable Parquet file ({e})") from e
    return {r["key"]: r for r in t.to_pylist()}


def _check_digest(path: str, expected, rel: str) -> None:
    """Refuse to rewrite a file whose bytes are not the ones its run published (when the run recorded them)."""
    want = expected.get(rel) if expected is not None else None
    if want is None or getattr(want, "sha256", None) is None:
        return
    sha, size = fs.digest(path)
    if (sha, size) != (want.sha256, want.size):
        raise CorpusDamaged(f"{path}: its bytes are not the ones run {want.run} published (size {size}, recorded "
                            f"{want.size}); nothing is rewritten")


def rewrite(shards_dir: str, manifest_dir: str, names: Sequence[str], keep: Callable[[str, dict], bool],
            out_shards: str, out_manifest: str, prefix: str, first_index: int, samples_per_shard: int,
            expected=None) -> Rewritten:
    """Copy the samples of shards ``names`` for which ``keep(key, manifest_row)`` into new shards.

    ``expected`` ({"shards/NAME.tar": checksum record}, ``corpus.integrity``) makes each shard and
    manifest part be checked against its published checksum first. A shard whose manifest rows and
    tar members differ is refused (``CorpusDamaged``): a hole is never rewritten around.
    """
    out, batch, dropped, kept = [], [], 0, 0
    index = first_index

    def flush():
        nonlocal index, batch
        if batch:
            name = shard_name(prefix, index)
            _write(out_shards, out_manifest, name, batch)
            out.append(name)
            index += 1
            batch = []

    for name in names:
        tar, part = fs.join(shards_dir, name + ".tar"), fs.join(manifest_dir, name + ".parquet")
        _check_digest(tar, expected, f"shards/{name}.tar")
        _check_digest(part, expected, f"manifest/{name}.parquet")
        rows = _manifest_rows(part)
        seen = set()
        for key, sample in _samples(tar):
            row = rows.get(key)
            if row is None:
                raise CorpusDamaged(f"{tar}: sample {key} has no row in {part}; nothing is rewritten")
            seen.add(key)
            if not keep(key, row):
                dropped += 1
                continue
            batch.append((key, sample, row))
            kept += 1
            if len(batch) >= samples_per_shard:
                flush()
        missing = sorted(set(rows) - seen)
        if missing:  # the work area is discarded: nothing of this rewrite is published
            raise CorpusDamaged(f"{part}: {len(missing)} rows have no sample in {tar} ({missing[0]} ...); nothing "
                                f"is rewritten")
    flush()
    return Rewritten(out, dropped, kept)


def _write(shards_dir: str, manifest_dir: str, name: str, batch) -> None:
    rows = []

    def write_tar(f):
        tw = wds.TarWriter(f, user=TAR_USER, group=TAR_USER, mtime=TAR_MTIME)
        try:
            for key, sample, row in batch:
                meta = json.loads(sample["json"]) if "json" in sample else {}
                meta["shard"] = name
                out = {"__key__": key}
                for ext, data in sample.items():
                    out[ext] = json_bytes(meta) if ext == "json" else data
                tw.write(out)
                rows.append({**row, "shard": name})
        finally:
            tw.close()

    fs.atomic_write(fs.join(shards_dir, name + ".tar"), write_tar)
    schema = tables.MANIFEST
    fs.atomic_write_bytes(fs.join(manifest_dir, name + ".parquet"),
                          table_bytes([{k: r.get(k) for k in schema.names} for r in rows], schema))


def shard_sizes(manifest_dir: str, names: Sequence[str]) -> Dict[str, int]:
    """Samples per shard, from the manifest parts."""
    sizes = {}
    for name in names:
        p = fs.join(manifest_dir, name + ".parquet")
        sizes[name] = pq.read_metadata(io.BytesIO(fs.read_bytes(p))).num_rows if fs.exists(p) else 0
    return sizes


def shards_holding(manifest_dir: str, names: Sequence[str], source_ids: set) -> List[str]:
    """The shards (of ``names``) that hold a sample of one of ``source_ids``."""
    found = []
    for name in names:
        p = fs.join(manifest_dir, name + ".parquet")
        if not fs.exists(p):
            continue
        ids = pq.read_table(io.BytesIO(fs.read_bytes(p)), columns=["source_id"]).column("source_id")
        if set(pc.unique(ids).to_pylist()) & source_ids:
            found.append(name)
    return found
