"""Acquire stage: Source → AudioFile (main) or Rejection (``failed``)."""
from __future__ import annotations

import apache_beam as beam

from acquisition.fetch import AcquireConfig, acquire
from corpus.progress import progress
from schemas.records import AudioFile, SourceResult

FAILED = "failed"
SOURCES = "sources"


class _AcquireFn(beam.DoFn):
    def __init__(self, cfg: AcquireConfig):
        self.cfg = cfg

    def process(self, source):
        out = acquire(source, self.cfg)
        if isinstance(out, AudioFile):
            yield out
        else:
            progress().add(sources_failed=1)
            yield beam.pvalue.TaggedOutput(FAILED, out)
            yield beam.pvalue.TaggedOutput(SOURCES, SourceResult(source, "failed", reason=out.reason,
                                                                 retryable=out.retryable))


class Acquire(beam.PTransform):
    def __init__(self, cfg: AcquireConfig):
        super().__init__()
        self.cfg = cfg.validate()

    def expand(self, sources):
        return sources | "Fetch" >> beam.ParDo(_AcquireFn(self.cfg)).with_outputs(FAILED, SOURCES, main="audio")
