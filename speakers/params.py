"""The speaker stage's settings, measured on real voices (docs/speakers.md): how much speech makes a
voice, how alike two stretches must be to be one voice, how much evidence a change of voice needs,
and how alike a source's voice must be to a known speaker to share its id."""
from __future__ import annotations

from dataclasses import dataclass

from schemas.settings import SHAPING, SettingError, setting

PRECISIONS = ("auto", "float32", "bfloat16")  # the voice encoder's arithmetic (speakers.encoder.resolve_precision)


@dataclass(frozen=True)
class VoiceParams:
    min_voice_s: float = setting(6.0, role=SHAPING)  # speech a voice of a source needs
    same_voice_similarity: float = setting(0.75, role=SHAPING)  # a source's voices this alike are one voice
    voice_change_margin: float = setting(0.05, role=SHAPING)  # an utterance is evidence for the nearer voice
    voice_change_evidence_s: float = setting(1.0, role=SHAPING)  # evidence each side of a change needs
    min_edge_turn_s: float = setting(0.5, role=SHAPING)  # a short piece of another voice this long is cut out
    voice_change_pause_s: float = setting(1.0, role=SHAPING)  # a change with less quiet than this has no clean cut
    voice_change_guard_s: float = setting(1.0, role=SHAPING)  # ... and each side gives up this much beside it
    speaker_link_similarity: float = setting(0.83, role=SHAPING)  # joins a known speaker of its group this alike
    speaker_precision: str = setting("auto")  # the voice encoder's arithmetic (speakers.encoder.resolve_precision)

    def validate(self) -> "VoiceParams":
        for name in ("same_voice_similarity", "voice_change_margin", "speaker_link_similarity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingError(name, f"must be within 0..1, got {getattr(self, name):g}")
        for name in ("min_voice_s", "voice_change_evidence_s", "min_edge_turn_s", "voice_change_pause_s",
                     "voice_change_guard_s"):
            if not getattr(self, name) >= 0:
                raise SettingError(name, f"must be >= 0, got {getattr(self, name):g}")
        if self.speaker_precision not in PRECISIONS:
            raise SettingError("speaker_precision", f"must be one of {', '.join(PRECISIONS)}, "
                               f"got {self.speaker_precision!r}")
        return self
