"""Speech with exact ground truth, synthesised with espeak-ng: for the demo, tests and benchmarks.

``build_recording`` speaks sentences, trims each to its voiced extent, and joins them with known
pauses over a low noise floor, returning where every sentence starts and ends. Tests then check
that no clip boundary falls inside a sentence.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A journey of a thousand miles begins with a single step forward.",
    "She sells sea shells by the sea shore every summer morning.",
    "Reading aloud every evening helps children learn new words quickly.",
    "The old lighthouse keeper watched the ships pass through the fog.",
    "Fresh bread from the corner bakery smells wonderful at dawn.",
    "Mountains covered in snow shine brightly under the winter sun.",
    "He carefully wrote the letter and sealed it with red wax.",
    "The orchestra played the final movement with great passion.",
    "Bright stars filled the sky above the quiet desert camp.",
    "Every library card opens a door to a world of stories.",
    "The train to the northern city leaves at half past seven.",
]


def espeak_binary() -> str:
    found = shutil.which("espeak-ng") or shutil.which("espeak")
    if not found:
        raise RuntimeError("espeak-ng not found: apt-get install espeak-ng")
    return found


def speak(text: str, sample_rate: int = 22050, voice: str = "en-us", words_per_min: int = 165,
          pitch: int = 50) -> np.ndarray:
    """espeak-ng's rendering of ``text`` as float32 mono at ``sample_rate``."""
    import soxr
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.wav")
        subprocess.run([espeak_binary(), "-v", voice, "-s", str(words_per_min), "-p", str(pitch),
                        "-w", path, text], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        x, sr = sf.read(path, dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate).astype(np.float32)
    return x


def trim(x: np.ndarray, rel: float = 1e-3) -> np.ndarray:
    """``x`` without its leading and trailing near-silence (below ``rel`` of its peak)."""
    idx = np.flatnonzero(np.abs(x) > rel * float(np.max(np.abs(x)) or 1.0))
    return x[idx[0]: idx[-1] + 1] if len(idx) else x[:0]


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray  # float32 mono
    sample_rate: int
    spans: Tuple[Tuple[float, float], ...]  # (start_s, end_s) of each sentence
    texts: Tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    def write(self, path: str, subtype: str = "PCM_16") -> str:
        sf.write(path, self.audio, self.sample_rate, subtype=subtype)
        return path


def build_recording(texts: Sequence[str], pauses_s: Sequence[float], sample_rate: int = 22050,
                    lead_s: float = 0.5, tail_s: float = 0.5, noise_db: float = -65.0,
                    gain_db: float = 0.0, seed: int = 0, voices: Optional[List[str]] = None) -> Recording:
    """Sentences joined by ``pauses_s`` (one fewer than sentences) over white noise at ``noise_db``."""
    if len(pauses_s) != len(texts) - 1:
        raise ValueError("need one pause between each pair of sentences")
    parts, spans = [np.zeros(int(round(lead_s * sample_rate)), np.float32)], []
    n = len(parts[0])
    for i, text in enumerate(texts):
        voice = voices[i % len(voices)] if voices else "en-us"
        s = trim(speak(text, sample_rate, voice=voice)) * 0.5
        spans.append((n / sample_rate, (n + len(s)) / sample_rate))
        gap = np.zeros(int(round((pauses_s[i] if i < len(pauses_s) else tail_s) * sample_rate)), np.float32)
        parts += [s, gap]
        n += len(s) + len(gap)
    audio = np.concatenate(parts)
    rng = np.random.default_rng(seed)
    audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * (10 ** (noise_db / 20))
    audio = audio * (10 ** (gain_db / 20))
    return Recording(np.clip(audio, -1, 1).astype(np.float32), sample_rate, tuple(spans), tuple(texts))


def music(duration_s: float, sample_rate: int = 22050, seed: int = 0) -> np.ndarray:
    """Steady background music: a chord of harmonic tones with soft attacks, changing every half second."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    step = int(0.5 * sample_rate)
    roots = 220.0 * 2 ** (rng.integers(-5, 7, size=n // step + 1) / 12)
    env = np.minimum(1.0, np.arange(step) / (0.02 * sample_rate)) * np.exp(-np.arange(step) / (0.6 * sample_rate))
    for k, root in enumerate(roots):
        a, b = k * step, min(n, (k + 1) * step)
        if a >= n:
            break
        for ratio in (1.0, 1.25, 1.5, 2.0):  # a major chord and its octave
            for h, amp in ((1, 1.0), (2, 0.5), (3, 0.25)):
                out[a:b] += amp * env[: b - a] * np.sin(2 * np.pi * root * ratio * h * t[a:b])
    return (out / (np.max(np.abs(out)) or 1.0) * 0.5).astype(np.float32)


def pink_noise(duration_s: float, sample_rate: int = 22050, seed: int = 0) -> np.ndarray:
    """Noise with a 1/f spectrum (like room and street noise), peak-normalised to 0.5."""
    n = int(round(duration_s * sample_rate))
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec))
    spec[1:] /= np.sqrt(f[1:])
    x = np.fft.irfft(spec, n)
    return (x / np.max(np.abs(x)) * 0.5).astype(np.float32)


def mix(rec: Recording, bed: np.ndarray, snr_db: float) -> Recording:
    """``rec`` over ``bed`` (looped to length) so that speech power over its spans / bed power = ``snr_db``."""
    x = rec.audio.astype(np.float64)
    bed = np.resize(bed.astype(np.float64), len(x))
    sr = rec.sample_rate
    speech = np.concatenate([x[int(a * sr):int(b * sr)] for a, b in rec.spans])
    gain = np.sqrt(np.mean(speech ** 2) / (np.mean(bed ** 2) * 10 ** (snr_db / 10)))
    y = x + gain * bed
    peak = np.max(np.abs(y))
    if peak > 0.99:
        y = y * (0.99 / peak)
    return Recording(y.astype(np.float32), sr, rec.spans, rec.texts)
