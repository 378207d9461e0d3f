"""Segment stage: decode each source once, find its speech, cut clips, score and gate them, batch for ASR.

Per source, one ffmpeg process decodes to mono 16-bit at the output rate into a scratch file while
frame energies and Silero VAD's speech probabilities are computed. The clip plan comes from those
(``audio.silence``); then every clip is read back from scratch, FLAC-encoded at the output rate
into the source's clip pack (one file per source, which the shard writer later reads by offset)
and scored (``audio.clip_scores``, and DNSMOS when it runs). Clips that fail an audio gate
(``transforms.quality.judge_audio``) become rejection rows here and are never transcribed; the
rest are resampled to the ASR rate into length-sorted ``AsrBatch``es that flow straight into the
transcriber in the same fused stage. No audio ever crosses a shuffle.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Union

import apache_beam as beam
import numpy as np
import soxr

from audio import clip_scores, dnsmos
from audio.decoded import decode_to_scratch
from audio.ffmpeg import DecodeError, DecodeLimits
from audio.flac import encode_flac
from audio.silence import SplitParams, split_on_silence
from schemas.keys import segment_key
from schemas.records import AsrBatch, AudioFile, ClipScores, Rejection, Segment, SourceResult
from speakers.turns import TurnParams, embedding_bytes, split_turns
from storage import fs
from transforms.progress import progress
from transforms.quality import STAGE as QUALITY
from transforms.quality import AudioGates, judge_audio
from transforms.routing import route, with_outputs

STAGE = "segment"


@dataclass(frozen=True)
class SegmentConfig:
    pack_dir: str
    split: SplitParams = field(default_factory=SplitParams)
    output_sample_rate: int = 22050
    asr_sample_rate: int = 16000
    asr_batch_seconds: float = 160.0
    asr_max_batch: int = 64
    decode_timeout_s: float = 3600.0
    max_duration_s: Optional[float] = None
    max_scratch_bytes: int = 4 << 30
    scratch_dir: Optional[str] = None
    vad: bool = True
    gates: AudioGates = AudioGates()
    dnsmos: bool = False
    dnsmos_device: str = "cpu"
    speakers: bool = True
    turns: TurnParams = TurnParams()

    def validate(self) -> "SegmentConfig":
        self.split.validate()
        self.gates.validate()
        self.turns.validate()
        if self.gates.min_speech_ratio is not None and not self.vad:
            raise ValueError("--min_speech_ratio needs the VAD (--vad silero), or set it to none")
        if self.gates.min_dnsmos_ovrl is not None and not self.dnsmos:
            raise ValueError("--min_dnsmos_ovrl needs DNSMOS to run (--dnsmos on), or set it to none")
        if not 8000 <= self.output_sample_rate <= 192000:
            raise ValueError(f"--output_sample_rate must be 8000..192000, got {self.output_sample_rate}")
        if self.asr_batch_seconds < self.split.max_clip_s:
            raise ValueError(f"--asr_batch_seconds ({self.asr_batch_seconds:g}) must be at least "
                             f"--max_clip_s ({self.split.max_clip_s:g}): a clip must fit in one model call")
        if self.asr_max_batch < 1:
            raise ValueError(f"asr_max_batch must be >= 1, got {self.asr_max_batch}")
        if self.decode_timeout_s <= 0:
            raise ValueError(f"--decode_timeout_s must be > 0, got {self.decode_timeout_s:g}")
        if self.max_scratch_bytes < 1 << 20:
            raise ValueError(f"--max_scratch_gb must be at least 0.001 (1 MiB), got {self.max_scratch_bytes / 2 ** 30:g}")
        return self

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(timeout_s=self.decode_timeout_s, max_duration_s=self.max_duration_s,
                            max_bytes=self.max_scratch_bytes)


def plan_batches(durations: List[float], batch_seconds: float, max_batch: int) -> List[List[int]]:
    """Indices grouped by length (shortest first), each group at most ``batch_seconds`` of audio."""
    order = sorted(range(len(durations)), key=lambda i: (durations[i], i))
    batches, cur, total = [], [], 0.0
    for i in order:
        if cur and (total + durations[i] > batch_seconds or len(cur) >= max_batch):
            batches.append(cur)
            cur, total = [], 0.0
        cur.append(i)
        total += durations[i]
    if cur:
        batches.append(cur)
    return batches


def to_asr_audio(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    x = samples.astype(np.float32) / 32768.0
    if from_rate != to_rate:
        x = soxr.resample(x, from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32)


def segment_source(audio: AudioFile, cfg: SegmentConfig) -> Iterator[Union[AsrBatch, Rejection, SourceResult]]:
    """Everything the segment stage emits for one source (no Beam here)."""
    src = audio.source
    try:
        with fs.local_copy(audio.path) as local:
            decoded = decode_to_scratch(local, cfg.output_sample_rate, scratch_dir=cfg.scratch_dir,
                                        limits=cfg.limits, vad=cfg.vad)
    except DecodeError as e:
        yield Rejection.for_source(src, STAGE, e.reason, e.detail)
        yield SourceResult.of(src, "rejected" if e.reason == "too_long" else "failed", e.reason)
        return
    except OSError as e:  # the scratch disk (or a copy from an object store) failed: not the source's fault
        reason = "scratch_full" if e.errno == errno.ENOSPC else "scratch_error"
        yield Rejection.for_source(src, STAGE, reason, f"{type(e).__name__}: {e}")
        yield SourceResult.of(src, "failed", reason)
        return
    with decoded:
        yield from _clips_of(src, decoded, cfg)


def _clips_of(src, decoded, cfg: SegmentConfig):
    sr, hop = decoded.sample_rate, decoded.hop
    prob = None
    if decoded.speech_probs is not None:
        from audio.vad import on_grid
        prob = on_grid(decoded.speech_probs, len(decoded.db), decoded.hop_s)
    result = split_on_silence(decoded.db, decoded.hop_s, cfg.split, prob)
    if result.file_reason:
        detail = (f"level {result.level_db:.1f} dBFS over {decoded.duration_s:.1f} s"
                  if result.file_reason not in ("no_audio", "no_speech") else
                  "no samples" if result.file_reason == "no_audio" else
                  f"the voice detector found under {cfg.split.min_speech_s:g} s of speech in {decoded.duration_s:.1f} s")
        yield Rejection.for_source(src, STAGE, result.file_reason, detail)
        yield SourceResult.of(src, "rejected", result.file_reason, decoded.duration_s)
        return
    speech = None
    if prob is not None:
        from audio.vad import speech_mask
        speech = speech_mask(prob, cfg.split.speech_threshold)

    def span(piece):
        a, b = piece.start * hop, min(piece.end * hop, decoded.n_samples)
        return a, b, segment_key(src.source_id, int(round(a * 1000 / sr)))

    too_short = [(p, f"{(p.end - p.start) * decoded.hop_s:.2f} s after merging, minimum {cfg.split.min_clip_s:g} s")
                 for p in result.too_short]
    clips, voices, changes, mixed = list(result.clips), [None] * len(result.clips), [None] * len(result.clips), set()
    if cfg.speakers and clips:
        clips, voices, changes, mixed, short_turns = _one_voice_each(clips, result.pause, decoded, cfg)
        too_short += short_turns
    for piece, why in too_short:
        a, b, key = span(piece)
        yield Rejection(src.source_id, src.uri, STAGE, "too_short", why, key=key, duration_s=round((b - a) / sr, 3))

    spans = [span(p) for p in clips]
    pack_path = fs.join(cfg.pack_dir, src.source_id + ".clips")
    segments: List[Segment] = []

    def write_pack(f):
        offset = 0
        for piece, voice, change, (a, b, key) in zip(clips, voices, changes, spans):
            samples = decoded.read(a, b)
            data = encode_flac(samples, sr)
            f.write(data)
            frames = slice(piece.start, piece.end)
            scores = ClipScores(
                speech_ratio=clip_scores.speech_ratio(speech[frames]) if speech is not None else None,
                bandwidth_hz=clip_scores.bandwidth_hz(samples.astype(np.float32) / 32768.0, sr),
                clipping=clip_scores.clipping(samples),
                snr_db=clip_scores.snr_db(decoded.db[frames], speech[frames] if speech is not None else None),
                voice_change_score=change)
            segments.append(Segment(key, src, round(a / sr, 3), round(b / sr, 3), sr, pack_path, offset,
                                    len(data), scores, embedding_bytes(voice)))
            offset += len(data)

    if spans:
        fs.atomic_write(pack_path, write_pack)
    if cfg.dnsmos:
        segments = _with_dnsmos(segments, spans, decoded, cfg)
    kept = []
    for i, seg in enumerate(segments):
        verdict = judge_audio(seg.scores, cfg.gates)  # first: noise and music also confuse the voice model
        if verdict is not None:
            yield Rejection.for_segment(seg, QUALITY, *verdict)
        elif i in mixed:
            yield Rejection.for_segment(seg, STAGE, "multi_speaker", "two voices with no pause between them to cut at")
        else:
            kept.append(i)
    for group in plan_batches([segments[i].duration_s for i in kept], cfg.asr_batch_seconds, cfg.asr_max_batch):
        idx = [kept[j] for j in group]
        yield AsrBatch(
            segments=tuple(segments[i] for i in idx),
            audio=tuple(to_asr_audio(decoded.read(spans[i][0], spans[i][1]), sr, cfg.asr_sample_rate) for i in idx),
            sample_rate=cfg.asr_sample_rate)
    n = len(spans) + len(too_short)
    progress().add(sources=1, audio_s=decoded.duration_s, segments=n)
    yield SourceResult.of(src, "ok", duration_s=decoded.duration_s, n_segments=n)


def _one_voice_each(clips, pause, decoded, cfg: SegmentConfig):
    """Clips cut at speaker changes: (pieces, their voice embeddings, their voice change scores, indices of
    mixed pieces, short turns)."""
    from audio.silence import Piece
    hop, sr = decoded.hop, decoded.sample_rate

    def audio16k(s, e):
        return to_asr_audio(decoded.read(s * hop, e * hop), sr, cfg.asr_sample_rate)
    turns = split_turns([(c.start, c.end) for c in clips], pause, decoded.hop_s, audio16k, cfg.turns)
    out, voices, changes, mixed, short = [], [], [], set(), []
    min_f = int(round(cfg.split.min_clip_s / decoded.hop_s))
    for clip_turns in turns:
        for t in clip_turns:
            piece = Piece(t.start, t.end)
            if t.end - t.start < min_f and len(clip_turns) > 1:
                short.append((piece, f"{(t.end - t.start) * decoded.hop_s:.2f} s turn of one voice between "
                                     f"another's, minimum {cfg.split.min_clip_s:g} s"))
                continue
            if t.mixed:
                mixed.add(len(out))
            out.append(piece)
            voices.append(t.embedding)
            changes.append(t.voice_change_score)
    return out, voices, changes, mixed, short


def _with_dnsmos(segments: List[Segment], spans, decoded, cfg: SegmentConfig, group: int = 16) -> List[Segment]:
    """Segments with their DNSMOS scores, scored a group of clips at a time (memory stays bounded)."""
    import dataclasses
    out = []
    for g in range(0, len(segments), group):
        part = segments[g:g + group]
        audio = [to_asr_audio(decoded.read(a, b), decoded.sample_rate, dnsmos.RATE) for a, b, _ in spans[g:g + group]]
        for seg, (sig, bak, ovrl) in zip(part, dnsmos.score(audio, cfg.dnsmos_device)):
            out.append(dataclasses.replace(seg, scores=dataclasses.replace(
                seg.scores, dnsmos_sig=sig, dnsmos_bak=bak, dnsmos_ovrl=ovrl)))
    return out


class _SegmentFn(beam.DoFn):
    def __init__(self, cfg: SegmentConfig):
        self.cfg = cfg

    def process(self, audio: AudioFile):
        yield from route(segment_source(audio, self.cfg))


class SegmentAudio(beam.PTransform):
    """AudioFile → AsrBatch (main), Rejection (``rejected``), SourceResult (``sources``)."""

    def __init__(self, cfg: SegmentConfig):
        super().__init__()
        self.cfg = cfg.validate()

    def expand(self, audio_files):
        return audio_files | "SplitOnSilence" >> with_outputs(beam.ParDo(_SegmentFn(self.cfg)), main="batches")

