"""The ASR settings records (model, chunking, Whisper's gates): plain values, importable without torch,
so that reading and checking a command's options answers at once."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from schemas.settings import OUTPUT, SHAPING, SettingError, setting

DEFAULT_ASR_MODEL = "jbetker/wav2vec2-large-robust-ft-libritts-voxpopuli"
DEFAULT_TOKENIZER = "jbetker/tacotron-symbols"
DEFAULT_FEATURE_EXTRACTOR = "facebook/wav2vec2-large-960h"
DTYPE_NAMES = ("fp32", "bf16", "fp16")
# torch's device strings (torch.device accepts these types, with an optional index)
DEVICE = re.compile(r"(cpu|cuda|mps|xpu|xla|meta|hpu|ipu|privateuseone)(:\d+)?")


@dataclass(frozen=True)
class AsrModelSpec:
    model: str = setting(DEFAULT_ASR_MODEL, role=SHAPING, key="asr", read="label")
    tokenizer: Optional[str] = setting(None, role=SHAPING, key="asr_tokenizer", read="tokenizer_id")
    feature_extractor: Optional[str] = setting(None, role=SHAPING, key="asr_feature_extractor",
                                               read="feature_extractor_id")
    revision: Optional[str] = setting(None, role=SHAPING, key="asr", read="label")
    device: str = "cpu"
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (fp16 only on CUDA)

    def validate(self) -> "AsrModelSpec":
        if self.dtype not in DTYPE_NAMES:
            raise SettingError("dtype", f"must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}")
        if self.dtype == "fp16" and not self.device.startswith("cuda"):
            raise SettingError("dtype", "fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        if not DEVICE.fullmatch(self.device):
            raise SettingError("device", f"{self.device!r}: expected a torch device such as cpu, cuda or cuda:1")
        return self

    @property
    def tokenizer_id(self) -> str:
        if self.tokenizer:
            return self.tokenizer
        return DEFAULT_TOKENIZER if self.model == DEFAULT_ASR_MODEL else self.model

    @property
    def feature_extractor_id(self) -> str:
        if self.feature_extractor:
            return self.feature_extractor
        return DEFAULT_FEATURE_EXTRACTOR if self.model == DEFAULT_ASR_MODEL else self.model

    @property
    def label(self) -> str:
        """What every transcript records as its model: ``id@revision`` (or the id alone)."""
        return f"{self.model}@{self.revision}" if self.revision else self.model


@dataclass(frozen=True)
class TranscribeOptions:
    chunk_s: float = setting(30.0, role=SHAPING, key="asr_chunk_s")
    chunk_overlap_s: float = setting(2.0, role=OUTPUT, key="asr_chunk_overlap_s")
    keep_ctc_tokens: bool = setting(False, role=SHAPING, key="keep_ctc_tokens")

    def validate(self) -> "TranscribeOptions":
        if not self.chunk_s > 2 * self.chunk_overlap_s:
            raise SettingError("chunk_s", f"({self.chunk_s:g}) must exceed twice the overlap "
                               f"({self.chunk_overlap_s:g} s)")
        return self



@dataclass(frozen=True)
class WhisperGates:
    """Per-clip checks of Whisper's output (``None``: that gate is off). Defaults measured on real
    speech and on silence, noise and music by ``benchmarks/asr_whisper.py``; see docs/transcription.md."""

    max_no_speech_prob: Optional[float] = setting(0.4, role=SHAPING)  # speech ≤ 0.26; silence, noise, music 0.32..0.96
    min_avg_logprob: Optional[float] = setting(-0.8, role=SHAPING)  # speech ≥ -0.43; silence, noise, music ≤ -1.0
    max_compression_ratio: Optional[float] = setting(2.4, role=SHAPING)  # Whisper's own; real speech ≤ 1.73
    max_ngram_repeats: Optional[int] = setting(4, role=SHAPING)  # a 1..4-word n-gram said this often in a row; real ≤ 3
    max_chars_per_s: Optional[float] = setting(35.0, role=SHAPING)  # real speech ≤ 23.4

    def validate(self) -> "WhisperGates":
        if self.max_no_speech_prob is not None and not 0 <= self.max_no_speech_prob <= 1:
            raise SettingError("max_no_speech_prob", f"must be within 0..1, got {self.max_no_speech_prob:g}")
        if self.min_avg_logprob is not None and not self.min_avg_logprob <= 0:
            raise SettingError("min_avg_logprob", f"must be <= 0, got {self.min_avg_logprob:g}")
        if self.max_compression_ratio is not None and not self.max_compression_ratio > 0:
            raise SettingError("max_compression_ratio", f"must be > 0, got {self.max_compression_ratio:g}")
        if self.max_ngram_repeats is not None and self.max_ngram_repeats < 1:
            raise SettingError("max_ngram_repeats", f"must be >= 1, got {self.max_ngram_repeats}")
        if self.max_chars_per_s is not None and not self.max_chars_per_s > 0:
            raise SettingError("max_chars_per_s", f"must be > 0, got {self.max_chars_per_s:g}")
        return self
