"""Transcribe stage: ``RunInference`` with the CTC or the Whisper handler (by ``--asr_model``, see
``asr.builtin.is_whisper``); a failed batch becomes failure rows, a clip Whisper's gates refuse a
rejection with their reason.

The handler turns a model call that raises into per-clip errors itself (rather than Beam's
exception-handling outputs), so the stage is one single-output chain on every runner.
"""
from __future__ import annotations

import json
from typing import Optional

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult, RunInference

from asr.builtin import is_whisper
from asr.handler import CtcModelHandler
from asr.model import AsrModelSpec
from asr.transcriber import TranscribeOptions
from asr.whisper import WhisperGates, WhisperModelHandler
from schemas.outcomes import Stage
from schemas.records import AsrBatch, Rejection, Transcript
from storage import fs
from transforms.progress import progress
from transforms.routing import MAIN, Split

STAGE = Stage.TRANSCRIBE
FAILED = "failed"
USAGE = "usage"


def padding_fraction(usage) -> Optional[float]:
    """Share of the model's input that was padding, from ``(samples, padded)`` pairs."""
    real = sum(u[0] for u in usage)
    pad = sum(u[1] for u in usage)
    return round(pad / (real + pad), 4) if real + pad else None


def write_usage(path: str, usage) -> int:
    usage = list(usage)
    fs.atomic_write_bytes(path, json.dumps({"samples": sum(u[0] for u in usage), "padded": sum(u[1] for u in usage),
                                            "seconds": round(sum(u[2] for u in usage), 3),
                                            "calls": len(usage)}).encode())
    return 1


def read_usage(path: str) -> dict:
    """What a wave's ``WriteUsage`` recorded: the padding share and the model's busy seconds (summed
    over workers); empty when nothing was transcribed."""
    if not fs.exists(path):
        return {}
    d = json.loads(fs.read_bytes(path))
    return {"asr_padding_fraction": padding_fraction([(d["samples"], d["padded"])]), "asr_busy_s": d["seconds"],
            "asr_calls": d["calls"]}


class WriteUsage(beam.PTransform):
    """``(samples, padded, seconds)`` per model call → one JSON file of totals."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, usage):
        path = self.path
        return (usage
                | "One" >> beam.Map(lambda u: ("", u))
                | "Gather" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(lambda _, us: write_usage(path, us)))


def to_transcripts(result: PredictionResult):
    """Transcripts, and a failure row for each clip the model failed on by itself."""
    batch: AsrBatch = result.example
    yield USAGE, (result.inference.samples, result.inference.padded, result.inference.seconds)
    for seg, out in zip(batch.segments, result.inference.outputs):
        if out.error is not None:
            progress().add(rejected=1)
            yield FAILED, Rejection.for_segment(seg, STAGE, "asr_error", out.error)
            continue
        if out.rejected is not None:
            progress().add(rejected=1)
            yield FAILED, Rejection.for_segment(seg, STAGE, *out.rejected, text=out.text)
            continue
        words = tuple((w.text, w.start_s, w.end_s, w.confidence) for w in out.words)
        yield MAIN, Transcript(seg, out.text, out.confidence, result.model_id, words, out.ctc_frames)
    progress().add(transcribed=len(batch))


class Transcribe(beam.PTransform):
    """AsrBatch → Transcript (main), Rejection (``failed``), ``(samples, padded, seconds)`` per call (``usage``).

    With ``accelerator`` (a Beam resource hint such as ``type:nvidia-l4;count:1;install-nvidia-driver``)
    only the model step asks for a GPU: runners that honour hints (Dataflow) run it on GPU workers
    and every other step on plain ones.
    """

    def __init__(self, spec: AsrModelSpec, opts: TranscribeOptions = TranscribeOptions(),
                 handler_cls=CtcModelHandler, accelerator: Optional[str] = None,
                 whisper_gates: WhisperGates = WhisperGates()):
        super().__init__()
        self.spec, self.opts, self.handler_cls = spec, opts, handler_cls
        self.accelerator = accelerator
        self.whisper = is_whisper(spec.model) and handler_cls is CtcModelHandler
        self.whisper_gates = whisper_gates

    def _inference(self) -> RunInference:
        handler = (WhisperModelHandler(self.spec, self.opts, self.whisper_gates) if self.whisper
                   else self.handler_cls(self.spec, self.opts))
        step = RunInference(handler)
        return step.with_resource_hints(accelerator=self.accelerator) if self.accelerator else step

    def expand(self, batches):
        return (batches
                | "OneCall" >> beam.Map(lambda b: [b])  # the handler skips Beam's batching: see asr.handler
                | ("Whisper" if self.whisper else "Wav2Vec2CTC") >> self._inference()
                | "ToTranscripts" >> beam.FlatMap(to_transcripts)
                | "Outputs" >> Split("transcripts", (FAILED, USAGE)))
