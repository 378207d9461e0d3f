"""Beam RunInference model handler for CTC models.

Each element is an ``AsrBatch``: the segment stage already grouped one source's clips by length,
so the handler runs one model call per element (Beam's own batching is set to one element) and
the batch composition, and with it every floating-point result, is the same on every rerun.
The model is loaded once per worker process in ``load_model`` and shared between its threads.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from asr.model import AsrModelSpec, LoadedCtcModel, load_ctc_model
from asr.transcriber import transcribe
from schemas.records import AsrBatch


class CtcModelHandler(ModelHandler[AsrBatch, PredictionResult, LoadedCtcModel]):
    def __init__(self, spec: AsrModelSpec):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self.spec = spec

    def load_model(self) -> LoadedCtcModel:
        return load_ctc_model(self.spec)

    def run_inference(self, batch: Sequence[AsrBatch], model: LoadedCtcModel,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        return [PredictionResult(b, transcribe(model, list(b.audio)), model.label) for b in batch]

    def get_num_bytes(self, batch: Sequence[AsrBatch]) -> int:
        return sum(4 * b.total_samples for b in batch)

    def get_metrics_namespace(self) -> str:
        return "speechmill_asr"

    def share_model_across_processes(self) -> bool:
        return False
