"""Transcribe stage: ``RunInference`` with the CTC handler; a failed batch becomes failure rows."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult, RunInference

from asr.handler import CtcModelHandler
from asr.model import AsrModelSpec
from corpus.progress import progress
from schemas.records import AsrBatch, Rejection, Transcript

STAGE = "transcribe"
FAILED = "failed"


def to_transcripts(result: PredictionResult):
    batch: AsrBatch = result.example
    for seg, out in zip(batch.segments, result.inference):
        yield Transcript(seg, out.text, out.confidence, result.model_id)
    progress().add(transcribed=len(batch))


def to_failures(failed):
    batch, exc = failed if isinstance(failed, tuple) else (failed, "unknown error")
    items = batch if isinstance(batch, (list, tuple)) else [batch]
    for b in items:
        for seg in b.segments:
            yield Rejection.for_segment(seg, STAGE, "asr_error", f"{type(exc).__name__}: {exc}")


class Transcribe(beam.PTransform):
    """AsrBatch → Transcript (main) and Rejection (``failed``)."""

    def __init__(self, spec: AsrModelSpec):
        super().__init__()
        self.spec = spec

    def expand(self, batches):
        results, errors = batches | "Wav2Vec2CTC" >> RunInference(
            CtcModelHandler(self.spec)).with_exception_handling()
        transcripts = results | "ToTranscripts" >> beam.FlatMap(to_transcripts)
        failures = errors.failed_inferences | "FailedToRows" >> beam.FlatMap(to_failures)
        return {"transcripts": transcripts, FAILED: failures}
