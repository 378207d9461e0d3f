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
