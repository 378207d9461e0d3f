"""Quality stage: keep a transcript or reject it with a reason.

``judge`` is the whole policy, a pure function: the first failing rule wins, in this order —
empty transcript, duration out of bounds, confidence below the minimum, speaking rate (characters
per second, spaces included) outside the bounds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import apache_beam as beam

from corpus.progress import progress
from schemas.records import Rejection, Transcript
from transforms.routing import route, with_outputs

STAGE = "quality"


@dataclass(frozen=True)
class QualityConfig:
    min_confidence: float = 0.6
    min_chars_per_s: float = 5.0
    max_chars_per_s: float = 25.0
    min_clip_s: float = 4.0
    max_clip_s: float = 20.0
    tolerance_s: float = 0.05  # clip edges sit on a 10 ms grid

    def validate(self) -> "QualityConfig":
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be within 0..1, got {self.min_confidence}")
        if not 0.0 <= self.min_chars_per_s <= self.max_chars_per_s:
            raise ValueError("need 0 <= min_chars_per_s <= max_chars_per_s, got "
                             f"{self.min_chars_per_s} and {self.max_chars_per_s}")
        return self


def judge(t: Transcript, cfg: QualityConfig) -> Optional[Tuple[str, str]]:
    """None to keep, else (reason, detail)."""
    d = t.segment.duration_s
    if not t.text.strip():
        return "empty_transcript", "the model heard no words"
    if d < cfg.min_clip_s - cfg.tolerance_s:
        return "too_short", f"{d:.2f} s < {cfg.min_clip_s:g} s"
    if d > cfg.max_clip_s + cfg.tolerance_s:
        return "too_long", f"{d:.2f} s > {cfg.max_clip_s:g} s"
    if t.confidence < cfg.min_confidence:
        return "low_confidence", f"{t.confidence:.3f} < {cfg.min_confidence:g}"
    rate = t.chars_per_s
    if rate < cfg.min_chars_per_s:
        return "speaking_rate_low", f"{rate:.1f} chars/s < {cfg.min_chars_per_s:g}"
    if rate > cfg.max_chars_per_s:
        return "speaking_rate_high", f"{rate:.1f} chars/s > {cfg.max_chars_per_s:g}"
    return None


class _JudgeFn(beam.DoFn):
    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg

    def process(self, t: Transcript):
        verdict = judge(t, self.cfg)
        if verdict is None:
            progress().add(kept=1)
            yield t
        else:
            yield from route([Rejection.for_segment(t.segment, STAGE, *verdict)])


class Quality(beam.PTransform):
    """Transcript → kept Transcript (main) and Rejection (``rejected``)."""

    def __init__(self, cfg: QualityConfig):
        super().__init__()
        self.cfg = cfg.validate()

    def expand(self, transcripts):
        return transcripts | "Judge" >> with_outputs(beam.ParDo(_JudgeFn(self.cfg)), main="kept")
