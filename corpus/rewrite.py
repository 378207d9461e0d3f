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

import pyarrow.compute as pc
import pyarrow.parquet as pq
import webdataset as wds

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


def _manifest_rows(manifest_path: str) -> Dict[str, dict]:
    if not fs.exists(manifest_path):
        return {}
    t = pq.read_table(io.BytesIO(fs.read_bytes(manifest_path)))
    return {r["key"]: r for r in t.to_pylist()}


def rewrite(shards_dir: str, manifest_dir: str, names: Sequence[str], keep: Callable[[str, dict], bool],
            out_shards: str, out_manifest: str, prefix: str, first_index: int, samples_per_shard: int) -> Rewritten:
    """Copy the samples of shards ``names`` for which ``keep(key, manifest_row)`` into new shards."""
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
        rows = _manifest_rows(fs.join(manifest_dir, name + ".parquet"))
        for key, sample in read_samples(fs.join(shards_dir, name + ".tar")):
            row = rows.get(key)
            if row is None:
                raise ValueError(f"shard {name}: sample {key} has no manifest row; run the command again "
                                 f"after checking {manifest_dir}")
            if not keep(key, row):
                dropped += 1
                continue
            batch.append((key, sample, row))
            kept += 1
            if len(batch) >= samples_per_shard:
                flush()
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
