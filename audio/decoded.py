"""A source decoded once into a scratch PCM file, with its frame energies.

ffmpeg decodes once, straight into a local scratch file (not memory); the energies are then
computed in fixed-size chunks from that file, which is still in the page cache. Clips are then read back by offset, as often as needed, without
a second decode. Memory stays flat in the length of the input; scratch disk is 2 bytes a sample.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

from audio.energy import FrameEnergy
from audio.ffmpeg import decode_to_file

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
                      timeout_s: float = 3600.0, chunk_s: float = 30.0) -> DecodedSource:
    """Decode ``path`` to mono int16 at ``sample_rate`` into a scratch file; raises ``DecodeError``."""
    hop = max(1, int(round(sample_rate * HOP_S)))
    fd, pcm_path = tempfile.mkstemp(prefix="speechmill-", suffix=".pcm", dir=scratch_dir)
    os.close(fd)
    try:
        n = decode_to_file(path, pcm_path, sample_rate, timeout_s=timeout_s)
        energy = FrameEnergy(hop)
        chunk = hop * max(1, int(chunk_s / HOP_S))
        with open(pcm_path, "rb") as f:
            while True:
                data = np.fromfile(f, dtype="<i2", count=chunk)
                if not len(data):
                    break
                energy.push(data)
    except BaseException:
        os.unlink(pcm_path)
        raise
    return DecodedSource(pcm_path, sample_rate, n, hop, energy.db())
