"""Beam RunInference model handler for CTC models.

Each element is an ``AsrBatch``: the segment stage already grouped one source's clips by length,
so every element is one model call, and the batch composition (with it every floating-point
result) is the same on every rerun. Up to four elements reach ``run_inference`` together so that
on CUDA the next one is prepared while the current one runs. The model is loaded once per worker
process (``load_model``) and shared between that process's threads, so the padding counters take
each call's own counts from ``Transcriber.many`` rather than differences of the shared totals.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from asr.model import AsrModelSpec, load_ctc_model
from asr.transcriber import AsrStats, TranscribeOptions, Transcriber
from schemas.records import AsrBatch


class CtcModelHandler(ModelHandler[AsrBatch, PredictionResult, Transcriber]):
    def __init__(self, spec: AsrModelSpec, opts: TranscribeOptions = TranscribeOptions()):
        super().__init__(min_batch_size=1, max_batch_size=4)
        self.spec, self.opts = spec, opts
        self._samples = Metrics.counter("speechmill_asr", "audio_samples")
        self._padded = Metrics.counter("speechmill_asr", "padding_samples")

    def load_model(self) -> Transcriber:
        return Transcriber(load_ctc_model(self.spec), self.opts)

    def run_inference(self, batch: Sequence[AsrBatch], model: Transcriber,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        call = AsrStats()
        outputs = model.many([list(b.audio) for b in batch], stats=call)
        self._samples.inc(call.samples)
        self._padded.inc(call.padded)
        return [PredictionResult(b, out, model.m.label) for b, out in zip(batch, outputs)]

    def get_num_bytes(self, batch: Sequence[AsrBatch]) -> int:
        return sum(4 * b.total_samples for b in batch)

    def get_metrics_namespace(self) -> str:
        return "speechmill_asr"

    def share_model_across_processes(self) -> bool:
        return False
