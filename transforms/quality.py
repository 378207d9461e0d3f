"""Quality: the gates every clip passes, each failure a row that names the gate and the value.

Two sets of rules, both pure functions:

* ``judge_audio`` — on the audio alone, run in the segment stage *before* transcription so a
  rejected clip costs no ASR: speech ratio (``not_speech``), bandwidth (``low_bandwidth``),
  clipping (``clipped``), speech-to-noise ratio (``noisy``), reverberation (``reverberant``),
  DNSMOS overall (``low_dnsmos``).
* ``judge`` — on the transcript: empty, duration out of bounds, fewer words than the minimum,
  confidence below the minimum,
  speaking rate (characters per second, spaces included) outside the bounds, and with
  ``sentence_end_only`` a transcript that does not end a sentence (``not_sentence_end``).

Then, per source, Emilia's speaking-rate rule: a clip whose rate lies outside Q1 − k·IQR … Q3 +
k·IQR of its own source's clips is rejected (``speaking_rate_outlier``), for sources with at
least ``rate_outlier_min_clips`` clips. The first failing rule wins; every rule can be turned off
(``None``).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np

from schemas.outcomes import Stage
from schemas.records import ClipScores, Rejection, Transcript
from transforms.gate_settings import AudioGates, QualityConfig  # noqa: F401  (their home)
from transforms.routing import route, with_outputs

STAGE = Stage.QUALITY


def judge_audio(s: ClipScores, g: AudioGates) -> Optional[Tuple[str, str]]:
    """None to keep, else (reason, detail) naming the score and the threshold."""
    if g.min_speech_ratio is not None and s.speech_ratio is not None and s.speech_ratio < g.min_speech_ratio:
        return "not_speech", f"speech_ratio {s.speech_ratio:.2f} < {g.min_speech_ratio:.2f}"
    if g.min_bandwidth_hz is not None and s.bandwidth_hz is not None and s.bandwidth_hz < g.min_bandwidth_hz:
        return "low_bandwidth", f"bandwidth_hz {s.bandwidth_hz:.0f} < {g.min_bandwidth_hz:.0f}"
    if g.max_clipping is not None and s.clipping is not None and s.clipping > g.max_clipping:
        return "clipped", f"clipping {s.clipping:.4f} > {g.max_clipping:.4f}"
    if g.min_snr_db is not None and s.snr_db is not None and s.snr_db < g.min_snr_db:
        return "noisy", f"snr_db {s.snr_db:.1f} < {g.min_snr_db:.1f}"
    if g.max_rt60_s is not None and s.rt60_s is not None and s.rt60_s > g.max_rt60_s:
        return "reverberant", f"rt60_s {s.rt60_s:.2f} > {g.max_rt60_s:.2f}"
    if g.min_dnsmos_ovrl is not None and s.dnsmos_ovrl is not None and s.dnsmos_ovrl < g.min_dnsmos_ovrl:
        return "low_dnsmos", f"dnsmos_ovrl {s.dnsmos_ovrl:.2f} < {g.min_dnsmos_ovrl:.2f}"
    return None


# each threshold (its shaping key) → the reason of the clips it rejects; a ``min_`` threshold is stricter
# when it rises, a ``max_`` one when it falls (``run.state`` asks what a changed threshold must redo)
THRESHOLD_REASONS = {
    "gates.min_speech_ratio": "not_speech", "gates.min_bandwidth_hz": "low_bandwidth", "gates.max_clipping": "clipped",
    "gates.min_snr_db": "noisy", "gates.max_rt60_s": "reverberant", "gates.min_dnsmos_ovrl": "low_dnsmos",
    "quality.min_confidence": "low_confidence", "quality.min_chars_per_s": "speaking_rate_low",
    "quality.max_chars_per_s": "speaking_rate_high", "quality.min_words": "too_few_words",
}


def judge(t: Transcript, cfg: QualityConfig) -> Optional[Tuple[str, str]]:
    """None to keep, else (reason, detail)."""
    d = t.segment.duration_s
    if not t.text.strip():
        return "empty_transcript", "the model heard no words"
    if d < cfg.min_clip_s - cfg.tolerance_s:
        return "too_short", f"{d:.2f} s < {cfg.min_clip_s:g} s"
    if d > cfg.max_clip_s + cfg.tolerance_s:
        return "too_long", f"{d:.2f} s > {cfg.max_clip_s:g} s"
    if cfg.min_words is not None and len(t.text.split()) < cfg.min_words:
        return "too_few_words", f"{len(t.text.split())} words < {cfg.min_words}"
    if cfg.min_confidence is not None and t.confidence < cfg.min_confidence:
        return "low_confidence", f"confidence {t.confidence:.3f} < {cfg.min_confidence:g}"
    rate = t.chars_per_s
    if cfg.min_chars_per_s is not None and rate < cfg.min_chars_per_s:
        return "speaking_rate_low", f"chars_per_s {rate:.1f} < {cfg.min_chars_per_s:g}"
    if cfg.max_chars_per_s is not None and rate > cfg.max_chars_per_s:
        return "speaking_rate_high", f"chars_per_s {rate:.1f} > {cfg.max_chars_per_s:g}"
    if cfg.sentence_end_only and not t.sentence_end:
        return "not_sentence_end", f"the transcript ends {t.text.rstrip()[-12:]!r}, without terminal punctuation"
    return None


def rate_bounds(rates: List[float], k: float) -> Tuple[float, float]:
    """(Q1 − k·IQR, Q3 + k·IQR) of a source's speaking rates."""
    q1, q3 = np.percentile(np.asarray(rates, dtype=np.float64), [25, 75])
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def rate_outliers(transcripts: List[Transcript], cfg: QualityConfig) -> Iterable:
    """A source's transcripts, and a rejection for each whose rate is an outlier of that source."""
    items = sorted(transcripts, key=lambda t: t.key)
    if cfg.rate_outlier_iqr is None or len(items) < cfg.rate_outlier_min_clips:
        yield from items
        return
    lo, hi = rate_bounds([t.chars_per_s for t in items], cfg.rate_outlier_iqr)
    for t in items:
        r = t.chars_per_s
        if lo <= r <= hi:
            yield t
        else:
            yield Rejection.for_segment(
                t.segment, STAGE, "speaking_rate_outlier",
                f"chars_per_s {r:.1f} outside {lo:.1f}..{hi:.1f} (this source's Q1-{cfg.rate_outlier_iqr:g}*IQR.."
                f"Q3+{cfg.rate_outlier_iqr:g}*IQR over {len(items)} clips)", text=t.text)


class _JudgeFn(beam.DoFn):
    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg

    def process(self, t: Transcript):
        verdict = judge(t, self.cfg)
        yield from route([t] if verdict is None else [Rejection.for_segment(t.segment, STAGE, *verdict, text=t.text)])


class _OutliersFn(beam.DoFn):
    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg

    def process(self, kv):
        for out in rate_outliers(list(kv[1]), self.cfg):
            yield from route([out])


class Quality(beam.PTransform):
    """Transcript → kept Transcript (main) and Rejection (``rejected``)."""

    def __init__(self, cfg: QualityConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, transcripts):
        judged = transcripts | "Judge" >> with_outputs(beam.ParDo(_JudgeFn(self.cfg)), main="kept")
        per_source = (judged["kept"]
                      | "BySource" >> beam.Map(lambda t: (t.segment.source.source_id, t))
                      | "GroupBySource" >> beam.GroupByKey()
                      | "RateOutliers" >> with_outputs(beam.ParDo(_OutliersFn(self.cfg)), main="kept"))
        rejected = (judged["rejected"], per_source["rejected"]) | "AllRejected" >> beam.Flatten()
        return {"kept": per_source["kept"], "rejected": rejected}
