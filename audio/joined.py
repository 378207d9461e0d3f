"""Recordings of known voices joined into one file, with the truth of who speaks when.

Real speech is the only fair test of telling voices apart (synthetic voices are far easier to tell
apart than two real people, and one real person varies far more than a synthetic voice). This joins
real recordings — one person's lines into a single-voice file, or two people's lines into a
conversation with short gaps or overlaps — and keeps each line's speech span, trimmed to where its
level rises above its quiet frames, as the truth that clips and speaker ids are measured against.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

RATE = 16000


@dataclass
class Joined:
    audio: np.ndarray  # float32, RATE
    spans: List[Tuple[float, float, str]] = field(default_factory=list)  # (start s, end s, voice) of each line

    @property
    def duration_s(self) -> float:
        return len(self.audio) / RATE

    def write(self, path: str) -> str:
        import soundfile as sf
        sf.write(path, self.audio, RATE, subtype="PCM_16")
        return path

    def voices(self) -> List[str]:
        return sorted({v for _, _, v in self.spans})

    def speech_s(self) -> float:
        return sum(e - s for s, e, _ in self.spans)


def speech_span(x: np.ndarray, rel_db: float = 40.0) -> Tuple[int, int]:
    """First and last sample of the 10 ms frames within ``rel_db`` of the line's loudest frame."""
    hop = RATE // 100
    n = max(1, len(x) // hop)
    db = 10 * np.log10(np.array([np.mean(np.square(x[i * hop:(i + 1) * hop], dtype=np.float64)) for i in range(n)])
                       + 1e-12)
    on = np.flatnonzero(db > db.max() - rel_db)
    if not len(on):
        return 0, 0
    return int(on[0] * hop), int(min(len(x), (on[-1] + 1) * hop))


def load(path: str) -> np.ndarray:
    """A recording as mono float32 at 16 kHz, trimmed to its speech."""
    import soundfile as sf
    import soxr
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != RATE:
        x = soxr.resample(x, sr, RATE).astype(np.float32)
    a, b = speech_span(x)
    return np.ascontiguousarray(x[a:b])


def join(lines: Sequence[Tuple[str, np.ndarray]], gaps: Sequence[float], lead_s: float = 0.5) -> Joined:
    """Lines ``(voice, audio)`` one after another; ``gaps[i]`` seconds between line i and i+1 (negative:
    the next line starts that long before this one ends, the two voices overlapping)."""
    if len(gaps) != max(0, len(lines) - 1):
        raise ValueError(f"need {max(0, len(lines) - 1)} gaps for {len(lines)} lines, got {len(gaps)}")
    starts, t = [], int(lead_s * RATE)
    for i, (_, x) in enumerate(lines):
        starts.append(t)
        if i < len(gaps):
            t = max(0, t + len(x) + int(round(gaps[i] * RATE)))
    total = max(s + len(x) for s, (_, x) in zip(starts, lines)) + int(lead_s * RATE)
    out = np.zeros(total, np.float32)
    spans = []
    for s, (voice, x) in zip(starts, lines):
        out[s:s + len(x)] += x
        spans.append((s / RATE, (s + len(x)) / RATE, voice))
    peak = float(np.max(np.abs(out))) if len(out) else 0.0
    if peak > 0.99:
        out *= 0.99 / peak
    return Joined(out, spans)


def voice_time(start: float, end: float, spans: Sequence[Tuple[float, float, str]]) -> Dict[str, float]:
    """Seconds of each voice's speech inside [start, end)."""
    out: Counter = Counter()
    for s, e, v in spans:
        out[v] += max(0.0, min(end, e) - max(start, s))
    return dict(out)


def majority(start: float, end: float, spans) -> Tuple[Optional[str], float]:
    """The voice with most speech in [start, end) and the seconds of other voices' speech in it."""
    t = voice_time(start, end, spans)
    if not t or max(t.values()) <= 0:
        return None, 0.0
    v = max(sorted(t), key=lambda k: t[k])
    return v, sum(x for k, x in t.items() if k != v)


def kept_share(clips: Sequence[Tuple[float, float]], spans) -> float:
    """Share of the truth's speech that lies inside the given clips."""
    total = sum(e - s for s, e, _ in spans)
    got = 0.0
    for s, e, _ in spans:
        for a, b in clips:
            got += max(0.0, min(b, e) - max(a, s))
    return got / total if total else 0.0


def purity(ids: Sequence[str], voices: Sequence[str]) -> Tuple[float, float]:
    """(share of clips whose id's majority voice is theirs, distinct ids per true voice)."""
    if not ids:
        return 1.0, 0.0
    by_id: Dict[str, Counter] = {}
    for i, v in zip(ids, voices):
        by_id.setdefault(i, Counter())[v] += 1
    pure = sum(c.most_common(1)[0][1] for c in by_id.values()) / len(ids)
    per_voice = [len({i for i, w in zip(ids, voices) if w == v}) for v in set(voices)]
    return pure, float(np.mean(per_voice))
