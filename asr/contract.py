"""What the ASR model takes as input: its sample rate, its frame length, and clips batched by seconds.

The model's feature extractor fixes the rate it hears (``sampling_rate``) and its convolutional
front end the samples per output frame (the product of the config's ``conv_stride``: 320, 20 ms at
16 kHz). Until a model is loaded — the segment stage runs before it, and cuts the batches — the
defaults below stand for it; a loaded model brings its own, and the handler refuses a batch cut for
another rate (``check``) rather than transcribing it wrongly.

Clips are grouped shortest first, so each model call pads its clips to a length close to theirs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, List, Sequence, Tuple

import numpy as np

from audio.resample import int16_to_float
from schemas.records import AsrBatch, Segment

SAMPLE_RATE = 16000
FRAME_STRIDE = 320  # samples per CTC frame (wav2vec2's conv strides 5·2·2·2·2·2·2)


class AsrInputError(ValueError):
    """A batch that does not match the loaded model's input contract."""


@dataclass(frozen=True)
class AsrContract:
    sample_rate: int = SAMPLE_RATE
    stride: int = FRAME_STRIDE

    @property
    def frame_s(self) -> float:
        """Seconds per output frame (word timings are counted in these)."""
        return self.stride / self.sample_rate

    @classmethod
    def of_model(cls, model, feature_extractor=None) -> "AsrContract":
        """The contract a loaded model and its feature extractor state (defaults where they are silent)."""
        cfg = getattr(model, "config", None)
        stride = int(np.prod(getattr(cfg, "conv_stride", (FRAME_STRIDE,)))) if cfg is not None else FRAME_STRIDE
        return cls(int(getattr(feature_extractor, "sampling_rate", SAMPLE_RATE)), stride)

    def check(self, batch: AsrBatch, model: str = "the ASR model") -> None:
        """Raise ``AsrInputError`` when ``batch`` was not cut for this contract."""
        if batch.sample_rate != self.sample_rate:
            raise AsrInputError(f"ASR input at {batch.sample_rate} Hz, but {model} takes {self.sample_rate} Hz "
                                "(its feature extractor's sampling_rate): the segment stage must resample to it")


def plan_batches(durations: List[float], batch_seconds: float, max_batch: int) -> List[List[int]]:
    """Indices grouped by length (shortest first), each group at most ``batch_seconds`` of audio."""
    order = sorted(range(len(durations)), key=lambda i: (durations[i], i))
    batches, cur, total = [], [], 0.0
    for i in order:
        if cur and (total + durations[i] > batch_seconds or len(cur) >= max_batch):
            batches.append(cur)
            cur, total = [], 0.0
        cur.append(i)
        total += durations[i]
    if cur:
        batches.append(cur)
    return batches


def batch_clips(segments: Sequence[Segment], read: Callable[[int], np.ndarray], from_rate: int,
                batch_seconds: float, max_batch: int, sample_rate: int = SAMPLE_RATE,
                part: Tuple[int, int] = (0, 1)) -> Iterator[AsrBatch]:
    """``AsrBatch``es of ``segments`` (``read(i)``: int16 samples of the i-th, at ``from_rate``), each
    clip brought to ``sample_rate``; a batch's audio is read only when it is reached.

    ``part=(k, n)``: only the k-th of n consecutive runs of the batches, cut from the plan of all
    of them, so the n parts together are exactly the batches of the whole (a long source's parts)."""
    groups = plan_batches([s.duration_s for s in segments], batch_seconds, max_batch)
    k, n = part
    for group in groups[k * len(groups) // n:(k + 1) * len(groups) // n]:
        yield AsrBatch(segments=tuple(segments[i] for i in group),
                       audio=tuple(int16_to_float(read(i), from_rate, sample_rate) for i in group),
                       sample_rate=sample_rate)
