"""Beam RunInference model handler for CTC models.

Each element is an ``AsrBatch``: the segment stage already grouped one source's clips by length,
so every element is one model call, and the batch composition (with it every floating-point
result) is the same on every rerun. Each element reaches ``run_inference`` alone, as a one-item
list (the stage skips Beam's batching, which holds a partial group back until the end of a bundle:
output that not every runner collects). A call
that raises becomes an error for each of its clips (the stage turns them into failure rows), so a
bad batch costs only its own clips on every runner; a batch at another rate than the model's
(``asr.contract``) is a misconfigured run, and raises. The model is loaded once per worker
process (``load_model``) and shared between that process's threads, so the padding counters take
each call's own counts from ``Transcriber.many`` rather than differences of the shared totals.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Tuple

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from asr.model import AsrModelSpec, load_ctc_model
from asr.transcriber import AsrOutput, AsrStats, TranscribeOptions, Transcriber
from schemas.records import AsrBatch


@dataclass(frozen=True)
class AsrCall:
    """One element's outputs, and the model call's real and padding samples (carried as data, so the
    run can report its padding on runners without metrics; counted once per call)."""
    outputs: Tuple[AsrOutput, ...]
    samples: int = 0
    padded: int = 0
    seconds: float = 0.0  # wall time of the model call


class AsrHandler(ModelHandler[AsrBatch, PredictionResult, Any]):
    """What every ASR handler shares: each ``AsrBatch`` is already one model call (Beam's own batching
    is skipped: some runners drop what a DoFn emits when a bundle ends), sized by its samples."""

    def should_skip_batching(self) -> bool:
        return True

    def get_num_bytes(self, batch: Sequence[AsrBatch]) -> int:
        return sum(4 * b.total_samples for b in batch)

    def get_metrics_namespace(self) -> str:
        return "speechmill_asr"

    def share_model_across_processes(self) -> bool:
        return False


class CtcModelHandler(AsrHandler):
    def __init__(self, spec: AsrModelSpec, opts: TranscribeOptions = TranscribeOptions()):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self.spec, self.opts = spec, opts
        self._samples = Metrics.counter("speechmill_asr", "audio_samples")
        self._padded = Metrics.counter("speechmill_asr", "padding_samples")

    def load_model(self) -> Transcriber:
        return Transcriber(load_ctc_model(self.spec), self.opts)

    def run_inference(self, batch: Sequence[AsrBatch], model: Transcriber,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        for b in batch:  # a batch cut for another rate is a wrong run, not a bad clip: it stops the run
            model.m.contract.check(b, model.m.label)
        try:
            return self.transcribe(batch, model)
        except Exception as e:  # noqa: BLE001 - reported per clip, the run goes on
            detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            return [PredictionResult(b, AsrCall(tuple(AsrOutput("", 0.0, error=detail) for _ in b.segments)),
                                     model.m.label) for b in batch]

    def transcribe(self, batch: Sequence[AsrBatch], model: Transcriber) -> Iterable[PredictionResult]:
        call = AsrStats()
        started = time.perf_counter()
        outputs = model.many([list(b.audio) for b in batch], stats=call)
        seconds = time.perf_counter() - started
        self._samples.inc(call.samples)
        self._padded.inc(call.padded)
        return [PredictionResult(b, AsrCall(tuple(out), *((call.samples, call.padded, seconds) if i == 0 else (0, 0, 0.0))),
                                 model.m.label) for i, (b, out) in enumerate(zip(batch, outputs))]

