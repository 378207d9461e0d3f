"""Per-clip audio scores: how much is speech, how wide the band, how clipped, how noisy.

Pure numpy over a clip's samples and the source's 10 ms frame data, cheap enough to run on every
clip before it is transcribed (``benchmarks/quality_gates.py`` measures each):

* ``speech_ratio``: share of the clip's 10 ms frames that Silero VAD calls speech.
* ``bandwidth_hz``: the highest frequency whose long-term power is within ``BAND_DB`` of the
  clip's speech band (its loudest bins below 4 kHz). Telephone audio stops near 3.4 kHz and
  audio upsampled from 16 kHz at 8 kHz, however high the file's own rate.
* ``clipping``: the share of samples within ``CLIP_NEAR`` (10 %) of the clip's peak. A natural
  peak is a handful of samples (≤ 0.06 % in the real recordings measured here); a clipped
  waveform puts its whole plateau there (1–11 % for speech clipped at 30–60 % of its peak), also
  when it was clipped and then scaled down, and also after resampling, whose ripple spreads a
  plateau over a few per cent of the peak level.
* ``snr_db``: speech-to-noise ratio from frame energies: mean power of the speech frames over the
  noise floor, the mean of the quietest ``NOISE_SHARE`` of frames (the pauses, or the noise under
  speech when there are none), with the noise taken out of the speech power.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from schemas.records import ClipScores

BAND_DB = 50.0
CLIP_NEAR = 0.10  # a sample within 10 % of the peak counts as on the plateau
NOISE_SHARE = 0.10
MAX_SNR_DB = 90.0


def speech_ratio(speech_frames: np.ndarray) -> Optional[float]:
    if speech_frames is None or not len(speech_frames):
        return None
    return round(float(np.mean(speech_frames)), 4)


def bandwidth_hz(x: np.ndarray, sample_rate: int, nfft: int = 1024) -> float:
    """Highest frequency with power within ``BAND_DB`` of the clip's speech band (Welch spectrum,
    Blackman-Harris window: its -92 dB sidelobes keep a sharp band edge from leaking upwards)."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) < nfft:
        return 0.0
    hop = nfft // 2
    n = (len(x) - nfft) // hop + 1
    frames = np.lib.stride_tricks.as_strided(x, shape=(n, nfft), strides=(x.strides[0] * hop, x.strides[0]))
    if n > 160:  # the long-term spectrum needs no more than a couple of hundred frames
        frames = frames[np.linspace(0, n - 1, 160).astype(np.int64)]
    spec = np.fft.rfft(frames * _window(nfft), axis=1)
    power = np.mean(spec.real ** 2 + spec.imag ** 2, axis=0) + 1e-20
    db = 10 * np.log10(power)
    db = np.convolve(np.pad(db, 1, mode="edge"), np.ones(3) / 3, mode="valid")  # one odd bin is not a band
    freqs = np.arange(len(db)) * sample_rate / nfft
    speech_band = db[(freqs >= 100) & (freqs <= 4000)]
    if not len(speech_band):
        return 0.0
    ref = float(np.percentile(speech_band, 95))
    above = np.flatnonzero(db >= ref - BAND_DB)
    return round(float(freqs[above[-1]]), 1) if len(above) else 0.0


def _window(n: int) -> np.ndarray:
    k = np.arange(n) / n
    return (0.35875 - 0.48829 * np.cos(2 * np.pi * k) + 0.14128 * np.cos(4 * np.pi * k)
            - 0.01168 * np.cos(6 * np.pi * k)).astype(np.float32)


def clipping(x: np.ndarray) -> float:
    """Share of samples within ``CLIP_NEAR`` of the clip's peak: a plateau at the peak level."""
    a = np.abs(np.asarray(x, dtype=np.int32 if np.asarray(x).dtype == np.int16 else np.float32))
    if not len(a):
        return 0.0
    peak = float(a.max())
    if peak <= 0:
        return 0.0
    return round(int(np.count_nonzero(a >= peak * (1 - CLIP_NEAR))) / len(a), 6)


def snr_db(frame_db: np.ndarray, speech_frames: Optional[np.ndarray] = None) -> Optional[float]:
    """Speech-to-noise ratio (dB) of a clip from its 10 ms frame energies (dBFS)."""
    if frame_db is None or len(frame_db) < 10:
        return None
    p = 10 ** (np.asarray(frame_db, dtype=np.float64) / 10)
    k = max(1, int(len(p) * NOISE_SHARE))
    noise = float(np.mean(np.sort(p)[:k]))
    sp = p[speech_frames] if speech_frames is not None and np.any(speech_frames) else p
    signal = max(float(np.mean(sp)) - noise, 0.0)
    if noise <= 1e-12:
        return MAX_SNR_DB
    if signal <= 0:
        return 0.0 if signal == 0 else -MAX_SNR_DB
    return round(float(min(MAX_SNR_DB, 10 * np.log10(signal / noise))), 2)


def of_clip(samples: np.ndarray, sample_rate: int, frame_db: np.ndarray,
            speech_frames: Optional[np.ndarray] = None) -> ClipScores:
    """All of the above for one clip: int16 ``samples``, and its frames' energies and speech decisions."""
    return ClipScores(
        speech_ratio=speech_ratio(speech_frames) if speech_frames is not None else None,
        bandwidth_hz=bandwidth_hz(samples.astype(np.float32) / 32768.0, sample_rate),
        clipping=clipping(samples),
        snr_db=snr_db(frame_db, speech_frames))
