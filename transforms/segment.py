"""Segment stage: decode each source once, find its speech, cut clips, score and gate them, batch for ASR.

A thin wrapper: each job is one call into its room. Per source, one ffmpeg process decodes to mono
16-bit at the output rate into a scratch file while frame energies and Silero VAD's speech probabilities
are computed (``audio.decoded``). The clip plan comes from those (``audio.silence``) and is cut again at
speaker changes (``speakers.turns``); every clip is read back from scratch, FLAC-encoded at the output
rate into the source's clip pack (``audio.flac``: one file per source, which the shard writer later
reads by offset) and scored (``audio.clip_scores``, and ``audio.dnsmos`` when it runs; reverberation
once per source, from the decays of all its clips). Clips that fail an audio gate
(``transforms.quality.judge_audio``) become rejection rows here and are never transcribed; the rest
become length-sorted ``AsrBatch``es at the ASR rate (``asr.contract``) that flow straight into the
transcriber in the same fused stage. No audio ever crosses a shuffle.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field, replace
from typing import Iterator, List, Optional, Tuple, Union

import apache_beam as beam

from asr.contract import SAMPLE_RATE as ASR_SAMPLE_RATE
from asr.contract import batch_clips
from audio import clip_scores, dnsmos, flac
from audio.decoded import DecodedSource, decode_to_scratch
from audio.ffmpeg import DecodeError, DecodeLimits
from audio.silence import SplitParams, quiet_details, split_on_silence
from schemas.keys import segment_key
from schemas.records import AsrBatch, AudioFile, Rejection, Segment, Source, SourceResult
from speakers.turns import TurnParams, VoiceCuts, embedding_bytes, one_voice_each
from storage import fs
from transforms.dedup import attach_fingerprints
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
    asr_sample_rate: int = ASR_SAMPLE_RATE  # the ASR model's (asr.contract); its handler checks it
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
    vad_device: str = "cpu"  # Silero VAD's: onnxruntime on the CPU, torch on a GPU (audio.vad)
    speakers: bool = True
    turns: TurnParams = TurnParams()
    fingerprints: bool = False  # each clip's Chromaprint fingerprint, for the dedup stage

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(timeout_s=self.decode_timeout_s, max_duration_s=self.max_duration_s,
                            max_bytes=self.max_scratch_bytes)


def segment_source(audio: AudioFile, cfg: SegmentConfig,
                   keep: Optional[List[Segment]] = None) -> Iterator[Union[AsrBatch, Rejection, SourceResult]]:
    """Everything the segment stage emits for one source (no Beam here). With ``keep``, the clips
    to transcribe are appended to it in plan order instead of being batched (a long source's first
    pass, ``transforms.parts``, which batches them itself)."""
    src = audio.source
    try:
        with fs.local_copy(audio.path) as local:
            decoded = decode_to_scratch(local, cfg.output_sample_rate, scratch_dir=cfg.scratch_dir,
                                        limits=cfg.limits, vad=cfg.vad, vad_device=cfg.vad_device)
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
        yield from _clips_of(src, decoded, cfg, keep)


def segment_file(source: Source, path: str, cfg: SegmentConfig) -> Tuple[List[Segment], List[Rejection]]:
    """The clips to transcribe and the rejections of one local file, in the order the stage emits
    them: the stage without a pipeline, for measurements and checks on real recordings."""
    kept, rejected = [], []
    for out in segment_source(AudioFile(source, path, os.path.getsize(path)), cfg):
        if isinstance(out, AsrBatch):
            kept += out.segments
        elif isinstance(out, Rejection):
            rejected.append(out)
    return kept, rejected


def _clips_of(src, decoded: DecodedSource, cfg: SegmentConfig, keep: Optional[List[Segment]] = None):
    sr, hop = decoded.sample_rate, decoded.hop
    result = split_on_silence(decoded.db, decoded.hop_s, cfg.split, decoded.speech_on_grid())
    if result.file_reason:
        yield Rejection.for_source(src, STAGE, result.file_reason, result.file_detail(decoded.duration_s, cfg.split))
        yield SourceResult.of(src, "rejected", result.file_reason, decoded.duration_s)
        return
    speech = result.speech

    def span(piece):
        a, b = piece.start * hop, min(piece.end * hop, decoded.n_samples)
        return a, b, segment_key(src.source_id, int(round(a * 1000 / sr)))

    too_short = [(p, f"{(p.end - p.start) * decoded.hop_s:.2f} s after merging, minimum {cfg.split.min_clip_s:g} s")
                 for p in result.too_short]
    none = [None] * len(result.clips)
    cuts = VoiceCuts(list(result.clips), none, none, none, set(), [], None)
    if cfg.speakers and result.clips:
        cuts = one_voice_each(result.clips, result.pause, hop, sr, decoded.read_float, cfg.turns, cfg.split.min_clip_s)
    clips, mixed = cuts.clips, cuts.mixed
    quiet = [(p, why) for p, why in zip(result.too_quiet, quiet_details(decoded.db, result.too_quiet, decoded.hop_s,
                                                                         cfg.split))]
    dropped = [(p, "too_short", why) for p, why in too_short] + cuts.dropped + [(p, "too_quiet", why) for p, why in quiet]
    for piece, reason, why in dropped:
        a, b, key = span(piece)
        yield Rejection(src.source_id, src.uri, STAGE, reason, why, key=key, duration_s=round((b - a) / sr, 3))

    spans = [span(p) for p in clips]
    pack_path = fs.join(cfg.pack_dir, src.source_id + ".clips")
    segments: List[Segment] = []

    decays = []

    def write_pack(f):
        packed = flac.write_pack(f, (decoded.read(a, b) for a, b, _ in spans), sr)
        for piece, emb, change, voice, (a, b, key), (samples, offset, size) in zip(
                clips, cuts.embeddings, cuts.changes, cuts.voices, spans, packed):
            scores = replace(clip_scores.of_clip(samples, sr, decoded.db, speech, piece.start, piece.end,
                                                 decoded.hop_s), voice_change_score=change)
            decays.append(clip_scores.decay_rates(samples, sr, hop))
            segments.append(Segment(key, src, round(a / sr, 3), round(b / sr, 3), sr, pack_path, offset, size,
                                    scores, embedding_bytes(emb), source_voices=cuts.n_voices, source_voice=voice))

    if spans:
        fs.atomic_write(pack_path, write_pack)
        rt60 = clip_scores.source_rt60(decays)  # the room rarely changes within a recording: one value a source
        segments = [replace(s, scores=replace(s.scores, rt60_s=rt60)) for s in segments]
    if cfg.fingerprints:
        segments = attach_fingerprints(segments, decoded)
    if cfg.dnsmos:
        mos = dnsmos.score_clips((decoded.read(a, b) for a, b, _ in spans), sr, cfg.dnsmos_device)
        segments = [replace(seg, scores=replace(seg.scores, dnsmos_sig=sig, dnsmos_bak=bak, dnsmos_ovrl=ovrl))
                    for seg, (sig, bak, ovrl) in zip(segments, mos)]
    kept = []
    for i, seg in enumerate(segments):
        verdict = judge_audio(seg.scores, cfg.gates)  # first: noise and music also confuse the voice model
        if verdict is not None:
            yield Rejection.for_segment(seg, QUALITY, *verdict)
        elif i in mixed:
            yield Rejection.for_segment(seg, STAGE, "multi_speaker", "two voices with no pause between them to cut at")
        else:
            kept.append(i)
    if keep is not None:
        keep.extend(segments[i] for i in kept)
    else:
        yield from batch_clips([segments[i] for i in kept], lambda j: decoded.read(*spans[kept[j]][:2]), sr,
                               cfg.asr_batch_seconds, cfg.asr_max_batch, cfg.asr_sample_rate)
    n = len(spans) + len(too_short) + len(quiet)
    progress().add(sources=1, audio_s=decoded.duration_s, segments=n)
    yield SourceResult.of(src, "ok", duration_s=decoded.duration_s, n_segments=n)


class _SegmentFn(beam.DoFn):
    def __init__(self, cfg: SegmentConfig):
        self.cfg = cfg

    def process(self, audio: AudioFile):
        yield from route(segment_source(audio, self.cfg))


class SegmentAudio(beam.PTransform):
    """AudioFile → AsrBatch (main), Rejection (``rejected``), SourceResult (``sources``)."""

    def __init__(self, cfg: SegmentConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, audio_files):
        return audio_files | "SplitOnSilence" >> with_outputs(beam.ParDo(_SegmentFn(self.cfg)), main="batches")

