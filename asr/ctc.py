"""Greedy CTC decoding with a confidence per segment and per word, vectorised over a batch.

Confidence = the geometric mean, over the frames that emit a label (argmax is not blank), of the
posterior probability of that label: ``exp(mean(log p(argmax_t)))`` over those frames; 0 for an
empty transcript. A word's confidence is the same mean over the frames of its own characters.

Why those frames: a CTC model spends most frames on a confident blank, even on noise or foreign
speech, so averaging over every frame rates nearly everything above 0.9. The emitting frames are
where the model commits to characters; their posteriors drop when the audio does not support the
text. The geometric mean (mean log-probability) punishes a few very unsure characters more than an
arithmetic mean would, which is what a filter for mis-transcriptions wants.

Decoding is split in two so that a GPU never waits on Python: ``best_path`` reduces the logits to
one label id and one log-probability per frame on the model's device (the only data that crosses
to the host), and ``collapse`` / ``Vocabulary.words`` turn those into labels, runs and words with
whole-batch numpy operations, no per-frame or per-label Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch


@dataclass(frozen=True)
class CtcResult:
    ids: List[int]  # collapsed label ids, blanks removed
    starts: np.ndarray  # first frame of each emitted label's run
    ends: np.ndarray  # one past its last frame
    logp: np.ndarray  # summed log-probability of each label's frames
    confidence: float
    n_frames: int
    frames: Optional[List[int]] = None  # per-frame argmax (blanks included), when asked for

    @property
    def spans(self) -> List[Tuple[int, int]]:
        return list(zip(self.starts.tolist(), self.ends.tolist()))


def best_path(logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per frame, the argmax label (int32) and its log-probability (float32), on ``logits``' device."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    best_logp, best = logp.max(dim=-1)
    return best.to(torch.int32), best_logp


def collapse(labels: Sequence[np.ndarray], logp: Sequence[np.ndarray], blank_id: int,
             keep_frames: bool = False) -> List[CtcResult]:
    """Greedy CTC results for rows of per-frame argmax labels and their log-probabilities.

    A run of one label starts where the label changes (or emission starts) and ends before the
    next change; a blank between two equal labels separates them into two labels.
    """
    lens = np.array([len(x) for x in labels], dtype=np.int64)
    off = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    b = np.concatenate(labels).astype(np.int64, copy=False) if len(lens) else np.zeros(0, np.int64)
    lp = np.concatenate(logp).astype(np.float64, copy=False) if len(lens) else np.zeros(0)
    n = len(b)
    emitting = b != blank_id
    change = np.ones(n, dtype=bool)
    change[1:] = b[1:] != b[:-1]
    change[off[:-1][lens > 0]] = True  # every row starts a new run
    next_change = np.ones(n, dtype=bool)
    next_change[:-1] = change[1:]
    starts = np.flatnonzero(emitting & change)
    ends = np.flatnonzero(emitting & next_change) + 1
    # per-run sums: reduceat over [s0, e0, s1, e1, ...] sums each [s, e) at the even places
    if len(starts):
        bounds = np.empty(2 * len(starts), dtype=np.int64)
        bounds[0::2], bounds[1::2] = starts, ends
        run_lp = np.add.reduceat(np.append(lp, 0.0), bounds)[0::2]
    else:
        run_lp = np.zeros(0)
    row = np.searchsorted(off, starts, side="right") - 1
    n_lab = np.bincount(row, minlength=len(lens))
    emit_frames = np.bincount(row, weights=ends - starts, minlength=len(lens))
    emit_lp = np.bincount(row, weights=run_lp, minlength=len(lens))
    ids = b[starts]
    lab_off = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(n_lab, out=lab_off[1:])
    out = []
    for i in range(len(lens)):
        a, z = lab_off[i], lab_off[i + 1]
        conf = float(np.exp(emit_lp[i] / emit_frames[i])) if z > a else 0.0
        frames = b[off[i]:off[i + 1]].tolist() if keep_frames else None
        out.append(CtcResult(ids[a:z].tolist(), starts[a:z] - off[i], ends[a:z] - off[i], run_lp[a:z], conf,
                             int(lens[i]), frames))
    return out


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, blank_id: int,
                  keep_frames: bool = False) -> List[CtcResult]:
    """Decode ``logits`` [batch, frames, vocab] whose valid frames per row are ``lengths``."""
    best, best_logp = best_path(logits)
    best, best_logp, lens = best.cpu().numpy(), best_logp.cpu().numpy(), lengths.cpu().numpy()
    return collapse([best[i, :lens[i]] for i in range(len(lens))],
                    [best_logp[i, :lens[i]] for i in range(len(lens))], blank_id, keep_frames)


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    end_s: float
    confidence: float


class Vocabulary:
    """Label ids → characters and word boundaries, as arrays so whole transcripts map at once."""

    def __init__(self, id_to_token: Dict[int, str], delimiter: str = "|", special: Sequence[str] = ()):
        size = max(id_to_token) + 1 if id_to_token else 1
        self.text = [""] * size  # what a label writes into the transcript ("" for special/unknown)
        self.is_delim = np.zeros(size, dtype=bool)
        for i, tok in id_to_token.items():
            if tok == delimiter or (tok and not tok.strip()):
                self.is_delim[i] = True
            elif tok not in special:
                self.text[i] = "".join(tok.split())  # a label never splits a word
        self.writes = np.array([bool(t) for t in self.text])

    def _lookup(self, ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        inside = (ids >= 0) & (ids < len(self.text))
        safe = np.where(inside, ids, 0)
        return safe, inside & self.is_delim[safe], inside & self.writes[safe]

    def words(self, r: CtcResult, frame_s: float) -> Tuple[str, List[Word]]:
        """Transcript text and its words with times and geometric-mean confidences."""
        safe, delim, writes = self._lookup(np.asarray(r.ids, dtype=np.int64))
        word_no = np.cumsum(delim)  # labels between two delimiters share a word number
        keep = np.flatnonzero(writes)
        if not len(keep):
            return "", []
        wn = word_no[keep]
        first = np.flatnonzero(np.r_[True, wn[1:] != wn[:-1]])  # first kept label of each word
        last = np.r_[first[1:], len(keep)] - 1
        frames = np.add.reduceat((r.ends - r.starts)[keep].astype(np.float64), first)
        lp = np.add.reduceat(r.logp[keep], first)
        chars = [self.text[i] for i in safe[keep].tolist()]
        texts = ["".join(chars[a:z + 1]) for a, z in zip(first.tolist(), last.tolist())]
        starts = (r.starts[keep][first] * frame_s).round(3).tolist()
        ends = (r.ends[keep][last] * frame_s).round(3).tolist()
        confs = np.exp(lp / frames).round(4).tolist()
        return " ".join(texts), [Word(t, s, e, c) for t, s, e, c in zip(texts, starts, ends, confs)]


def words_from_tokens(tokens: Sequence[str], spans: Sequence[Tuple[int, int]], logp: Sequence[float],
                      frame_s: float, delimiter: str = "|") -> List[Word]:
    """Group emitted label strings into words at the delimiter (the token-level form of
    ``Vocabulary.words``, for callers that hold strings rather than ids)."""
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    r = CtcResult([vocab[t] for t in tokens], np.array([s for s, _ in spans], dtype=np.int64),
                  np.array([e for _, e in spans], dtype=np.int64), np.asarray(logp, dtype=np.float64), 0.0, 0)
    return Vocabulary({i: t for t, i in vocab.items()}, delimiter).words(r, frame_s)[1]
