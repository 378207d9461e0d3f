"""Run a loaded CTC model on batches of variable-length clips.

* Each clip is normalised the way the feature extractor would (zero mean, unit variance over its own
  samples) and zero-padded to the longest in the batch; layer-norm models get an attention mask,
  group-norm ones must see plain zero padding and no mask.
* A clip longer than ``chunk_s`` is cut into overlapping windows on the model's frame grid; each
  window's logits lose half the overlap at their inner edges and the rest are joined, so memory is
  bounded by the window, not the clip.
* A CUDA out-of-memory error halves the batch and retries; any other error splits the batch until
  the failing clip is alone, so only that clip fails.
* On CUDA: weights in ``dtype``, input staged in pinned memory and copied without blocking, and
  the next batch is prepared on a thread while the current one runs.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from asr.ctc import Word, greedy_decode, words_from_tokens
from asr.model import LoadedCtcModel


@dataclass(frozen=True)
class AsrOutput:
    text: str
    confidence: float
    words: Tuple[Word, ...] = ()
    ctc_frames: Optional[Tuple[int, ...]] = None  # per-frame argmax ids, with --keep_ctc_tokens
    error: Optional[str] = None


@dataclass(frozen=True)
class TranscribeOptions:
    chunk_s: float = 30.0
    chunk_overlap_s: float = 2.0
    keep_ctc_tokens: bool = False

    def validate(self) -> "TranscribeOptions":
        if self.chunk_s <= 2 * self.chunk_overlap_s:
            raise ValueError(f"asr_chunk_s ({self.chunk_s}) must exceed twice the overlap ({self.chunk_overlap_s})")
        return self


@dataclass
class AsrStats:
    samples: int = 0
    padded: int = 0
    batches: int = 0
    oom_splits: int = 0
    failed: int = 0

    @property
    def padding_fraction(self) -> float:
        """Share of the model's input that was padding."""
        total = self.samples + self.padded
        return self.padded / total if total else 0.0


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


@dataclass
class _Piece:
    clip: int
    start: int  # sample offset in the clip
    audio: np.ndarray
    keep: Tuple[int, int] = (0, -1)  # frames of this piece's logits to keep


@dataclass
class _Prepared:
    x: torch.Tensor
    lengths: torch.Tensor


class Transcriber:
    def __init__(self, loaded: LoadedCtcModel, opts: TranscribeOptions = TranscribeOptions()):
        self.m = loaded
        self.opts = opts.validate()
        cfg = getattr(loaded.model, "config", None)
        self.stride = int(np.prod(getattr(cfg, "conv_stride", (320,)))) if cfg is not None else 320
        self.frame_s = self.stride / loaded.sample_rate
        self.stats = AsrStats()
        self._tokens = {i: t for t, i in loaded.tokenizer.get_vocab().items()}
        self._delimiter = getattr(loaded.tokenizer, "word_delimiter_token", None) or " "
        self._special = set(getattr(loaded.tokenizer, "all_special_tokens", [])) - {self._delimiter}
        self._pool = ThreadPoolExecutor(1) if loaded.device.type == "cuda" else None

    # -- pieces ---------------------------------------------------------------------------------
    def pieces(self, audio: Sequence[np.ndarray]) -> List[_Piece]:
        sr, stride = self.m.sample_rate, self.stride
        win = int(self.opts.chunk_s * sr) // stride * stride
        margin_f = int(self.opts.chunk_overlap_s * sr) // stride
        hop = win - 2 * margin_f * stride
        out = []
        for i, a in enumerate(audio):
            a = np.ascontiguousarray(a, dtype=np.float32)
            if self.m.do_normalize:  # over the whole clip, before any windowing
                a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
            if len(a) <= win:
                out.append(_Piece(i, 0, a))
                continue
            starts = list(range(0, len(a) - 2 * margin_f * stride, hop))
            for k, s in enumerate(starts):
                last = k == len(starts) - 1
                piece = a[s: len(a) if last else s + win]
                out.append(_Piece(i, s, piece, (0 if k == 0 else margin_f, -1 if last else win // stride - margin_f)))
        return out

    def prepare(self, pieces: Sequence[_Piece]) -> _Prepared:
        lengths = torch.tensor([len(p.audio) for p in pieces], dtype=torch.long)
        x = torch.zeros(len(pieces), int(lengths.max()), dtype=torch.float32)
        for i, p in enumerate(pieces):
            x[i, : len(p.audio)] = torch.from_numpy(p.audio)
        if self.m.device.type == "cuda":
            x = x.pin_memory()
        self.stats.samples += int(lengths.sum())
        self.stats.padded += int(x.shape[0] * x.shape[1] - lengths.sum())
        return _Prepared(x, lengths)

    # -- model ----------------------------------------------------------------------------------
    def forward(self, prep: _Prepared) -> Tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, F, V] on the device, valid frames per row)."""
        dev = self.m.device
        x = prep.x.to(dev, non_blocking=True).to(self.m.dtype)
        mask = None
        if self.m.use_attention_mask:
            mask = (torch.arange(x.shape[1], device=dev).unsqueeze(0)
                    < prep.lengths.to(dev).unsqueeze(1)).long()
        with torch.inference_mode():
            logits = self.m.model(x, attention_mask=mask).logits
        fn = getattr(self.m.model, "_get_feat_extract_output_lengths", None)
        flen = fn(prep.lengths).long() if fn else torch.full_like(prep.lengths, logits.shape[1])
        self.stats.batches += 1
        return logits, flen.clamp(max=logits.shape[1])

    def _logits(self, pieces: List[_Piece], prep: Optional[_Prepared] = None) -> List:
        """Per piece: its logits [F, V], or the exception that made it fail alone."""
        try:
            logits, flen = self.forward(prep or self.prepare(pieces))
            return [logits[i, : int(flen[i])] for i in range(len(pieces))]
        except Exception as e:  # noqa: BLE001 - any failure is isolated to the element that causes it
            if len(pieces) == 1:
                self.stats.failed += 1
                return [e]
            if is_oom(e):
                self.stats.oom_splits += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            half = len(pieces) // 2
            return self._logits(pieces[:half]) + self._logits(pieces[half:])

    # -- decode ---------------------------------------------------------------------------------
    def _text(self, ids: List[int]) -> Tuple[str, List[str]]:
        toks = [self._tokens.get(i, "") for i in ids]
        text = "".join(" " if t == self._delimiter else t for t in toks if t not in self._special)
        return " ".join(text.split()), toks

    def decode(self, n_clips: int, pieces: List[_Piece], logits: List) -> List[AsrOutput]:
        per_clip: List[list] = [[] for _ in range(n_clips)]
        errors: dict = {}
        for p, lg in zip(pieces, logits):
            if isinstance(lg, BaseException):
                errors[p.clip] = f"{type(lg).__name__}: {lg}"
                continue
            a, b = p.keep
            per_clip[p.clip].append(lg[a: lg.shape[0] if b < 0 else b])
        ok = [i for i in range(n_clips) if i not in errors]
        out: List[Optional[AsrOutput]] = [None] * n_clips
        for i in errors:
            out[i] = AsrOutput("", 0.0, error=errors[i])
        if ok:
            joined = [torch.cat(per_clip[i], 0) for i in ok]
            lengths = torch.tensor([j.shape[0] for j in joined])
            padded = torch.nn.utils.rnn.pad_sequence(joined, batch_first=True)
            for i, r in zip(ok, greedy_decode(padded, lengths, self.m.blank_id, self.opts.keep_ctc_tokens)):
                text, toks = self._text(r.ids)
                keep = [(t, s, lp) for t, s, lp in zip(toks, r.spans, r.logp) if t not in self._special]
                words = words_from_tokens([k[0] for k in keep], [k[1] for k in keep], [k[2] for k in keep],
                                          self.frame_s, self._delimiter)
                out[i] = AsrOutput(text, round(r.confidence, 4), tuple(words),
                                   tuple(r.frames) if r.frames is not None else None)
        return out

    # -- public ---------------------------------------------------------------------------------
    def __call__(self, audio: Sequence[np.ndarray]) -> List[AsrOutput]:
        """Transcripts of clips at ``sample_rate`` (one model call, split only on failure)."""
        return self.many([audio])[0]

    def many(self, batches: Sequence[Sequence[np.ndarray]]) -> List[List[AsrOutput]]:
        """Several batches in turn; on CUDA the next one is prepared while the current one runs."""
        plans = [self.pieces(b) for b in batches]
        results = []
        pending = None
        for k, pieces in enumerate(plans):
            if not pieces:
                results.append([])
                continue
            prep = pending.result() if pending is not None else self.prepare(pieces)
            pending = None
            nxt = next((j for j in range(k + 1, len(plans)) if plans[j]), None)
            if self._pool is not None and nxt == k + 1:
                pending = self._pool.submit(self.prepare, plans[nxt])
            results.append(self.decode(len(batches[k]), pieces, self._logits(pieces, prep)))
        return results


def transcribe(loaded: LoadedCtcModel, audio: Sequence[np.ndarray],
               opts: TranscribeOptions = TranscribeOptions()) -> List[AsrOutput]:
    """Greedy transcripts, confidences and word timings for clips at ``loaded.sample_rate``."""
    return Transcriber(loaded, opts)(audio)
