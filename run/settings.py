"""A build's settings: one validated record, made once by ``pipelines.options`` from the command line.

Its parts are each stage's own validated settings (acquisition, splitting, gates, ASR, quality);
``fingerprint`` and ``shaping`` say which of them change what a run writes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from acquisition.fetch import AcquireConfig
from asr.model import AsrModelSpec
from asr.transcriber import TranscribeOptions
from audio.silence import SplitParams
from transforms.quality import AudioGates, QualityConfig


class OptionError(ValueError):
    """A bad option or value: one line for the user, exit status 2."""


VOICE_FIELDS = ("min_voice_s", "same_voice_similarity", "voice_change_margin", "voice_change_evidence_s",
                "speaker_link_similarity")


@dataclass(frozen=True)
class CorpusSettings:
    sources: str
    output: str
    asr: AsrModelSpec
    split: SplitParams
    quality: QualityConfig
    acquire: AcquireConfig
    gates: AudioGates = AudioGates()
    vad: str = "silero"
    dnsmos: bool = False
    keep_rejected_audio: bool = False
    speakers: bool = True
    similar_k: int = 3
    min_voice_s: float = 6.0  # speakers.turns / speakers.cluster: speech a voice of a source needs
    same_voice_similarity: float = 0.75  # a source's voices this alike are one voice (utterances and clips)
    voice_change_margin: float = 0.05  # an utterance is evidence for the nearer voice by this much
    voice_change_evidence_s: float = 1.0  # evidence each side of a change inside a clip needs
    speaker_link_similarity: float = 0.83  # a source's voice joins a known speaker of its group this alike
    commit_every_hours: float = 4.0
    transcribe: TranscribeOptions = TranscribeOptions()
    output_sample_rate: int = 22050
    asr_batch_seconds: float = 160.0
    asr_accelerator: Optional[str] = None
    samples_per_shard: int = 1000
    shard_prefix: str = "shard"
    decode_timeout_s: float = 3600.0
    max_scratch_gb: float = 4.0
    scratch_dir: Optional[str] = None
    keep_work: bool = False
    redo: Tuple[str, ...] = ()
    retry_failed: bool = False
    verbose: bool = False

    def fingerprint(self) -> dict:
        """The settings that change what a run writes (paths excluded), for the run tag."""
        d = dataclasses.asdict(self)
        for k in ("sources", "output", "keep_work", "redo", "retry_failed", "verbose", "scratch_dir", "dnsmos",
                  "asr_accelerator"):
            d.pop(k)
        d["acquire"] = {k: d["acquire"][k] for k in ("max_items_per_source", "max_duration_s", "max_hours_total",
                                                      "ytdlp_format")}
        d["asr"] = self.asr.label
        return d

    def shaping(self) -> dict:
        """The corpus-shaping settings, flat and JSON-ready: a corpus is built with one set of them."""
        return {
            "split": {k: v for k, v in dataclasses.asdict(self.split).items()},
            "quality": {k: v for k, v in dataclasses.asdict(self.quality).items() if k != "tolerance_s"},
            "gates": dataclasses.asdict(self.gates),
            "vad": self.vad,
            "speakers": self.speakers,
            "similar_k": self.similar_k,
            "voices": {k: getattr(self, k) for k in VOICE_FIELDS},
            "output_sample_rate": self.output_sample_rate,
            "asr": self.asr.label,
            "asr_tokenizer": self.asr.tokenizer_id,
            "asr_feature_extractor": self.asr.feature_extractor_id,
            "asr_chunk_s": self.transcribe.chunk_s,
            "keep_ctc_tokens": self.transcribe.keep_ctc_tokens,
            "ytdlp_format": self.acquire.ytdlp_format,
        }
