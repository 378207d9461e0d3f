"""Which clips repeat audio or text that the corpus (or this run, earlier in order) already holds.

Clips are taken in a deterministic order — the published corpus first, then this run's clips by
source upload date, source URI and start time — and the first occurrence is kept: a clip whose
audio repeats a kept clip's (``duplicate_audio``), or whose transcript repeats one under the text
policy (``duplicate_text``), is rejected naming the key it repeats; every other clip joins the
index, so the next clip in order is judged against it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from dedup.index import FingerprintIndex, MatchParams
from dedup.text import TextIndex
from schemas.settings import OUTPUT, SettingError, setting

TEXT_POLICIES = ("keep", "per_speaker", "drop")
DUPLICATE_AUDIO = "duplicate_audio"
DUPLICATE_TEXT = "duplicate_text"
SOURCE_REPEAT_SHARE = 0.5  # a source whose clips repeat one other source for at least this share repeats it


@dataclass(frozen=True)
class DedupParams:
    """What counts as a duplicate and what is done with one (``--dedup_*``)."""

    audio: bool = setting(True, role=OUTPUT)
    min_fraction: float = setting(0.5, role=OUTPUT)  # of a clip's length that repeats other audio
    max_ber: float = setting(0.2, role=OUTPUT)
    text: str = setting("per_speaker", role=OUTPUT)
    text_threshold: float = setting(0.7, role=OUTPUT)
    text_min_words: int = setting(6, role=OUTPUT)

    def validate(self) -> "DedupParams":
        if not 0 < self.min_fraction <= 1:
            raise SettingError("min_fraction", f"must be in (0, 1], got {self.min_fraction:g}")
        if not 0 < self.max_ber < 0.5:
            raise SettingError("max_ber", f"must be in (0, 0.5): unrelated audio differs in about half its "
                               f"bits, got {self.max_ber:g}")
        if self.text not in TEXT_POLICIES:
            raise SettingError("text", f"must be one of {', '.join(TEXT_POLICIES)}, got {self.text!r}")
        if not 0 < self.text_threshold <= 1:
            raise SettingError("text_threshold", f"must be in (0, 1], got {self.text_threshold:g}")
        if self.text_min_words < 1:
            raise SettingError("text_min_words", f"must be >= 1, got {self.text_min_words}")
        return self

    @property
    def match(self) -> MatchParams:
        return MatchParams(max_ber=self.max_ber)

    @property
    def active(self) -> bool:
        return self.audio or self.text != "keep"


@dataclass(frozen=True)
class Item:
    """What deduplication needs of one clip (no audio)."""

    key: str
    order: Tuple  # sort key: first in order is kept
    duration_s: float
    speaker: Optional[str] = None
    text: str = ""
    fingerprint: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Verdict:
    reason: str  # DUPLICATE_AUDIO or DUPLICATE_TEXT
    repeats: str  # the key of the kept clip it repeats
    detail: str


def decide(items: Iterable[Item], published: Iterable[Item], params: DedupParams,
           audio_index: Optional[FingerprintIndex] = None) -> Dict[str, Verdict]:
    """Verdicts for the duplicates among ``items`` (by key); clips without one are kept.

    ``published`` is the corpus's clips (already kept); ``audio_index`` may hold their fingerprints
    already (built once per process), else it is built from ``published``.
    """
    published = list(published)
    audio_index = (audio_index or published_audio_index(published, params)).overlay()
    texts = TextIndex(params.text_threshold, params.text_min_words)
    if params.text != "keep":
        for p in sorted(published, key=lambda i: i.order):
            texts.add(p.key, p.text, p.speaker)
    verdicts: Dict[str, Verdict] = {}
    for it in sorted(items, key=lambda i: (i.order, i.key)):
        fp = it.fingerprint
        if params.audio and fp is not None and len(fp):
            m = audio_index.query(fp)
            if m is not None and m.key != it.key and m.fraction >= params.min_fraction:
                verdicts[it.key] = Verdict(DUPLICATE_AUDIO, m.key, (
                    f"{m.fraction:.0%} of the clip ({m.matched_s:.1f} s) repeats {m.key} "
                    f"(bit-error rate {m.ber:.2f})"))
                continue
        if params.text != "keep":
            hit = texts.query(it.text, it.speaker, same_speaker=params.text == "per_speaker")
            if hit is not None:
                verdicts[it.key] = Verdict(DUPLICATE_TEXT, hit[0], (
                    f"transcript repeats {hit[0]} (word-bigram similarity {hit[1]:.2f}"
                    + (f", same speaker {it.speaker})" if params.text == "per_speaker" else ")")))
                continue
            texts.add(it.key, it.text, it.speaker)
        if params.audio and fp is not None and len(fp):
            audio_index.add(it.key, fp)
    return verdicts


def published_audio_index(published: List[Item], params: DedupParams) -> FingerprintIndex:
    with_fp = [p for p in sorted(published, key=lambda i: i.order) if p.fingerprint is not None and len(p.fingerprint)]
    return FingerprintIndex.build([p.key for p in with_fp], [p.fingerprint for p in with_fp], params.match)


def source_of(key: str) -> str:
    """The source id of a clip key (``{source_id}_{start_ms}``)."""
    return key.rsplit("_", 1)[0]


@dataclass(frozen=True)
class SourceRepeat:
    """A source that repeats another (a re-upload, a mirror): the one most of its repeated audio is from."""

    repeats: str  # that source's id
    share: float  # of the duration of the source's clips judged here, rejected as repeating it


def source_repeats(items: Iterable[Item], verdicts: Dict[str, Verdict],
                   min_share: float = SOURCE_REPEAT_SHARE) -> Dict[str, SourceRepeat]:
    """The sources among ``items`` that repeat another: by source id.

    Per-clip verdicts say which clip each duplicate repeats; a whole re-uploaded source shows as
    most of its clips' audio repeating clips of one other source.
    """
    total: Dict[str, float] = defaultdict(float)
    by: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for it in items:
        sid = source_of(it.key)
        total[sid] += it.duration_s
        v = verdicts.get(it.key)
        if v is not None and v.reason == DUPLICATE_AUDIO and source_of(v.repeats) != sid:
            by[sid][source_of(v.repeats)] += it.duration_s
    out = {}
    for sid, secs in sorted(by.items()):
        other, s = max(sorted(secs.items()), key=lambda kv: kv[1])
        if total[sid] > 0 and s / total[sid] >= min_share:
            out[sid] = SourceRepeat(other, round(s / total[sid], 4))
    return out
