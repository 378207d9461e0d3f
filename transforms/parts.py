"""Part stage: part k of n of a long source, in place of the acquire and segment stages.

A source longer than ``--commit_every_hours`` is planned as n parts, each a wave of its own
(``run.waves``), so a crash in its last hour does not redo its first ones. The cut is chosen so the
corpus is byte-identical to the source done in one piece:

* everything that looks at the whole source — the clip plan, the cuts at speaker turns,
  reverberation pooled over its clips, the audio gates, fingerprints — runs once, in the first
  part, over the whole source (``transforms.segment``), and is saved (``corpus.parts``);
* the parts share out only the transcription, by the very batches a one-piece run forms
  (``asr.contract.batch_clips``), so each clip is transcribed in the same company and the model
  gives the same floats; each part's transcripts are saved as the part's commit;
* the last part hands every saved transcript, rejection and the source's row on to the rules that
  need all of a source's clips — speaking-rate outliers, speaker clustering, dedup — and to the
  shards, exactly as one wave holding the whole source would.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import apache_beam as beam

from acquisition.config import AcquireConfig
from acquisition.fetch import acquire
from asr.contract import batch_clips
from audio.flac import decode_flac
from corpus.parts import PartStore
from corpus.shards import PackReader
from schemas.outcomes import Status
from schemas.records import AudioFile, Rejection, Segment, Source, SourceResult, Transcript
from transforms.routing import REJECTED, SOURCES, route, with_outputs
from transforms.segment import SegmentConfig, segment_source

TRANSCRIPTS = "transcripts"  # output: transcripts saved by the earlier parts
PART = "part"  # output: one marker per part worked, so its checkpoint is written even with no clips


@dataclass(frozen=True)
class PartSpec:
    index: int
    count: int
    folder: str  # the source's checkpoint folder (``corpus.parts``)

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


def first_pass(source: Source, acquire_cfg: AcquireConfig, seg_cfg: SegmentConfig) -> list:
    """The whole source fetched and segmented once: its rejections, its row and the clips to transcribe."""
    got = acquire(source, acquire_cfg)
    if not isinstance(got, AudioFile):
        return [got, SourceResult.of(source, Status.FAILED, got.reason)]
    keep = []
    records = list(segment_source(got, seg_cfg, keep))
    return records + keep


def part_records(source: Source, spec: PartSpec, acquire_cfg: AcquireConfig, seg_cfg: SegmentConfig) -> Iterator:
    """This part's ASR batches (main), its marker, and in the last part everything saved before."""
    store = PartStore(spec.folder)
    first = store.read_first()
    if first is None:
        first = first_pass(source, acquire_cfg, replace(seg_cfg, pack_dir=store.pack_dir))
        store.write_first(first)
    kept = [r for r in first if isinstance(r, Segment)]
    reader = PackReader()

    def read(i: int):
        s = kept[i]
        return decode_flac(reader.read(s.pack_path, s.pack_offset, s.pack_length))[0]

    if kept:
        yield from route(batch_clips(kept, read, kept[0].sample_rate, seg_cfg.asr_batch_seconds,
                                     seg_cfg.asr_max_batch, seg_cfg.asr_sample_rate, part=(spec.index, spec.count)))
    yield PART, spec.index
    if spec.last:
        yield from route(r for r in first if isinstance(r, (Rejection, SourceResult)))
        for j in range(spec.count - 1):
            for r in store.read_asr(j):
                yield (TRANSCRIPTS, r) if isinstance(r, Transcript) else (REJECTED, r)


class _PartFn(beam.DoFn):
    def __init__(self, spec: PartSpec, acquire_cfg: AcquireConfig, seg_cfg: SegmentConfig):
        self.spec, self.acquire_cfg, self.seg_cfg = spec, acquire_cfg, seg_cfg

    def process(self, source: Source):
        yield from part_records(source, self.spec, self.acquire_cfg, self.seg_cfg)


class WorkPart(beam.PTransform):
    """Source → AsrBatch (``batches``), saved Transcript (``transcripts``), Rejection (``rejected``),
    SourceResult (``sources``), the part's marker (``part``)."""

    def __init__(self, spec: PartSpec, acquire_cfg: AcquireConfig, seg_cfg: SegmentConfig):
        super().__init__()
        self.spec, self.acquire_cfg, self.seg_cfg = spec, acquire_cfg, seg_cfg

    def expand(self, sources):
        return sources | "Work" >> with_outputs(beam.ParDo(_PartFn(self.spec, self.acquire_cfg, self.seg_cfg)),
                                                main="batches", tags=(REJECTED, SOURCES, TRANSCRIPTS, PART))


def save_part(folder: str, index: int, records) -> int:
    """Write the part's transcripts and failures as its checkpoint (the marker itself is left out)."""
    return PartStore(folder).write_asr(index, [r for r in records if not isinstance(r, int)])


class SavePart(beam.PTransform):
    """(transcripts, failures, marker) → the part's checkpoint, one file written once all are in."""

    def __init__(self, spec: PartSpec):
        super().__init__()
        self.spec = spec

    def expand(self, pcolls):
        folder, index = self.spec.folder, self.spec.index
        return (pcolls
                | "All" >> beam.Flatten()
                | "One" >> beam.Map(lambda r: ("", r))
                | "Gather" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(lambda _, rs: save_part(folder, index, rs)))
