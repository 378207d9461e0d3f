"""The audit view's audio: the sampled clips copied out of their shards into ``report_audio/``.

A page that opens from disk cannot read inside a tar, and embedding the audio would make the page
as large as its clips, so each sampled clip's FLAC bytes are copied (not re-encoded) into a small
folder beside ``report.html``. Each file is written under a temporary name and renamed, through
``storage.fs``, so local, ``gs://`` and ``s3://`` corpora work alike. A clip already copied by an
earlier report is not copied again; files no longer on the page are removed after it is written.
Only the tar headers up to the wanted members are read: each member's data is skipped by a seek.
"""
from __future__ import annotations

import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Set, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from corpus.guard import check_key, check_shard_name
from corpus.layout import Layout
from storage import fs

AUDIO_DIR = "report_audio"


@dataclass(frozen=True)
class Wanted:
    """One sampled clip: the shard folder (``shards`` or ``rejected_shards``), the shard's name and the key."""

    folder: str
    shard: str
    key: str

    @property
    def file_name(self) -> str:
        kind = "kept" if self.folder == "shards" else "rejected"
        return f"{kind}_{self.shard}_{self.key}.flac"


@dataclass(frozen=True)
class Extracted:
    path: Optional[str]  # relative to report.html; None when the clip was not found
    meta: dict  # the sample's .json ({} when not found)
    note: str = ""  # why there is no audio


def read_members(path: str, names: Set[str]) -> Dict[str, bytes]:
    """The members ``names`` of the tar at ``path``, reading headers until all are found."""
    found: Dict[str, bytes] = {}
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if member.name in names:
                    found[member.name] = tar.extractfile(member).read()
                    if len(found) == len(names):
                        break
    return found


def extract(layout: Layout, wanted: Iterable[Wanted], log=lambda m: None) -> Dict[Wanted, Extracted]:
    """Copy each wanted clip's audio into ``report_audio/`` (unless already there) and read its metadata."""
    by_tar: Dict[Tuple[str, str], Set[Wanted]] = defaultdict(set)
    for w in wanted:
        by_tar[(w.folder, w.shard)].add(w)
    out: Dict[Wanted, Extracted] = {}
    audio_dir = layout.path(AUDIO_DIR)
    if by_tar:
        log(f"copying {sum(len(v) for v in by_tar.values())} sampled clips out of {len(by_tar)} shards")
    for (folder, shard), items in sorted(by_tar.items()):
        check_shard_name(shard, f"a manifest row of {folder}")
        for w in items:
            check_key(w.key, f"a manifest row of {folder}/{shard}")
        tar_path = layout.path(folder, shard + ".tar")
        if not fs.exists(tar_path):
            for w in items:
                out[w] = Extracted(None, {}, f"its shard {folder}/{shard}.tar is missing")
            continue
        members = read_members(tar_path, {f"{w.key}.{ext}" for w in items for ext in ("flac", "json")})
        for w in sorted(items, key=lambda w: w.key):
            flac, meta = members.get(f"{w.key}.flac"), members.get(f"{w.key}.json")
            if flac is None:
                out[w] = Extracted(None, {}, f"{w.key} is not in {folder}/{shard}.tar")
                continue
            target = fs.join(audio_dir, w.file_name)
            if not fs.exists(target):
                fs.atomic_write_bytes(target, flac)
            out[w] = Extracted(f"{AUDIO_DIR}/{w.file_name}", json.loads(meta) if meta else {})
    return out


def prune(layout: Layout, keep: Set[str]) -> int:
    """Delete the files in ``report_audio/`` whose names are not in ``keep``; returns how many."""
    removed = 0
    for p in fs.list_dir(layout.path(AUDIO_DIR)):
        if p.rsplit("/", 1)[-1] not in keep:
            fs.delete_if_exists(p)
            removed += 1
    return removed
