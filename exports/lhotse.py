"""A corpus as a Lhotse cut set in Lhotse Shar form, which Lhotse trains from as it reads tar shards.

Each published shard ``shards/NAME.tar`` (``corpus.published``) becomes one Shar shard:
``cuts.NNNNNN.jsonl.gz`` (one ``MonoCut`` per sample, with a supervision holding the transcript,
speaker and word alignment, and the sample's metadata in ``cut.custom``) and
``recording.NNNNNN.tar`` (each sample's audio bytes, copied as they are: no decode, no re-encode,
followed by its recording manifest). ``lhotse.CutSet.from_shar(in_dir=DIR)`` reads it back.

The export is written into a temporary folder beside ``DIR`` and renamed into place when complete,
so ``DIR`` holds either the previous export or the new one, never a part of one.

Example::

    >>> result = export_shar("corpus", "corpus/lhotse")
    >>> from lhotse import CutSet
    >>> cuts = CutSet.from_shar(in_dir=result.out)
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

import pyarrow.parquet as pq

from corpus.published import check_corpus, published_shards
from corpus.rewrite import read_samples
from run.lock import pid_alive
from storage import fs

AUDIO_EXTENSIONS = ("flac", "wav")
SHAR_FILE = re.compile(r"^(cuts\.\d{6}\.jsonl\.gz|recording\.\d{6}\.tar)$")
# fields of a sample's .json that become the cut, its recording or its supervision (not cut.custom)
_OWN_FIELDS = frozenset({"key", "text", "speaker", "words", "duration_s", "sample_rate", "flac_bytes"})
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)-[0-9a-f]+$")


class ExportError(ValueError):
    """The export cannot be made as asked (bad corpus, bad output folder, inconsistent shard)."""


@dataclass(frozen=True)
class ExportResult:
    out: str
    shards: int
    cuts: int
    hours: float


def default_out(corpus: str) -> str:
    if not fs.is_local(corpus):
        raise ExportError(f"{corpus} is not a local folder: pass --out DIR, a local folder for the export")
    return os.path.join(fs.local_path(corpus.rstrip("/")), "lhotse")


def sample_cut(key: str, audio: bytes, meta: dict, text: Optional[str] = None):
    """(cut, recording manifest) of one sample, both with Lhotse Shar placeholders for the audio."""
    from lhotse import MonoCut, Recording, SupervisionSegment
    from lhotse.shar.utils import to_shar_placeholder
    from lhotse.supervision import AlignmentItem

    try:
        recording = to_shar_placeholder(Recording.from_bytes(audio, recording_id=key))
    except Exception as e:  # soundfile's errors name no sample
        raise ExportError(f"sample {key}: its audio cannot be read ({type(e).__name__}: {e})") from e
    words = [AlignmentItem(symbol=w["word"], start=round(w["start_s"], 4),
                           duration=round(max(0.0, w["end_s"] - w["start_s"]), 4), score=w.get("confidence"))
             for w in meta.get("words") or []]
    supervision = SupervisionSegment(
        id=key, recording_id=key, start=0.0, duration=recording.duration, channel=0,
        text=meta.get("text", "") if text is None else text, speaker=meta.get("speaker"),
        alignment={"word": words} if words else None)
    custom = {k: v for k, v in meta.items() if k not in _OWN_FIELDS}
    cut = MonoCut(id=key, start=0.0, duration=recording.duration, channel=0, recording=recording,
                  supervisions=[supervision], custom=custom or None)
    return cut, recording


def check_out_dir(out: str) -> str:
    """The absolute local path of ``out``; refuses a folder that holds anything but a Shar export."""
    if not fs.is_local(out):
        raise ExportError(f"--out {out}: the export is written to a local folder")
    path = os.path.abspath(fs.local_path(out))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ExportError(f"--out {out} is a file, not a folder")
        foreign = sorted(n for n in os.listdir(path) if not SHAR_FILE.match(n))
        if foreign:
            raise ExportError(f"--out {out} holds {foreign[0]!r}{' and more' if len(foreign) > 1 else ''}, which is "
                              f"not part of a Lhotse Shar export; choose a new or empty folder")
    return path


def remove_leftovers(out: str) -> int:
    """Delete the temporary folders of exports to ``out`` whose process is gone; returns the count."""
    parent, name = os.path.split(out)
    removed = 0
    for entry in os.listdir(parent) if os.path.isdir(parent) else []:
        m = _LEFTOVER.match(entry)
        if m and m.group("name") == name and not pid_alive(int(m.group("pid"))):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
            removed += 1
    return removed


def _manifest_keys(manifest_path: str) -> List[str]:
    if not fs.exists(manifest_path):
        raise ExportError(f"the manifest part {manifest_path} of a published shard is missing")
    table = pq.read_table(io.BytesIO(fs.read_bytes(manifest_path)), columns=["key"])
    return table.column("key").to_pylist()


def shard_cuts(tar_path: str, manifest_path: str) -> Iterable[Tuple[object, object, bytes, str]]:
    """(cut, recording manifest, audio bytes, audio extension) for each sample of one shard, in order."""
    seen = []
    samples = read_samples(tar_path)
    while True:
        try:
            key, sample = next(samples)
        except StopIteration:
            break
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ExportError(f"{tar_path} cannot be read after {len(seen)} samples ({type(e).__name__}: {e})") from e
        ext = next((e for e in AUDIO_EXTENSIONS if e in sample), None)
        if ext is None:
            raise ExportError(f"{tar_path}: sample {key} has no audio ({', '.join(AUDIO_EXTENSIONS)})")
        try:
            meta = json.loads(sample["json"]) if "json" in sample else {}
        except ValueError as e:
            raise ExportError(f"{tar_path}: sample {key} has a .json that is not JSON ({e})") from e
        text = sample["txt"].decode("utf-8") if "txt" in sample else None
        cut, recording = sample_cut(key, sample[ext], meta, text)
        seen.append(key)
        yield cut, recording, sample[ext], ext
    listed = _manifest_keys(manifest_path)
    if sorted(listed) != sorted(seen):
        raise ExportError(f"{tar_path} and its manifest part {manifest_path} disagree: {len(seen)} samples in the "
                          f"shard, {len(listed)} rows in the manifest{', other keys' if len(seen) == len(listed) else ''}")


def _write_shard(tmp: str, index: int, cuts: Iterable[Tuple[object, object, bytes, str]]) -> Tuple[int, float]:
    from lhotse.shar.writers import JsonlShardWriter, TarWriter

    n, seconds = 0, 0.0
    with TarWriter(os.path.join(tmp, f"recording.{index:06d}.tar"), shard_size=None) as tar, \
            JsonlShardWriter(os.path.join(tmp, f"cuts.{index:06d}.jsonl.gz"), shard_size=None) as jsonl:
        for cut, recording, audio, ext in cuts:
            tar.write(f"{cut.id}.{ext}", io.BytesIO(audio))
            tar.write(f"{cut.id}.json", io.BytesIO((json.dumps(recording.to_dict()) + "\n").encode("utf-8")),
                      count=False)
            jsonl.write(cut)
            n += 1
            seconds += cut.duration
    return n, seconds


def export_shar(corpus: str, out: Optional[str] = None, log: Callable[[str], None] = lambda m: None,
                progress_s: float = 5.0) -> ExportResult:
    """Write the published samples of ``corpus`` as a Lhotse Shar cut set in ``out``; see the module doc."""
    check_corpus(corpus)
    out_path = check_out_dir(out if out is not None else default_out(corpus))
    shards = published_shards(corpus)
    if not shards:
        raise ExportError(f"{corpus} has no published shards: nothing to export")
    layout_root = corpus.rstrip("/")
    parent, name = os.path.split(out_path)
    os.makedirs(parent, exist_ok=True)
    if remove_leftovers(out_path):
        log("removed the temporary folders of an interrupted export")
    tmp = os.path.join(parent, f".{name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    log(f"exporting {len(shards)} published shards of {corpus} to {out_path} (Lhotse Shar)")
    n_shards, n_cuts, seconds = 0, 0, 0.0
    last = time.monotonic()
    try:
        for i, tar_path in enumerate(shards):
            shard = tar_path.rsplit("/", 1)[-1][:-len(".tar")]
            manifest = fs.join(layout_root, "manifest", shard + ".parquet")
            n, s = _write_shard(tmp, n_shards, shard_cuts(tar_path, manifest))
            if n:
                n_shards += 1
                n_cuts += n
                seconds += s
            if time.monotonic() - last >= progress_s or i + 1 == len(shards):
                last = time.monotonic()
                log(f"shard {i + 1}/{len(shards)}: {n_cuts} cuts, {seconds / 3600:.3f} h")
        _swap_in(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out_path, n_shards, n_cuts, round(seconds / 3600, 6))


def _swap_in(tmp: str, out: str) -> None:
    """Put the finished export at ``out``, replacing a previous one."""
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    parent, name = os.path.split(out)
    old = os.path.join(parent, f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)

