"""The quality gates' settings records (audio thresholds, transcript rules): plain values, importable
without Beam, so that reading and checking a command's options answers at once. The gates
themselves are in ``transforms.quality``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from schemas.settings import OUTPUT, SHAPING, SettingError, setting


@dataclass(frozen=True)
class AudioGates:
    """Thresholds on a clip's audio scores (``None``: that gate is off). Defaults: see README."""

    min_speech_ratio: Optional[float] = setting(0.5, role=SHAPING)
    min_bandwidth_hz: Optional[float] = setting(6500.0, role=SHAPING)
    max_clipping: Optional[float] = setting(0.002, role=SHAPING)
    min_snr_db: Optional[float] = setting(15.0, role=SHAPING)
    max_rt60_s: Optional[float] = setting(0.45, role=SHAPING)
    min_dnsmos_ovrl: Optional[float] = setting(None, role=SHAPING)

    def validate(self) -> "AudioGates":
        if self.min_speech_ratio is not None and not 0 <= self.min_speech_ratio <= 1:
            raise SettingError("min_speech_ratio", f"must be within 0..1, got {self.min_speech_ratio:g}")
        if self.min_bandwidth_hz is not None and not self.min_bandwidth_hz >= 0:
            raise SettingError("min_bandwidth_hz", f"must be >= 0, got {self.min_bandwidth_hz:g}")
        if self.max_clipping is not None and not 0 <= self.max_clipping <= 1:
            raise SettingError("max_clipping", f"must be within 0..1, got {self.max_clipping:g}")
        if self.max_rt60_s is not None and not self.max_rt60_s > 0:
            raise SettingError("max_rt60_s", f"must be > 0, got {self.max_rt60_s:g}")
        if self.min_dnsmos_ovrl is not None and not 1 <= self.min_dnsmos_ovrl <= 5:
            raise SettingError("min_dnsmos_ovrl", f"must be within 1..5, got {self.min_dnsmos_ovrl:g}")
        return self


@dataclass(frozen=True)
class QualityConfig:
    min_confidence: Optional[float] = setting(0.6, role=SHAPING)
    min_chars_per_s: Optional[float] = setting(5.0, role=SHAPING)
    max_chars_per_s: Optional[float] = setting(25.0, role=SHAPING)
    min_clip_s: float = setting(4.0, role=SHAPING)
    max_clip_s: float = setting(20.0, role=SHAPING)
    tolerance_s: float = setting(0.05, role=OUTPUT)  # clip edges sit on a 10 ms grid
    rate_outlier_iqr: Optional[float] = setting(1.5, role=SHAPING)
    rate_outlier_min_clips: int = setting(8, role=SHAPING)
    min_words: Optional[int] = setting(None, role=SHAPING)
    sentence_end_only: bool = setting(False, role=SHAPING)  # keep only clips whose transcript ends a sentence

    def validate(self) -> "QualityConfig":
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise SettingError("min_confidence", f"must be within 0..1, got {self.min_confidence:g}")
        if self.min_chars_per_s is not None and not self.min_chars_per_s >= 0:
            raise SettingError("min_chars_per_s", f"must be >= 0, got {self.min_chars_per_s:g}")
        if self.max_chars_per_s is not None and not self.max_chars_per_s >= (self.min_chars_per_s or 0.0):
            raise SettingError("max_chars_per_s", f"({self.max_chars_per_s:g}) must be at least {{0}} "
                               f"({self.min_chars_per_s or 0:g}) and >= 0", "min_chars_per_s")
        if self.rate_outlier_iqr is not None and not self.rate_outlier_iqr > 0:
            raise SettingError("rate_outlier_iqr", f"must be > 0 (or none), got {self.rate_outlier_iqr:g}")
        if self.min_words is not None and self.min_words < 1:
            raise SettingError("min_words", f"must be >= 1 (or none), got {self.min_words}")
        return self
