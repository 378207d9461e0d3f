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
* ``snr_db``: speech-to-noise ratio. The noise is what is not speech: the frames that Silero VAD
  calls non-speech (at least ``EDGE_S`` away from speech, so that no onset, decay or breath
  counts) in the clip and up to ``CONTEXT_S`` around it (``FAR_CONTEXT_S`` where none lie that
  near: under music the VAD can hear speech for tens of seconds), less the transients among them
  (frames more than ``TRANSIENT_DB`` above their median: a cough, a click, a laugh between sentences, which
  are the recording's own sounds, not a floor under the speech); the mean power of the rest. The
  speech power is the mean power of the clip's speech frames less that noise. A background whose
  level rises under the speech (a gust, a roll of thunder) is not in the pauses; the second
  opinion sees it: the floor under the speech itself, the lowest 50 ms power within
  ``FLOOR_WINDOW_S`` around each speech frame (speech dips between syllables and words; a steady
  background fills the dips). The lower of the two counts. The floor also bounds the pauses: at
  10–20 dB SNR the VAD misses whole words under a pump or music, and pauses that hold them read as
  loud as the speech; a background's mean lies a median 3–11 dB over the floor under the speech
  (90th percentile 5–16 dB, the most for music at 0 dB), so the pauses' noise counts at most
  ``PAUSE_OVER_FLOOR_DB`` (12 dB) over that floor. A background that never pauses leaves
  few non-speech frames; then WADA-SNR (Kim & Stern 2008) judges the waveform alone: speech
  amplitudes follow a Gamma distribution of shape 0.4, noise a Gaussian one, and the mixture's
  log-mean minus mean-log tells their ratio apart, with no pause needed (on clean real speech it
  reads 9–40 dB, too low to serve as a second opinion). ``benchmarks/gates_real.py`` measures the
  error against known mixtures of real speech with real music and noise.
* ``rt60_s``: reverberation, from how fast sound dies away where speech stops. Dry speech falls by
  tens of dB within a few frames at the end of a sound; in a room the tail decays at 60 dB per
  RT60, and nothing falls faster than that. In each octave band from 250 Hz to 8 kHz (the STFT of
  23 ms windows on the 10 ms frame grid: a stop in one band is often a fade in the full band), a
  free decay is ``DECAY_FRAMES`` frames that fall at least ``DECAY_MIN_DB`` without rising by more
  than 1 dB, from within 25 dB of the band's level to above its floor; the score is 60 dB over
  the ``DECAY_PERCENTILE``th percentile of their rates. A room rarely changes within a recording,
  and one clip holds few decays, so the segment stage pools the decays of all of a source's clips
  (``decay_rates`` per clip, ``rt60_from_rates`` over them) and gives every clip the source's
  value. On real speech in simulated rooms (``benchmarks/gates_real.py``), per source: 0.18–0.26
  dry, 0.29–0.33 at RT60 0.3 s, 0.57–0.64 at RT60 0.8 s (per clip 0.15–0.29, 0.28–0.38, 0.55–0.75).
  None with fewer than ``MIN_DECAYS`` decays.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.fft

from schemas.records import ClipScores

BAND_DB = 50.0
CLIP_NEAR = 0.10  # a sample within 10 % of the peak counts as on the plateau
NOISE_SHARE = 0.10
MAX_SNR_DB = 90.0
CONTEXT_S = 5.0  # non-speech frames this far around the clip count towards its noise
FAR_CONTEXT_S = 30.0  # ... and this far where there are none that near
EDGE_S = 0.25  # non-speech frames this close to speech are left out of the noise (onsets, decays, breaths)
SHORT_EDGE_S = 0.1  # the margin where the pauses are too short for EDGE_S
TRANSIENT_DB = 10.0  # non-speech frames this far above their median are the recording's own sounds
FLOOR_WINDOW_S = 4.0  # the floor under speech: the lowest 50 ms power within this window
PAUSE_OVER_FLOOR_DB = 12.0  # the pauses' noise is at most this far over the floor under the speech
MIN_NOISE_S = 0.3  # fewer non-speech frames than this: the VAD-based estimate is not used
WADA_SHAPE = 0.4
MIN_SNR_DB = -20.0
DECAY_BANDS_HZ = ((250, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000))
DECAY_FRAMES = 12
DECAY_MIN_DB = 6.0
DECAY_PERCENTILE = 90.0
MIN_DECAYS = 20


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


def snr_db(frame_db: np.ndarray, speech_frames: Optional[np.ndarray] = None, start: int = 0,
           end: Optional[int] = None, samples: Optional[np.ndarray] = None,
           hop_s: float = 0.01) -> Optional[float]:
    """Speech-to-noise ratio (dB) of the clip ``frame_db[start:end]`` (10 ms frame energies in dBFS
    of the whole source, with its VAD speech mask): the lower of the estimates from the noise between
    the speech around it (when there are pauses) and from the floor under the speech; WADA-SNR of its
    ``samples`` without a VAD."""
    end = len(frame_db) if end is None else end
    if frame_db is None or end - start < 10:
        return None
    db = np.asarray(frame_db, dtype=np.float64)
    p = 10 ** (db[start:end] / 10)
    estimates = []
    if speech_frames is not None and np.any(speech_frames[start:end]):
        sp = np.asarray(speech_frames, dtype=bool)
        speech = float(np.mean(p[sp[start:end]]))
        # the floor under the speech needs no pause: a single utterance with no silence around it
        # (a file of one sentence) is judged by it alone
        floor = float(np.mean(_floor_under(p, hop_s)[sp[start:end]]))
        estimates += _pause_estimate(db, sp, start, end, speech, floor, hop_s)
        estimates.append(_ratio_db(speech - floor, floor))
    if not estimates and samples is not None and len(samples) >= 1000:
        estimates.append(wada_snr_db(samples))
    if not estimates:  # no VAD and no samples: the quietest frames are the floor
        k = max(1, int(len(p) * NOISE_SHARE))
        noise = float(np.mean(np.sort(p)[:k]))
        estimates.append(_ratio_db(float(np.mean(p)) - noise, noise))
    return round(min(estimates), 2)


def _pause_estimate(db: np.ndarray, sp: np.ndarray, start: int, end: int, speech: float, floor: float,
                    hop_s: float) -> list:
    """[SNR] from the non-speech frames nearest the clip: within ``CONTEXT_S``, else ``FAR_CONTEXT_S``
    (the VAD takes music at 10 dB for speech for tens of seconds); [] where there are none."""
    for context_s in (CONTEXT_S, FAR_CONTEXT_S):
        ctx = int(round(context_s / hop_s))
        a, b = max(0, start - ctx), min(len(db), end + ctx)
        for edge_s in (EDGE_S, SHORT_EDGE_S):  # pauses too short for the wide margin: a narrow one
            edge = int(round(edge_s / hop_s))
            near = np.convolve(sp[a:b].astype(np.int32), np.ones(2 * edge + 1, dtype=np.int32), mode="same") > 0
            noise_frames = db[a:b][~near]
            if len(noise_frames) * hop_s >= MIN_NOISE_S:
                steady = noise_frames[noise_frames <= np.median(noise_frames) + TRANSIENT_DB]
                # words the VAD missed are not the background: pauses far louder than the floor under
                # the speech hold speech
                noise = min(float(np.mean(10 ** (steady / 10))), floor * 10 ** (PAUSE_OVER_FLOOR_DB / 10))
                return [_ratio_db(speech - noise, noise)]
    return []


def _floor_under(p: np.ndarray, hop_s: float) -> np.ndarray:
    """Each frame's floor: the lowest 50 ms mean power within ``FLOOR_WINDOW_S`` around it."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d
    smooth = uniform_filter1d(p, max(1, int(round(0.05 / hop_s))), mode="nearest")
    return minimum_filter1d(smooth, max(1, int(round(FLOOR_WINDOW_S / hop_s))), mode="nearest")


def _ratio_db(signal: float, noise: float) -> float:
    if noise <= 1e-12:
        return MAX_SNR_DB
    if signal <= 0:
        return MIN_SNR_DB
    return float(np.clip(10 * np.log10(signal / noise), MIN_SNR_DB, MAX_SNR_DB))


_WADA_TABLE = None


def _wada_table():
    """G = log E|x| − E log|x| of Gamma(0.4) speech plus Gaussian noise, for SNRs −20..60 dB.

    Computed once from a fixed-seed simulation of the model (the published table is this curve)."""
    global _WADA_TABLE
    if _WADA_TABLE is None:
        rng = np.random.default_rng(0)
        n = 400_000
        s = rng.gamma(WADA_SHAPE, 1.0, n) * rng.choice([-1.0, 1.0], n)
        s /= np.sqrt(np.mean(s ** 2))
        g = rng.standard_normal(n)
        snrs = np.arange(-20.0, 60.5, 0.5)
        vals = []
        for snr in snrs:
            x = np.abs(s + g * 10 ** (-snr / 20)) + 1e-20
            vals.append(np.log(np.mean(x)) - np.mean(np.log(x)))
        _WADA_TABLE = (snrs, np.maximum.accumulate(np.asarray(vals)))  # sampling noise at low SNR
    return _WADA_TABLE


def wada_snr_db(x: np.ndarray) -> float:
    """Blind SNR (dB) of a waveform, no pause needed: WADA-SNR, clamped to −20..60 dB."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    a = a[a > 0]
    if len(a) < 100:
        return MAX_SNR_DB
    a /= a.max()
    g = float(np.log(np.mean(a)) - np.mean(np.log(np.maximum(a, 1e-10))))
    snrs, vals = _wada_table()  # vals rise with the SNR
    return float(np.interp(g, vals, snrs))


def band_db(x: np.ndarray, sample_rate: int, hop: int) -> list:
    """Energies (dB) of ``x`` in each octave of ``DECAY_BANDS_HZ`` below Nyquist, one per ``hop`` samples."""
    a = np.asarray(x)
    x = np.ascontiguousarray(a, dtype=np.float32) / (32768.0 if a.dtype == np.int16 else 1.0)
    nfft = 1 << int(np.ceil(np.log2(max(2, 0.023 * sample_rate))))
    if len(x) < nfft + hop:
        return []
    n = (len(x) - nfft) // hop + 1
    frames = np.lib.stride_tricks.as_strided(x, shape=(n, nfft), strides=(x.strides[0] * hop, x.strides[0]))
    spec = scipy.fft.rfft(frames * np.hanning(nfft).astype(np.float32), axis=1)  # float32: ≈ 10× numpy's
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    bands = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in DECAY_BANDS_HZ if hi <= sample_rate / 2 + 1], axis=1)
    power = (spec.real ** 2 + spec.imag ** 2) @ bands.astype(np.float32)
    return list(10 * np.log10(power.T.astype(np.float64) + 1e-12))


def decay_rates(x: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """Rates (dB per second, falling) of the free decays in a clip's octave bands."""
    k = DECAY_FRAMES
    t = (np.arange(k) - (k - 1) / 2) * hop / sample_rate
    out = []
    bands = band_db(x, sample_rate, hop)
    if not bands or len(bands[0]) < k + 10:
        return np.zeros(0)
    levels, floors = np.percentile(np.stack(bands), [95, 10], axis=1)  # one call: the bands are equally long
    for db, level, floor in zip(bands, levels, floors):
        w = np.lib.stride_tricks.sliding_window_view(db, k)
        ok = ((w[:, 0] >= level - 25) & (w[:, -1] >= floor + 3) & (w[:, 0] - w[:, -1] >= DECAY_MIN_DB)
              & np.all(np.diff(w, axis=1) <= 1.0, axis=1))
        out.append(-(w[ok] - w[ok].mean(axis=1, keepdims=True)) @ t / np.sum(t * t))
    return np.concatenate(out) if out else np.zeros(0)


def rt60_from_rates(rates) -> Optional[float]:
    """Reverberation time (s) from decay rates (one clip's, or all of a source's clips' pooled)."""
    rates = np.asarray(rates, dtype=np.float64)
    if len(rates) < MIN_DECAYS:
        return None
    rate = float(np.percentile(rates, DECAY_PERCENTILE))
    return round(60.0 / rate, 3) if rate > 0 else None


def of_clip(samples: np.ndarray, sample_rate: int, frame_db: np.ndarray, speech_frames: Optional[np.ndarray],
            start: int, end: int, hop_s: float) -> ClipScores:
    """All of the above for the clip ``[start, end)`` (frames) of a source: its int16 ``samples``, and
    the source's frame energies and speech decisions (the noise around the clip counts too)."""
    return ClipScores(
        speech_ratio=speech_ratio(speech_frames[start:end]) if speech_frames is not None else None,
        bandwidth_hz=bandwidth_hz(samples.astype(np.float32) / 32768.0, sample_rate),
        clipping=clipping(samples),
        snr_db=snr_db(frame_db, speech_frames, start, end, samples, hop_s))  # rt60_s: per source, from all its clips' decays


def rt60_s(x: np.ndarray, sample_rate: int, hop: int) -> Optional[float]:
    """Reverberation time (s) of one clip from its own decays (the segment stage pools a source's)."""
    return rt60_from_rates(decay_rates(x, sample_rate, hop))


def source_rt60(decays) -> Optional[float]:
    """Reverberation time (s) of a source from the decays of all its clips (one clip holds few)."""
    return rt60_from_rates(np.concatenate(decays)) if len(decays) else None
