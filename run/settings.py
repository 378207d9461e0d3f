"""A build's settings: one validated record, made once by ``pipelines.options`` from the command line.

Its parts are each stage's own settings record (acquisition, splitting, gates, ASR, quality), each
checked by its own ``validate`` when this record is built; the rules that join two stages, and those
on the build's own fields, are checked here. What a field means for a corpus (corpus-shaping,
run-shaping, execution) is metadata on the field (``schemas.settings``): ``shaping`` and
``fingerprint`` are read from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from acquisition.config import AcquireConfig
from asr.spec import AsrModelSpec, TranscribeOptions, WhisperGates
from audio.silence import SplitParams
from dedup.decide import DedupParams
from schemas.settings import OUTPUT, SHAPING, SettingError, part, recorded, setting, validate_parts
from speakers.params import VoiceParams
from transforms.gate_settings import AudioGates, QualityConfig

SHARD_PREFIX_BANNED = "/\\.{}*?[] "
MIN_SCRATCH_BYTES = 1 << 20  # a source must be allowed at least 1 MiB of decoded audio


class OptionError(ValueError):
    """A bad option or value: one line for the user, exit status 2."""


@dataclass(frozen=True)
class CorpusSettings:
    sources: str
    output: str
    acquire: AcquireConfig = part(roles={"ytdlp_format": SHAPING, "max_items_per_source": OUTPUT,
                                         "max_duration_s": OUTPUT, "max_hours_total": OUTPUT})
    asr: AsrModelSpec = part(default_factory=AsrModelSpec)
    split: SplitParams = part(default_factory=SplitParams, nest=True)
    quality: QualityConfig = part(default_factory=QualityConfig, nest=True)
    gates: AudioGates = part(default_factory=AudioGates, nest=True)
    transcribe: TranscribeOptions = part(default_factory=TranscribeOptions)
    whisper_gates: WhisperGates = part(default_factory=WhisperGates, nest=True)
    dedup: DedupParams = part(default_factory=DedupParams, nest=True)
    voices: VoiceParams = part(default_factory=VoiceParams, nest=True)
    vad: str = setting("silero", role=SHAPING)
    dnsmos: bool = setting(False)
    keep_rejected_audio: bool = setting(False, role=OUTPUT)
    speakers: bool = setting(True, role=SHAPING)
    similar_k: int = setting(3, role=SHAPING)
    commit_every_hours: float = setting(4.0, role=OUTPUT)
    output_sample_rate: int = setting(22050, role=SHAPING)
    asr_batch_seconds: float = setting(160.0, role=OUTPUT)
    asr_accelerator: Optional[str] = setting(None)
    samples_per_shard: int = setting(1000, role=OUTPUT)
    shard_prefix: str = setting("shard", role=OUTPUT)
    decode_timeout_s: float = setting(3600.0, role=OUTPUT)
    max_scratch_gb: float = setting(4.0, role=OUTPUT)
    scratch_dir: Optional[str] = setting(None)
    keep_work: bool = setting(False)
    redo: Tuple[str, ...] = setting(())
    retry_failed: bool = setting(False)
    verbose: bool = setting(False)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "CorpusSettings":
        """Each part's rules (its own ``validate``), then the build's; raises ``SettingError``."""
        validate_parts(self)
        if self.vad not in ("silero", "energy"):
            raise SettingError("vad", f"must be silero or energy, got {self.vad!r}")
        if self.gates.min_speech_ratio is not None and self.vad != "silero":
            raise SettingError("gates.min_speech_ratio", "needs {0} silero (or set it to none)", "vad")
        if self.gates.min_dnsmos_ovrl is not None and not self.dnsmos:
            raise SettingError("gates.min_dnsmos_ovrl", "needs DNSMOS to run: add {0} on (≈ 10-25x realtime "
                               "per CPU core), or set it to none", "dnsmos")
        if self.similar_k < 0:
            raise SettingError("similar_k", f"must be >= 0, got {self.similar_k}")
        if not self.commit_every_hours > 0:
            raise SettingError("commit_every_hours", f"must be > 0, got {self.commit_every_hours:g}")
        if not 8000 <= self.output_sample_rate <= 192000:
            raise SettingError("output_sample_rate", f"must be 8000..192000, got {self.output_sample_rate}")
        if not self.asr_batch_seconds >= self.split.max_clip_s:
            raise SettingError("asr_batch_seconds", f"({self.asr_batch_seconds:g}) must be at least {{0}} "
                               f"({self.split.max_clip_s:g}): a clip must fit in one model call", "split.max_clip_s")
        if self.samples_per_shard < 1:
            raise SettingError("samples_per_shard", f"must be >= 1, got {self.samples_per_shard}")
        if not self.shard_prefix or any(c in self.shard_prefix for c in SHARD_PREFIX_BANNED):
            raise SettingError("shard_prefix", f"{self.shard_prefix!r}: must be a plain name without dots, "
                               "slashes or spaces")
        if not self.decode_timeout_s > 0:
            raise SettingError("decode_timeout_s", f"must be > 0, got {self.decode_timeout_s:g}")
        if not (math.isfinite(self.max_scratch_gb) and self.max_scratch_bytes >= MIN_SCRATCH_BYTES):
            raise SettingError("max_scratch_gb", f"must be at least {MIN_SCRATCH_BYTES / 2 ** 30:.3g} "
                               f"(1 MiB), got {self.max_scratch_gb:g}")
        return self

    @property
    def max_scratch_bytes(self) -> int:
        return int(self.max_scratch_gb * 2 ** 30) if math.isfinite(self.max_scratch_gb) else 0

    def fingerprint(self) -> dict:
        """The settings that change what a run writes (paths excluded), for the run tag."""
        return recorded(self, (SHAPING, OUTPUT))[0]

    def shaping(self) -> dict:
        """The corpus-shaping settings, JSON-ready: a corpus is built with one set of them."""
        return recorded(self, (SHAPING,))[0]

    def shaping_paths(self) -> Dict[str, str]:
        """Each recorded corpus-shaping key ('split.min_clip_s', 'asr_chunk_s') → its field's path."""
        return recorded(self, (SHAPING,))[1]
