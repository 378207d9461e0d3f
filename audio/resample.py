"""Audio brought to the rate a model hears (soxr, high quality): the ASR, the voice encoder, DNSMOS."""
from __future__ import annotations

import numpy as np
import soxr


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """float32 ``x`` at ``to_rate`` (unchanged, when the rates agree)."""
    x = np.asarray(x, dtype=np.float32)
    if from_rate != to_rate:
        x = soxr.resample(x, from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32)


def int16_to_float(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """int16 ``samples`` as float32 in [-1, 1) at ``to_rate``."""
    return resample(samples.astype(np.float32) / 32768.0, from_rate, to_rate)
