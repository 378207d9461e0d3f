"""Run a loaded CTC model on batches of variable-length clips.

* Clips are zero-padded to the longest in the batch and normalised on the model's device the way
  the feature extractor would (zero mean, unit variance over each clip's own samples, padding left
  at zero); layer-norm models get an attention mask, group-norm ones must see plain zero padding
  and no mask.
* A clip longer than ``chunk_s`` is cut into overlapping windows on the model's frame grid; each
  window's logits lose half the overlap at their inner edges and the rest are joined, so memory is
  bounded by the window, not the clip.
* A CUDA out-of-memory error halves the batch and retries; any other error splits the batch until
  the failing clip is alone, so only that clip fails.
* Counts (samples, padding, splits) are kept per call and added to the shared ``stats`` under a lock,
  so threads that share one model each get their own exact figures.
* Only one label id and one log-probability per 20 ms frame come back from the device. Batches are
  pipelined: the next one is queued on the device before the host waits for the current one, so
  decoding on the host overlaps the model's work.
* On CUDA: weights in ``dtype``, input staged in pinned memory and copied without blocking, the
  result copied back the same way, and the batch after next prepared on a thread.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from asr.ctc import Vocabulary, Word, best_path, collapse
from asr.model import LoadedCtcModel
from asr.spec import TranscribeOptions  # noqa: F401  (its home is asr.spec)


@dataclass(frozen=True)
class AsrOutput:
    text: str
    confidence: float
    words: Tuple[Word, ...] = ()
    ctc_frames: Optional[Tuple[int, ...]] = None  # per-frame argmax ids, with --keep_ctc_tokens
    error: Optional[str] = None
    rejected: Optional[Tuple[str, str]] = None  # (reason, detail) from the model's own checks (asr.whisper)


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

    def count(self, samples: int, padded: int) -> None:
        """One model call's input: ``samples`` real, ``padded`` zeros."""
        self.batches += 1
        self.samples += samples
        self.padded += padded

    def add(self, other: "AsrStats") -> None:
        self.samples += other.samples
        self.padded += other.padded
        self.batches += other.batches
        self.oom_splits += other.oom_splits
        self.failed += other.failed


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


@dataclass
class _Piece:
    clip: int
    start: int  # sample offset in the clip
    audio: np.ndarray  # raw samples; normalised on the model's device
    keep: Tuple[int, int] = (0, -1)  # frames of this piece's logits to keep
    norm: Optional[Tuple[float, float]] = None  # (mean, 1/std) of the whole clip, when it was windowed


@dataclass
class _Prepared:
    x: torch.Tensor  # [B, N] float32, zero-padded (pinned on CUDA)
    lengths: torch.Tensor  # [B] int64
    norm: Optional[torch.Tensor]  # [B, 2] float64 (mean, 1/std); NaN rows take their own statistics


@dataclass
class _InFlight:
    """A launched batch: per-frame labels and log-probabilities, on the host once ``ready`` fires."""
    labels: torch.Tensor
    logp: torch.Tensor
    frames: np.ndarray  # valid frames per row
    ready: Optional[object]  # torch.cuda.Event on CUDA
    samples: int
    padded: int


Rows = List  # per piece: (labels, logp) arrays, or the exception that made it fail alone


class Transcriber:
    def __init__(self, loaded: LoadedCtcModel, opts: TranscribeOptions = TranscribeOptions()):
        self.m = loaded
        self.opts = opts.validate()
        self.stride = loaded.contract.stride
        self.frame_s = loaded.contract.frame_s
        self.stats = AsrStats()  # every call's counts; see ``many(stats=...)`` for one call's alone
        self._stats_lock = threading.Lock()
        delimiter = getattr(loaded.tokenizer, "word_delimiter_token", None) or " "
        special = set(getattr(loaded.tokenizer, "all_special_tokens", [])) - {delimiter}
        self.vocab = Vocabulary({i: t for t, i in loaded.tokenizer.get_vocab().items()}, delimiter, special)
        self._cuda = loaded.device.type == "cuda"
        self._pool = ThreadPoolExecutor(1) if self._cuda else None

    # -- host side ------------------------------------------------------------------------------
    def pieces(self, audio: Sequence[np.ndarray]) -> List[_Piece]:
        sr, stride = self.m.sample_rate, self.stride
        win = int(self.opts.chunk_s * sr) // stride * stride
        margin_f = int(self.opts.chunk_overlap_s * sr) // stride
        hop = win - 2 * margin_f * stride
        out = []
        for i, a in enumerate(audio):
            a = np.ascontiguousarray(a, dtype=np.float32)
            if len(a) <= win:
                out.append(_Piece(i, 0, a))
                continue
            # windows are normalised with the whole clip's statistics, as the unwindowed clip would be
            norm = (float(a.mean(dtype=np.float64)), float(1 / np.sqrt(a.var(dtype=np.float64) + 1e-7)))
            starts = list(range(0, len(a) - 2 * margin_f * stride, hop))
            for k, s in enumerate(starts):
                last = k == len(starts) - 1
                piece = a[s: len(a) if last else s + win]
                out.append(_Piece(i, s, piece, (0 if k == 0 else margin_f, -1 if last else win // stride - margin_f),
                                  norm))
        return out

    def prepare(self, pieces: Sequence[_Piece]) -> _Prepared:
        """Zero-padded input (in pinned memory on CUDA, so the copy to the device does not block)."""
        lengths = np.array([len(p.audio) for p in pieces], dtype=np.int64)
        x = torch.empty((len(pieces), int(lengths.max())), dtype=torch.float32, pin_memory=self._cuda)
        xa = x.numpy()
        for i, p in enumerate(pieces):
            xa[i, : len(p.audio)] = p.audio
            xa[i, len(p.audio):] = 0
        norm = None
        if any(p.norm is not None for p in pieces):
            norm = torch.tensor([p.norm if p.norm is not None else (np.nan, np.nan) for p in pieces],
                                dtype=torch.float64)
        return _Prepared(x, torch.from_numpy(lengths), norm)

    # -- device side ----------------------------------------------------------------------------
    def _normalise(self, x: torch.Tensor, valid: torch.Tensor, lengths: torch.Tensor,
                   given: Optional[torch.Tensor]) -> torch.Tensor:
        """Zero mean, unit variance per row over its own samples (the feature extractor's
        normalisation), padding left at zero; sums in float64 so padding cannot change a row."""
        n = lengths.to(torch.float64).unsqueeze(1)
        mean = x.sum(1, keepdim=True, dtype=torch.float64) / n
        var = (x.square().sum(1, keepdim=True, dtype=torch.float64) / n - mean.square()).clamp(min=0)
        inv = torch.rsqrt(var + 1e-7)
        if given is not None:
            g = given.to(x.device, non_blocking=True)
            own = torch.isnan(g[:, :1])
            mean, inv = torch.where(own, mean, g[:, :1]), torch.where(own, inv, g[:, 1:])
        return torch.where(valid, (x - mean.float()) * inv.float(), 0.0)

    def launch(self, prep: _Prepared) -> _InFlight:
        """Queue one batch on the device: normalise, run the model, reduce to the best path, and
        start copying that (small) result to the host. Returns without waiting on CUDA."""
        dev = self.m.device
        x = prep.x.to(dev, non_blocking=True)
        lengths = prep.lengths.to(dev, non_blocking=True)
        with torch.inference_mode():
            valid = torch.arange(x.shape[1], device=dev).unsqueeze(0) < lengths.unsqueeze(1)
            if self.m.do_normalize:
                x = self._normalise(x, valid, lengths, prep.norm)
            mask = valid.long() if self.m.use_attention_mask else None
            logits = self.m.model(x.to(self.m.dtype), attention_mask=mask).logits
            labels, logp = best_path(logits)
        fn = getattr(self.m.model, "_get_feat_extract_output_lengths", None)
        flen = fn(prep.lengths).long() if fn else torch.full_like(prep.lengths, labels.shape[1])
        ready = None
        if self._cuda:
            host_labels = torch.empty(labels.shape, dtype=labels.dtype, pin_memory=True)
            host_logp = torch.empty(logp.shape, dtype=logp.dtype, pin_memory=True)
            host_labels.copy_(labels, non_blocking=True)
            host_logp.copy_(logp, non_blocking=True)
            labels, logp = host_labels, host_logp
            ready = torch.cuda.Event()
            ready.record()
        n = int(prep.lengths.sum())
        return _InFlight(labels, logp, flen.clamp(max=labels.shape[1]).numpy(), ready, n,
                         int(prep.x.shape[0] * prep.x.shape[1]) - n)

    def collect(self, f: _InFlight) -> Rows:
        """Wait for a launched batch and split its result into rows."""
        if f.ready is not None:
            f.ready.synchronize()
        labels, logp = f.labels.numpy(), f.logp.numpy()
        return [(labels[i, :n], logp[i, :n]) for i, n in enumerate(f.frames.tolist())]

    def _collect_counted(self, f: _InFlight, stats: AsrStats) -> Rows:
        rows = self.collect(f)
        stats.count(f.samples, f.padded)
        return rows

    def _isolated(self, pieces: List[_Piece], stats: AsrStats, error: Optional[BaseException] = None) -> Rows:
        """Run ``pieces`` synchronously; on failure halve until the failing piece is alone."""
        if error is None:
            try:
                return self._collect_counted(self.launch(self.prepare(pieces)), stats)
            except Exception as e:  # noqa: BLE001 - any failure is isolated to the element that causes it
                error = e
        if len(pieces) == 1:
            stats.failed += 1
            return [error]
        if is_oom(error):
            stats.oom_splits += 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        half = len(pieces) // 2
        return self._isolated(pieces[:half], stats) + self._isolated(pieces[half:], stats)

    # -- decode ---------------------------------------------------------------------------------
    def decode(self, n_clips: int, pieces: List[_Piece], rows: Rows) -> List[AsrOutput]:
        labels: List[list] = [[] for _ in range(n_clips)]
        logp: List[list] = [[] for _ in range(n_clips)]
        errors: dict = {}
        for p, r in zip(pieces, rows):
            if isinstance(r, BaseException):
                errors[p.clip] = f"{type(r).__name__}: {r}"
                continue
            a, b = p.keep
            labels[p.clip].append(r[0][a: len(r[0]) if b < 0 else b])
            logp[p.clip].append(r[1][a: len(r[1]) if b < 0 else b])
        out: List[Optional[AsrOutput]] = [None] * n_clips
        for i in errors:
            out[i] = AsrOutput("", 0.0, error=errors[i])
        ok = [i for i in range(n_clips) if i not in errors]
        def whole(parts: list) -> np.ndarray:  # a windowed clip's pieces, joined; most clips are one piece
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        joined = collapse([whole(labels[i]) for i in ok], [whole(logp[i]) for i in ok],
                          self.m.blank_id, self.opts.keep_ctc_tokens)
        for i, r in zip(ok, joined):
            text, words = self.vocab.words(r, self.frame_s)
            out[i] = AsrOutput(text, round(r.confidence, 4), tuple(words),
                               tuple(r.frames) if r.frames is not None else None)
        return out

    # -- public ---------------------------------------------------------------------------------
    def __call__(self, audio: Sequence[np.ndarray]) -> List[AsrOutput]:
        """Transcripts of clips at ``sample_rate`` (one model call, split only on failure)."""
        return self.many([audio])[0]

    def many(self, batches: Sequence[Sequence[np.ndarray]],
             stats: Optional[AsrStats] = None) -> List[List[AsrOutput]]:
        """Several batches in turn, pipelined: batch k+1 is queued on the device before the host
        waits for batch k and decodes it, and on CUDA batch k+2 is prepared on a thread meanwhile.

        ``stats``, when given, receives this call's counts alone: ``self.stats`` is shared by every
        thread using this transcriber, so a difference of two readings of it is not one call's."""
        call = AsrStats()
        try:
            return self._many(batches, call)
        finally:
            with self._stats_lock:
                self.stats.add(call)
            if stats is not None:
                stats.add(call)

    def _many(self, batches: Sequence[Sequence[np.ndarray]], stats: AsrStats) -> List[List[AsrOutput]]:
        plans = [self.pieces(b) for b in batches]
        todo = [k for k, p in enumerate(plans) if p]
        results: List[List[AsrOutput]] = [[] for _ in batches]
        futures = {}

        def prepare_ahead(j: int) -> None:
            if self._pool is not None and j < len(todo):
                futures[j] = self._pool.submit(self.prepare, plans[todo[j]])

        def start(j: int):
            try:
                fut = futures.pop(j, None)
                return self.launch(fut.result() if fut is not None else self.prepare(plans[todo[j]]))
            except Exception as e:  # noqa: BLE001 - isolated when its turn comes
                return e

        prepare_ahead(0)
        current = start(0) if todo else None
        prepare_ahead(1)
        for j, k in enumerate(todo):
            following = None
            if j + 1 < len(todo):
                following = start(j + 1)
                prepare_ahead(j + 2)
            rows, error = None, current if isinstance(current, BaseException) else None
            if error is None:
                try:
                    rows = self._collect_counted(current, stats)
                except Exception as e:  # noqa: BLE001
                    error = e
            if rows is None:
                rows = self._isolated(plans[k], stats, error)
            results[k] = self.decode(len(batches[k]), plans[k], rows)
            current = following
        return results


def transcribe(loaded: LoadedCtcModel, audio: Sequence[np.ndarray],
               opts: TranscribeOptions = TranscribeOptions()) -> List[AsrOutput]:
    """Greedy transcripts, confidences and word timings for clips at ``loaded.sample_rate``."""
    return Transcriber(loaded, opts)(audio)
