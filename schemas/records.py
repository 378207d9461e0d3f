"""The element records passed between stages.

Records are frozen dataclasses: a stage never mutates what it receives, it returns a new record
(``dataclasses.replace``). No record carries audio samples: audio travels only inside a fused stage
(``AsrBatch``), and everything that crosses a shuffle is a reference (a staged file, a clip pack
offset), because moving audio through a shuffle costs far more than decoding it again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from schemas.errors import SpeechmillError
from schemas.outcomes import Stage, Status, retryable

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Source:
    """One line of the sources file (or one item a feed or playlist expanded into)."""

    uri: str
    source_id: str
    speaker: Optional[str] = None
    title: Optional[str] = None
    license: Optional[str] = None
    origin: str = ""  # where it came from, e.g. "sources.txt:12" or "sources.txt:3 > 7"
    extra: tuple = ()  # (name, value) pairs of further metadata, kept in each sample's .json
    kind: str = "auto"  # auto | direct | feed | ytdlp | folder: how to fetch it
    extractor: Optional[str] = None  # yt-dlp extractor that found it ("youtube", "generic" ...)
    item_id: Optional[str] = None  # the extractor's or feed's own id for it
    webpage_url: Optional[str] = None  # the page a person would open (video page, episode page)
    uploader: Optional[str] = None  # uploader, channel or podcast author: a speaker hint
    upload_date: Optional[str] = None  # YYYY-MM-DD when stated
    declared_duration_s: Optional[float] = None  # duration the site or feed states, before download
    size_bytes: Optional[int] = None  # size the feed states (enclosure length), before download
    remote: bool = False  # named by remote content (feed, page, playlist): only http(s), never local or buckets
    alias: Optional[str] = None  # an earlier id of the same source (a local file's path-based id)
    parent: Optional[str] = None  # the (redacted) sources-file entry an item was listed from: folder, feed, playlist

    def to_json(self) -> str:
        import dataclasses
        import json
        # the fields as they are (dataclasses.asdict deep-copies each one: slow for millions of items)
        return json.dumps({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, sort_keys=True,
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Source":
        import json
        d = json.loads(text)
        d["extra"] = tuple(tuple(pair) for pair in d.get("extra") or ())
        return cls(**d)

    @property
    def speaker_id(self) -> str:
        """The speaker id when voices are not told apart: the given speaker, else the uploader, else the source."""
        return self.speaker or self.uploader or self.source_id

    @property
    def voice_group(self) -> str:
        """Where the same voice is looked for across sources: the uploader or channel, else the folder,
        feed or playlist the source was listed from, else the source alone."""
        if self.uploader:
            return f"uploader:{self.extractor or ''}:{self.uploader}"
        return f"parent:{self.parent}" if self.parent else f"source:{self.source_id}"


@dataclass(frozen=True)
class AudioFile:
    """A source whose media is readable at ``path`` (a local path or a ``FileSystems`` path)."""

    source: Source
    path: str
    size_bytes: int


SCORE_FIELDS = ("speech_ratio", "bandwidth_hz", "clipping", "snr_db", "rt60_s", "dnsmos_sig", "dnsmos_bak",
                "dnsmos_ovrl", "voice_change_score")


@dataclass(frozen=True)
class ClipScores:
    """A clip's audio scores (see ``audio.clip_scores``, ``audio.dnsmos``); None where not measured."""

    speech_ratio: Optional[float] = None
    bandwidth_hz: Optional[float] = None
    clipping: Optional[float] = None
    snr_db: Optional[float] = None
    rt60_s: Optional[float] = None
    dnsmos_sig: Optional[float] = None
    dnsmos_bak: Optional[float] = None
    dnsmos_ovrl: Optional[float] = None
    voice_change_score: Optional[float] = None  # 1 − cosine of the voices across the clip's least alike pause

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in SCORE_FIELDS}


@dataclass(frozen=True)
class Segment:
    """One clip: times in the source, where its encoded audio sits in the source's clip pack, its scores."""

    key: str
    source: Source
    start_s: float
    end_s: float
    sample_rate: int
    pack_path: str
    pack_offset: int
    pack_length: int
    scores: ClipScores = ClipScores()
    embedding: Optional[bytes] = field(default=None, repr=False)  # voice embedding, 256 float16 (speakers.turns)
    fingerprint: Optional[bytes] = field(default=None, repr=False)  # Chromaprint items, uint32 LE (dedup.fingerprint)
    source_voices: Optional[int] = None  # voices the speaker stage found in the whole source (speakers.turns)
    source_voice: Optional[int] = None  # which of them speaks in this clip (0, 1, ...; speakers.turns)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Transcript:
    segment: Segment
    text: str
    confidence: float
    asr_model: str
    words: tuple = ()  # (word, start_s, end_s, confidence), times from the clip's start
    ctc_tokens: Optional[tuple] = None  # per-frame argmax label ids, when kept
    ctc_frame_s: float = 0.02
    speaker: Optional[str] = None  # the speaker id found by clustering (else the source's)
    similar_keys: tuple = ()  # other clips of the same voice, most similar first

    @property
    def speaker_id(self) -> str:
        return self.segment.source.speaker or self.speaker or self.segment.source.speaker_id

    @property
    def key(self) -> str:
        return self.segment.key

    @property
    def chars_per_s(self) -> float:
        d = self.segment.duration_s
        return len(self.text) / d if d > 0 else 0.0

    @property
    def sentence_end(self) -> bool:
        """Whether the transcript ends a sentence (``ends_sentence``); only a model that writes
        punctuation (Whisper, the recipe's wav2vec2) can say so."""
        return ends_sentence(self.text)


@dataclass(frozen=True)
class Rejection:
    """Why a source or a segment did not make it into the corpus."""

    source_id: str
    source_uri: str
    stage: Stage
    reason: str
    detail: str = ""
    key: Optional[str] = None
    duration_s: Optional[float] = None
    retryable: bool = False  # the source is tried again on the next run (see schemas.outcomes)
    segment: Optional["Segment"] = field(default=None, repr=False, compare=False)  # a rejected clip's audio
    text: Optional[str] = None  # its transcript, when it was transcribed

    @classmethod
    def for_source(cls, source: Source, stage: Stage, reason: str, detail: str = "") -> "Rejection":
        """A source-level failure; whether the next run retries it follows ``schemas.outcomes``."""
        return cls(source.source_id, source.uri, stage, reason, _clip(detail), retryable=retryable(reason))

    @classmethod
    def for_error(cls, source: Source, stage: Stage, error: SpeechmillError) -> "Rejection":
        """A source-level failure from an error that carries its reason."""
        return cls.for_source(source, stage, error.reason, error.detail)

    @classmethod
    def for_segment(cls, segment: Segment, stage: Stage, reason: str, detail: str = "",
                    text: Optional[str] = None) -> "Rejection":
        return cls(segment.source.source_id, segment.source.uri, stage, reason, _clip(detail),
                   key=segment.key, duration_s=round(segment.duration_s, 3), segment=segment, text=text)


@dataclass(frozen=True)
class SourceResult:
    """One row per source per run: what became of it. A source with a row here is done."""

    source: Source
    status: Status
    duration_s: float = 0.0
    n_segments: int = 0
    reason: str = ""
    retryable: bool = False
    duplicate_of: str = ""  # the source this one repeats (a re-upload, a mirror): dedup.decide.source_repeats
    duplicate_share: float = 0.0  # of its judged clips' duration that repeats that source

    @classmethod
    def of(cls, source: Source, status: str, reason: str = "", duration_s: float = 0.0,
           n_segments: int = 0) -> "SourceResult":
        """A source's outcome; failures and rejections are retryable unless their reason is final."""
        status = Status(status)
        return cls(source, status, duration_s, n_segments, reason,
                   retryable=status != Status.OK and retryable(reason))


@dataclass(frozen=True)
class SpeakerRecord:
    """A speaker of a voice group after a run: its id, centroid voice embedding (float16) and clip count."""

    speaker_id: str
    group: str
    centroid: bytes
    n_clips: int


@dataclass(frozen=True)
class AsrBatch:
    """Clips of one source decoded at the ASR rate, grouped by length, for one model call.

    Batches are formed from one source's clip plan in a fixed order, so their composition (and so
    the model's floating-point results) is the same on every rerun.
    """

    segments: tuple
    audio: tuple = field(repr=False)  # float32 arrays at ``sample_rate``
    sample_rate: int = 16000

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def total_samples(self) -> int:
        return int(sum(len(a) for a in self.audio))


_CLOSERS = "\"'”’»)]}"


def ends_sentence(text: str) -> bool:
    """Terminal punctuation at the end (after closing quotes or brackets); a trailing ellipsis is a
    sentence left unfinished."""
    t = text.rstrip().rstrip(_CLOSERS).rstrip()
    return t.endswith((".", "!", "?")) and not t.endswith(("..", "…"))


def _clip(text: str, limit: int = 2000) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
