"""A source decoded once into an unlinked scratch file, with its frame energies.

ffmpeg decodes once, straight into a scratch file that has no name (created and unlinked before
ffmpeg starts, written through an inherited descriptor): if the worker is killed, the kernel
frees it, so no scratch file ever stays behind. The energies — and then, with ``vad``, Silero
VAD's speech probabilities on the audio brought to a speaking level and resampled to 8 kHz — are
computed in fixed-size chunks from that file, which is still in the page cache; clips are then
read back by offset, as often as needed, without a second decode. Memory stays flat in the length of the input; scratch disk is 2
bytes a sample, bounded by ``DecodeLimits.max_bytes``.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soxr

from audio.energy import FrameEnergy
from audio.ffmpeg import DecodeLimits, decode_into
from audio.vad import RATE as VAD_RATE
from audio.vad import VadStream, on_grid

HOP_S = 0.01


@dataclass
class DecodedSource:
    scratch: object  # an anonymous file object holding the PCM
    sample_rate: int
    n_samples: int
    hop: int  # samples per energy frame
    db: np.ndarray  # frame energies, dBFS
    speech_probs: Optional[np.ndarray] = None  # per 32 ms frame (audio.vad), when asked for

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate

    @property
    def closed(self) -> bool:
        return self.scratch.closed

    def read(self, start: int, end: int) -> np.ndarray:
        """int16 samples [start, end), clamped to the file."""
        start, end = max(0, int(start)), min(self.n_samples, int(end))
        if end <= start:
            return np.zeros(0, dtype=np.int16)
        data = os.pread(self.scratch.fileno(), 2 * (end - start), 2 * start)
        return np.frombuffer(data, dtype="<i2").copy()

    def read_float(self, start: int, end: int) -> np.ndarray:
        """float32 samples in [-1, 1) [start, end), clamped to the file."""
        return self.read(start, end).astype(np.float32) / 32768.0

    def speech_on_grid(self) -> Optional[np.ndarray]:
        """The VAD's speech probabilities on the energy frames' grid (None without the VAD)."""
        if self.speech_probs is None:
            return None
        return on_grid(self.speech_probs, len(self.db), self.hop_s)

    def close(self) -> None:
        self.scratch.close()

    def __enter__(self) -> "DecodedSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_to_scratch(path: str, sample_rate: int, scratch_dir: Optional[str] = None,
                      timeout_s: float = 3600.0, chunk_s: float = 30.0,
                      limits: Optional[DecodeLimits] = None, vad: bool = False,
                      vad_device: str = "cpu") -> DecodedSource:
    """Decode ``path`` to mono int16 at ``sample_rate`` into anonymous scratch; raises ``DecodeError``.
    With ``vad``, Silero's speech probabilities too, the model on ``vad_device``."""
    limits = limits or DecodeLimits(timeout_s=timeout_s)
    hop = max(1, int(round(sample_rate * HOP_S)))
    scratch = tempfile.TemporaryFile(prefix="speechmill-", suffix=".pcm", dir=scratch_dir)
    try:
        n = decode_into(path, scratch.fileno(), sample_rate, limits)
        energy = FrameEnergy(hop)
        chunk = hop * max(1, int(chunk_s / HOP_S))
        fd = scratch.fileno()

        def chunks():
            for start in range(0, n, chunk):
                yield start, np.frombuffer(os.pread(fd, 2 * min(chunk, n - start), 2 * start), dtype="<i2")
        for _, data in chunks():
            energy.push(data)
        db = energy.db()
        probs = None
        if vad:  # a second pass, from the page cache: the VAD hears the file at a speaking level
            speech = _SpeechStream(sample_rate, n, vad_gain(db), vad_device)
            for start, data in chunks():
                speech.push(data, last=start + chunk >= n)
            probs = speech.finish()
    except BaseException:
        scratch.close()
        raise
    return DecodedSource(scratch, sample_rate, n, hop, db, probs)


VAD_LEVEL_DB = -25.0  # the level Silero hears every file at
VAD_MAX_GAIN_DB = 40.0


def vad_gain(db: np.ndarray) -> float:
    """Gain that brings a file's level (95th-percentile frame energy) to ``VAD_LEVEL_DB``: the voice
    detector is less sure of quiet speech, and a recording 35 dB down is still speech."""
    if not len(db):
        return 1.0
    level = float(np.percentile(db, 95))
    return float(10 ** (min(VAD_MAX_GAIN_DB, max(0.0, VAD_LEVEL_DB - level)) / 20))


class _SpeechStream:
    """int16 chunks at any rate → 8 kHz float32 (soxr, streaming; its low-quality filter is plenty for
    speech detection) → Silero VAD."""

    def __init__(self, sample_rate: int, n_samples: int, gain: float = 1.0, device: str = "cpu"):
        self.gain = gain
        self.vad = VadStream(total_samples=int(n_samples * VAD_RATE / sample_rate), device=device)
        self.resampler = None if sample_rate == VAD_RATE else soxr.ResampleStream(sample_rate, VAD_RATE, 1,
                                                                                  dtype="float32", quality="LQ")

    def push(self, data: np.ndarray, last: bool) -> None:
        x = data.astype(np.float32) * (self.gain / 32768.0)
        if self.gain > 1.0:
            np.clip(x, -1.0, 1.0, out=x)
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x, last=last)
        self.vad.push(x)

    def finish(self) -> np.ndarray:
        return self.vad.finish()
