"""Acoustic fingerprints (Chromaprint) of decoded audio, and the slice of a source's that covers a clip.

A fingerprint is one 32-bit sub-fingerprint per ``ITEM_S`` (≈ 0.124 s) of audio: Chromaprint's
default algorithm resamples to 11025 Hz and classifies chroma features over a sliding window, so
gain, codec and sample rate barely change the bits, and a time shift shifts the items. A source is
fingerprinted once, streaming its decoded samples; a clip's fingerprint is the run of items that
covers its span, so clips cost nothing more.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

try:  # pyacoustid's ctypes binding of libchromaprint
    import chromaprint
except ImportError:  # pragma: no cover - reported when the stage runs
    chromaprint = None

ITEM_S = 4096 / 3 / 11025  # one sub-fingerprint per third of a 4096-sample frame at 11025 Hz
# the audio one item describes: 20 frames (a 5-frame chroma filter, then classifiers up to 16 frames
# wide) from its start, ≈ 2.7 s; so a source of d seconds has ≈ (d - SPAN_S) / ITEM_S items
SPAN_S = 19 * ITEM_S + 4096 / 11025
CHUNK_S = 30.0  # samples fed per call while streaming a long source


class FingerprintUnavailable(RuntimeError):
    """libchromaprint (Debian ``libchromaprint1``) or pyacoustid is missing."""


def _require():
    if chromaprint is None:
        raise FingerprintUnavailable("audio deduplication needs pyacoustid and libchromaprint "
                                     "(apt-get install libchromaprint1; pip install pyacoustid)")
    return chromaprint


def of_blocks(blocks: Iterable[np.ndarray], sample_rate: int) -> np.ndarray:
    """Fingerprint of mono int16 sample blocks, in order (uint32 sub-fingerprints)."""
    cp = _require()
    fp = cp.Fingerprinter()
    fp.start(int(sample_rate), 1)
    fed = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype="<i2")
        if block.size:
            fp.feed(block.tobytes())
            fed += block.size
    if fed == 0:
        return np.zeros(0, np.uint32)
    encoded = fp.finish()
    items, _ = cp.decode_fingerprint(encoded if isinstance(encoded, bytes) else encoded.encode())
    return np.asarray(items, dtype=np.int64).astype(np.uint32)


def of_samples(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Fingerprint of mono int16 samples."""
    return of_blocks([samples], sample_rate)


def of_reader(read: Callable[[int, int], np.ndarray], n_samples: int, sample_rate: int) -> np.ndarray:
    """Fingerprint of ``read(a, b)`` over ``[0, n_samples)``, streamed ``CHUNK_S`` at a time."""
    step = max(1, int(CHUNK_S * sample_rate))
    return of_blocks((read(a, min(a + step, n_samples)) for a in range(0, n_samples, step)), sample_rate)


def clip_slice(source_fp: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """The items of a source's fingerprint whose audio is centred in ``[start_s, end_s)``.

    Item i describes ``[i * ITEM_S, i * ITEM_S + SPAN_S)``: taking the items that start in the clip
    would describe the next clip's audio too, and leave the last clip of a source with none.
    """
    a = max(0, int(round((start_s - SPAN_S / 2) / ITEM_S)))
    b = min(len(source_fp), max(a, int(round((end_s - SPAN_S / 2) / ITEM_S))))
    return source_fp[a:b]


def to_bytes(fp: np.ndarray) -> bytes:
    return np.ascontiguousarray(fp, dtype="<u4").tobytes()


def from_bytes(data) -> np.ndarray:
    if not data:
        return np.zeros(0, np.uint32)
    return np.frombuffer(bytes(data), dtype="<u4").astype(np.uint32)
