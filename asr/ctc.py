"""Greedy CTC decoding with a confidence per segment and per word, vectorised over a batch.

Confidence = the geometric mean, over the frames that emit a label (argmax is not blank), of the
posterior probability of that label: ``exp(mean(log p(argmax_t)))`` over those frames; 0 for an
empty transcript. A word's confidence is the same mean over the frames of its own characters.

Why those frames: a CTC model spends most frames on a confident blank, even on noise or foreign
speech, so averaging over every frame rates nearly everything above 0.9. The emitting frames are
where the model commits to characters; their posteriors drop when the audio does not support the
text. The geometric mean (mean log-probability) punishes a few very unsure characters more than an
arithmetic mean would, which is what a filter for mis-transcriptions wants.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch


@dataclass(frozen=True)
class CtcResult:
    ids: List[int]  # collapsed label ids, blanks removed
    spans: List[Tuple[int, int]]  # [start, end) frames of each emitted label
    logp: List[float]  # summed log-probability of each label's frames
    confidence: float
    n_frames: int
    frames: Optional[List[int]] = None  # per-frame argmax (blanks included), when asked for


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, blank_id: int,
                  keep_frames: bool = False) -> List[CtcResult]:
    """Decode ``logits`` [batch, frames, vocab] whose valid frames per row are ``lengths``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    best_logp, best = logp.max(dim=-1)  # [B, T]
    B, T = best.shape
    frame = torch.arange(T, device=best.device).unsqueeze(0)
    valid = frame < lengths.to(best.device).unsqueeze(1)
    emitting = valid & (best != blank_id)
    n_emit = emitting.sum(1)
    total = (best_logp * emitting).sum(1)
    conf = torch.where(n_emit > 0, torch.exp(total / n_emit.clamp(min=1)), torch.zeros_like(total))
    best_np, emit_np = best.cpu().numpy(), emitting.cpu().numpy()
    lp_np = (best_logp * emitting).cpu().numpy()
    conf_np, len_np = conf.cpu().numpy(), lengths.cpu().numpy()
    out = []
    for i in range(B):
        e, b = emit_np[i], best_np[i]
        # a run of one label starts where the label changes (or emission starts) and ends before the
        # next change; a blank between two equal labels separates them into two runs
        change = np.ones(T, dtype=bool)
        change[1:] = b[1:] != b[:-1]
        starts = np.flatnonzero(e & change)
        nxt = np.append(starts[1:], T)
        spans, lps = [], []
        for s, limit in zip(starts, nxt):
            run = s + 1
            while run < limit and e[run] and b[run] == b[s]:
                run += 1
            spans.append((int(s), int(run)))
            lps.append(float(lp_np[i, s:run].sum()))
        ids = b[starts].tolist()
        frames = b[: int(len_np[i])].tolist() if keep_frames else None
        out.append(CtcResult(ids, spans, lps, float(conf_np[i]) if ids else 0.0, int(len_np[i]), frames))
    return out


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    end_s: float
    confidence: float


def words_from_tokens(tokens: Sequence[str], spans: Sequence[Tuple[int, int]], logp: Sequence[float],
                      frame_s: float, delimiter: str = "|") -> List[Word]:
    """Group emitted labels into words at the delimiter, with times and geometric-mean confidences."""
    words, cur, cur_spans, cur_lp = [], [], [], []

    def flush():
        if cur:
            n = sum(e - s for s, e in cur_spans)
            words.append(Word("".join(cur), round(cur_spans[0][0] * frame_s, 3),
                              round(cur_spans[-1][1] * frame_s, 3), round(float(np.exp(sum(cur_lp) / n)), 4)))
        cur.clear(), cur_spans.clear(), cur_lp.clear()

    for tok, span, lp in zip(tokens, spans, logp):
        if tok == delimiter or tok == " ":
            flush()
        else:
            cur.append(tok)
            cur_spans.append(span)
            cur_lp.append(lp)
    flush()
    return words
