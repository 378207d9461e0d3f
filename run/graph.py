"""The Beam graphs of a run: the listing pipeline and one wave's pipeline, wired from ``transforms/``.

Each ends in one ``Flatten`` of every write (``finished``), so runners that compute only what the
last transform needs (the Dask runner) still run every write.
"""
from __future__ import annotations

import functools
from typing import List, Optional

import apache_beam as beam

from corpus.layout import REJECTED_MANIFEST, REJECTED_SHARDS, Layout
from run.settings import CorpusSettings
from run.waves import item_part, write_item_part
from schemas import tables
from schemas.outcomes import Status
from schemas.records import Source, SourceResult
from speakers.cluster import ClusterParams
from speakers.turns import TurnParams
from storage import fs
from transforms.acquire import Acquire
from transforms.dedup import REPEATS, UNKEPT, Dedup, MarkRepeats
from transforms.expand import Expand
from transforms.parts import PART, TRANSCRIPTS, PartSpec, SavePart, WorkPart
from transforms.quality import Quality
from transforms.routing import REJECTED, SOURCES
from transforms.segment import SegmentAudio, SegmentConfig
from transforms.shard import ShardConfig, WriteShards
from transforms.speakers import SPEAKERS, AssignSpeakers, CountKept
from transforms.transcribe import USAGE, Transcribe, WriteUsage
from transforms.write_table import WriteTable

ASR_USAGE = "asr_usage.json"  # a wave's model input totals, read by the driver (not published)


def build_expansion(p: beam.Pipeline, source_files: List[str], bad_lines: list, settings: CorpusSettings,
                    work: Layout, tag: str, done_path: str, failed_path: Optional[str] = None) -> beam.PCollection:
    """The plan's first pipeline: list every pending source's items (``items.parquet``), with rows for
    the sources that could not be listed, items deferred by a limit, and unusable lines.

    ``source_files`` hold the pending sources as JSON lines, a chunk each, read by the workers (the job
    graph carries paths, not a million sources; every runner, the Dask runner too, runs a ``Create``).

    ``done_path`` is a lookup file of finished source ids (``corpus.done_set``) that each worker
    reads from storage; ``failed_path`` one of the sources whose latest row is a failure (a folder or
    feed among them that lists now gets a ``listed`` row). Returns the pipeline's one final PCollection
    (see ``finished``).
    """
    expanded = (p
                | "SourceFiles" >> beam.Create(source_files)
                | "Sources" >> beam.FlatMap(lambda path: fs.read_bytes(path).decode().splitlines())
                | "Parse" >> beam.Map(Source.from_json)
                | "Spread" >> beam.Reshuffle()
                | "Expand" >> Expand(settings.acquire, done_path, failed_path))
    # items as sharded Parquet, written as they come (a million items never gather on one worker);
    # the plan sorts them into sources-file order
    written = [expanded["items"]
               | "ItemRows" >> beam.Map(lambda s: (item_part(s.source_id), tables.item_row(s)))
               | "ByPart" >> beam.GroupByKey()
               | "WriteItems" >> beam.Map(write_item_part, work.root)]
    bad_rows = p | "BadLines" >> beam.Create([r for _, r in bad_lines])
    bad_sources = p | "BadLineSources" >> beam.Create(
        [SourceResult.of(s, Status.FAILED, r.reason) for s, r in bad_lines])
    rejected = (expanded[REJECTED], bad_rows) | "AllRejections" >> beam.Flatten()
    written.append(rejected | "WriteRejected" >> WriteTable(work.path("rejected.parquet"), tables.REJECTED,
                                                            functools.partial(tables.rejected_row, run=tag)))
    results = (expanded[SOURCES], bad_sources) | "AllSources" >> beam.Flatten()
    written.append(results | "WriteSources" >> WriteTable(work.path("sources.parquet"), tables.SOURCES,
                                                          functools.partial(tables.source_row, run=tag)))
    return finished(written)


def finished(written: List[beam.PCollection]) -> beam.PCollection:
    """Join every write's output into one last PCollection, applied last.

    A runner that computes only what the pipeline's final transform depends on (the Dask runner)
    then still runs every write; on the others it is a no-op.
    """
    return tuple(written) | "Finished" >> beam.Flatten()


def build_wave(p: beam.Pipeline, items: List[Source], settings: CorpusSettings, work: Layout, first_index: int,
               tag: str, first_rejected_index: int = 0, known_speakers_path: Optional[str] = None,
               dedup_path: Optional[str] = None, part: Optional[PartSpec] = None) -> beam.PCollection:
    """One wave: fetch, segment, transcribe, judge and shard ``items``, writing into the wave's work area.

    Returns the pipeline's one final PCollection (see ``finished``). With ``--asr_accelerator`` only
    the transcription step gets a GPU, so the segment step's models (VAD, DNSMOS, voice encoder) run on CPU.
    ``dedup_path`` is the published corpus's dedup index (``transforms.dedup``), when dedup is on.
    With ``part``, ``items`` is one long source and the wave works that part of it (``transforms.parts``):
    a part before the last only saves its transcripts.
    """
    side_device = "cpu" if settings.asr_accelerator else settings.asr.device
    seg_cfg = SegmentConfig(pack_dir=work.pack_dir, split=settings.split,
                            output_sample_rate=settings.output_sample_rate,
                            asr_batch_seconds=settings.asr_batch_seconds,
                            decode_timeout_s=settings.decode_timeout_s,
                            max_duration_s=settings.acquire.max_duration_s,
                            max_scratch_bytes=settings.max_scratch_bytes,
                            scratch_dir=settings.scratch_dir, vad=settings.vad == "silero", gates=settings.gates,
                            dnsmos=settings.dnsmos, dnsmos_device=side_device, vad_device=side_device,
                            speakers=settings.speakers,
                            turns=TurnParams(min_voice_s=settings.voices.min_voice_s,
                                             same_voice_similarity=settings.voices.same_voice_similarity,
                                             change_margin=settings.voices.voice_change_margin,
                                             change_evidence_s=settings.voices.voice_change_evidence_s,
                                             min_edge_s=settings.voices.min_edge_turn_s,
                                             change_pause_s=settings.voices.voice_change_pause_s,
                                             change_guard_s=settings.voices.voice_change_guard_s,
                                             device=side_device, precision=settings.voices.speaker_precision),
                            fingerprints=settings.dedup.audio)
    shard_cfg = ShardConfig(shards_dir=work.shards_dir, manifest_dir=work.manifest_dir,
                            prefix=settings.shard_prefix, samples_per_shard=settings.samples_per_shard,
                            first_index=first_index)

    sourced = p | "Items" >> beam.Create(items) | "Spread" >> beam.Reshuffle()
    if part is None:
        acquired = sourced | "Acquire" >> Acquire(settings.acquire)
        segmented = acquired["audio"] | "Segment" >> SegmentAudio(seg_cfg)
        early = [(acquired[REJECTED], segmented[REJECTED]), (acquired[SOURCES], segmented[SOURCES])]
    else:  # one part of a long source (``transforms.parts``)
        segmented = sourced | "Part" >> WorkPart(part, settings.acquire, seg_cfg)
        early = [(segmented[REJECTED],), (segmented[SOURCES],)]
    transcribed = segmented["batches"] | "Transcribe" >> Transcribe(settings.asr, settings.transcribe,
                                                                           accelerator=settings.asr_accelerator,
                                                                           whisper_gates=settings.whisper_gates)
    written = [transcribed[USAGE] | "WriteUsage" >> WriteUsage(work.path(ASR_USAGE))]
    if part is not None and not part.last:  # the part's transcripts are its commit; the last part publishes
        written.append((transcribed["transcripts"], transcribed["failed"], segmented[PART])
                       | "SavePart" >> SavePart(part))
        return finished(written)
    transcripts = transcribed["transcripts"]
    if part is not None:
        transcripts = (transcripts, segmented[TRANSCRIPTS]) | "WithSaved" >> beam.Flatten()
    judged = transcripts | "Quality" >> Quality(settings.quality)
    kept = judged["kept"]
    speakers = None
    if settings.speakers:
        voiced = kept | "Speakers" >> AssignSpeakers(ClusterParams(
            same_voice_similarity=settings.voices.same_voice_similarity, min_voice_s=settings.voices.min_voice_s,
            link_similarity=settings.voices.speaker_link_similarity, similar_k=settings.similar_k),
            known_speakers_path)
        kept, speakers = voiced["kept"], voiced[SPEAKERS]
    rejections = [*early[0], transcribed["failed"], judged[REJECTED]]
    results = early[1] | "AllSources" >> beam.Flatten()
    if settings.dedup.active:  # after the speakers: the text policy is per speaker
        deduped = kept | "Dedup" >> Dedup(settings.dedup, dedup_path)
        kept = deduped["kept"]
        rejections.append(deduped[REJECTED])
        results = results | "SourceRepeats" >> MarkRepeats(deduped[REPEATS])
        if speakers is not None:  # a speaker's clip count is of the clips kept
            speakers = speakers | "CountKept" >> CountKept(deduped[UNKEPT])
    if speakers is not None:
        written.append(speakers | "WriteSpeakers" >> WriteTable(
            work.path("speakers.parquet"), tables.SPEAKERS, functools.partial(tables.speaker_row, run=tag)))
    written.append(kept | "Shard" >> WriteShards(shard_cfg))

    rejected = tuple(rejections) | "AllRejections" >> beam.Flatten()
    written.append(rejected | "WriteRejected" >> WriteTable(work.path("rejected.parquet"), tables.REJECTED,
                                                            functools.partial(tables.rejected_row, run=tag)))
    if settings.keep_rejected_audio:
        rejected_cfg = ShardConfig(shards_dir=work.path(REJECTED_SHARDS), manifest_dir=work.path(REJECTED_MANIFEST),
                                   prefix=settings.shard_prefix, samples_per_shard=settings.samples_per_shard,
                                   first_index=first_rejected_index, rejected=True)
        written.append(rejected
                       | "WithAudio" >> beam.Filter(lambda r: r.segment is not None)
                       | "RejectedShards" >> WriteShards(rejected_cfg))
    written.append(results | "WriteSources" >> WriteTable(work.path("sources.parquet"), tables.SOURCES,
                                                          functools.partial(tables.source_row, run=tag)))
    return finished(written)
