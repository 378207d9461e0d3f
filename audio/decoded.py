"""A source decoded once into a scratch PCM file, with its frame energies.

The decode streams through ffmpeg once; samples go to a local scratch file (not memory) and the
energies are computed on the way. Clips are then read back by offset, as often as needed, without
a second decode. Memory stays flat in the length of the input; scratch disk is 2 bytes a sample.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

from audio.energy import FrameEnergy
from audio.ffmpeg import decode_stream

HOP_S = 0.01


@dataclass
class DecodedSource:
    pcm_path: str
    sample_rate: int
    n_samples: int
    hop: int  # samples per energy frame
    db: np.ndarray  # frame energies, dBFS

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate

    def read(self, start: int, end: int) -> np.ndarray:
        """int16 samples [start, end), clamped to the file."""
        start, end = max(0, int(start)), min(self.n_samples, int(end))
        if end <= start:
            return np.zeros(0, dtype=np.int16)
        return np.fromfile(self.pcm_path, dtype="<i2", count=end - start, offset=2 * start)

    def close(self) -> None:
        try:
            os.unlink(self.pcm_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "DecodedSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_to_scratch(path: str, sample_rate: int, scratch_dir: Optional[str] = None,
                      timeout_s: float = 3600.0) -> DecodedSource:
    """Decode ``path`` to mono int16 at ``sample_rate`` into a scratch file; raises ``DecodeError``."""
    hop = max(1, int(round(sample_rate * HOP_S)))
    energy = FrameEnergy(hop)
    fd, pcm_path = tempfile.mkstemp(prefix="speechmill-", suffix=".pcm", dir=scratch_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in decode_stream(path, sample_rate, timeout_s=timeout_s):
                out.write(chunk.tobytes())
                energy.push(chunk)
    except BaseException:
        os.unlink(pcm_path)
        raise
    return DecodedSource(pcm_path, sample_rate, energy.n_samples, hop, energy.db())
