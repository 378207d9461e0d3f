"""Greedy CTC decoding and a confidence per segment, vectorised over a batch.

Confidence = the geometric mean, over the frames that emit a label (argmax is not blank), of the
posterior probability of that label: ``exp(mean(log p(argmax_t)))`` over those frames, and 0 for an
empty transcript.

Why those frames: a CTC model spends most frames on a confident blank, even on noise or foreign
speech, so averaging over every frame rates nearly everything above 0.9. The emitting frames are
where the model commits to characters; their posteriors drop when the audio does not support the
text. The geometric mean (mean log-probability) punishes a few very unsure characters more than
an arithmetic mean would, which is what a filter for mis-transcriptions wants.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch


@dataclass(frozen=True)
class CtcResult:
    ids: List[int]  # collapsed label ids, blanks removed
    confidence: float
    n_frames: int


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, blank_id: int) -> List[CtcResult]:
    """Decode ``logits`` [batch, frames, vocab] whose valid frames per row are ``lengths``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    best_logp, best = logp.max(dim=-1)  # [B, T]
    B, T = best.shape
    frame = torch.arange(T, device=best.device).unsqueeze(0)
    valid = frame < lengths.to(best.device).unsqueeze(1)
    emitting = valid & (best != blank_id)
    prev = torch.cat([torch.full((B, 1), -1, dtype=best.dtype, device=best.device), best[:, :-1]], 1)
    starts = emitting & (best != prev)  # first frame of each run of a non-blank label
    n_emit = emitting.sum(1)
    mean_logp = torch.where(n_emit > 0, (best_logp * emitting).sum(1) / n_emit.clamp(min=1),
                            torch.full_like(n_emit, float("-inf"), dtype=best_logp.dtype))
    conf = torch.exp(mean_logp).cpu().tolist()
    best_cpu, starts_cpu = best.cpu(), starts.cpu()
    lengths_cpu = lengths.cpu().tolist()
    out = []
    for i in range(B):
        ids = best_cpu[i][starts_cpu[i]].tolist()
        out.append(CtcResult(ids, float(conf[i]) if ids else 0.0, int(lengths_cpu[i])))
    return out
