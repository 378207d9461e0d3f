"""Transcribe stage: ``RunInference`` with the CTC handler; a failed batch becomes failure rows."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult, RunInference

from asr.handler import CtcModelHandler
from asr.model import AsrModelSpec
from asr.transcriber import TranscribeOptions
from corpus.progress import progress
from schemas.records import AsrBatch, Rejection, Transcript

STAGE = "transcribe"
FAILED = "failed"


def to_transcripts(result: PredictionResult):
    """Transcripts, and a failure row for each clip the model failed on by itself."""
    batch: AsrBatch = result.example
    for seg, out in zip(batch.segments, result.inference):
        if out.error is not None:
            progress().add(rejected=1)
            yield beam.pvalue.TaggedOutput(FAILED, Rejection.for_segment(seg, STAGE, "asr_error", out.error))
            continue
        words = tuple((w.text, w.start_s, w.end_s, w.confidence) for w in out.words)
        yield Transcript(seg, out.text, out.confidence, result.model_id, words, out.ctc_frames)
    progress().add(transcribed=len(batch))


def to_failures(failed):
    """One failure row per clip of a batch ``RunInference`` failed on as a whole.

    Beam's dead-letter element is ``(batch, (exception type, repr, traceback lines))``, the batch
    being the list of ``AsrBatch`` that ``BatchElements`` handed to one ``run_inference`` call.
    """
    batch, error = failed
    detail = error_detail(error)
    for b in batch if isinstance(batch, (list, tuple)) else [batch]:
        for seg in b.segments:
            yield Rejection.for_segment(seg, STAGE, "asr_error", detail)
        progress().add(rejected=len(b))


def error_detail(error) -> str:
    """``Type: message`` for an exception or Beam's ``(type, repr, traceback lines)`` of one."""
    if isinstance(error, BaseException):
        name, message = type(error).__name__, str(error)
    else:
        exc_type, exc_repr, lines = error
        name, message = exc_type.__name__, _message(exc_type, exc_repr, lines)
    return f"{name}: {message}" if message else name


def _message(exc_type: type, exc_repr: str, lines) -> str:
    """The exception's text: the traceback's last ``[module.]Type: message`` entry without its
    prefix (as ``str(exc)`` was), else the repr."""
    names = {exc_type.__qualname__, f"{exc_type.__module__}.{exc_type.__qualname__}"}
    for line in reversed(list(lines or ())):
        head, _, rest = line.rstrip("\n").partition(": ")
        if head in names:
            return rest
    return exc_repr


class Transcribe(beam.PTransform):
    """AsrBatch → Transcript (main) and Rejection (``failed``)."""

    def __init__(self, spec: AsrModelSpec, opts: TranscribeOptions = TranscribeOptions(),
                 handler_cls=CtcModelHandler):
        super().__init__()
        self.spec, self.opts, self.handler_cls = spec.validate(), opts.validate(), handler_cls

    def expand(self, batches):
        results, errors = batches | "Wav2Vec2CTC" >> RunInference(
            self.handler_cls(self.spec, self.opts)).with_exception_handling()
        outs = results | "ToTranscripts" >> beam.FlatMap(to_transcripts).with_outputs(FAILED, main="transcripts")
        failures = errors.failed_inferences | "FailedToRows" >> beam.FlatMap(to_failures)
        return {"transcripts": outs.transcripts,
                FAILED: (outs[FAILED], failures) | "AllFailures" >> beam.Flatten()}
