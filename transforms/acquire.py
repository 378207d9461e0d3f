"""Acquire stage: Source → AudioFile (main), Rejection (``rejected``), SourceResult (``sources``)."""
from __future__ import annotations

import apache_beam as beam

from acquisition.config import AcquireConfig
from acquisition.fetch import acquire
from schemas.outcomes import Status
from schemas.records import AudioFile, SourceResult
from transforms.routing import route, with_outputs


def acquire_records(source, cfg: AcquireConfig):
    out = acquire(source, cfg)
    if isinstance(out, AudioFile):
        yield out
    else:
        yield out
        yield SourceResult.of(source, Status.FAILED, out.reason)


class _AcquireFn(beam.DoFn):
    def __init__(self, cfg: AcquireConfig):
        self.cfg = cfg

    def process(self, source):
        yield from route(acquire_records(source, self.cfg))


class Acquire(beam.PTransform):
    def __init__(self, cfg: AcquireConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, sources):
        return sources | "Fetch" >> with_outputs(beam.ParDo(_AcquireFn(self.cfg)), main="audio")
