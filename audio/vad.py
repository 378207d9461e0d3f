"""Speech probabilities from Silero VAD, run from the ONNX model inside the ``silero-vad`` wheel.

The wheel ships a "sequence" export of the model that takes a whole block of 32 ms frames (512
samples at 16 kHz, each with the previous frame's last 64 samples as context) in one call and
carries the LSTM state between calls, so a source's audio is scored in a few hundred calls an
hour instead of one call per frame (measured here ≈ 550× realtime on one core; the package's
``get_speech_timestamps`` runs one frame per call, 50–120×). Blocks are always 512 frames counted
from the start of the source, so the probabilities do not depend on how the audio was chunked.

The package itself is not imported: importing it calls ``torch.set_num_threads(1)`` for the
whole process. The model file is found through the package's location and run with onnxruntime
on one thread per session.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from typing import Optional

import numpy as np

RATE = 16000
FRAME = 512  # samples: 32 ms
CONTEXT = 64
BLOCK = 512  # frames per model call (16.4 s)
FRAME_S = FRAME / RATE
MODEL_FILE = "silero_vad_16k_sequence.onnx"

_session = None
_lock = threading.Lock()


class VadUnavailable(RuntimeError):
    pass


def model_path() -> str:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailable("the silero-vad package is not installed (pip install silero-vad onnxruntime)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", MODEL_FILE)
    if not os.path.isfile(path):
        raise VadUnavailable(f"silero-vad has no {MODEL_FILE} (a silero-vad with the sequence model is needed)")
    return path


def session():
    """The process's ONNX session (created once; ``run`` is safe to call from several threads)."""
    global _session
    with _lock:
        if _session is None:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            _session = ort.InferenceSession(model_path(), opts, providers=["CPUExecutionProvider"])
        return _session


class VadStream:
    """Feed 16 kHz float32 audio in any chunks; ``finish`` gives one speech probability per 32 ms frame."""

    def __init__(self):
        self._sess = session()
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._probs = []

    def push(self, audio: np.ndarray) -> None:
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        self._pending = np.concatenate([self._pending, x]) if len(self._pending) else x
        while len(self._pending) >= BLOCK * FRAME:
            self._run(self._pending[:BLOCK * FRAME])
            self._pending = self._pending[BLOCK * FRAME:]

    def _run(self, samples: np.ndarray) -> None:
        n = (len(samples) + FRAME - 1) // FRAME
        frames = np.zeros((n, FRAME), dtype=np.float32)
        frames.reshape(-1)[: len(samples)] = samples
        contexts = np.empty((n, CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        if n > 1:
            contexts[1:] = frames[:-1, -CONTEXT:]
        self._context = frames[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._sess.run(
            ["speech_probs", "hn", "cn"], {"input": np.concatenate([contexts, frames], axis=1), "h": self._h,
                                          "c": self._c})
        self._probs.append(np.asarray(probs, dtype=np.float32).reshape(-1))

    def finish(self) -> np.ndarray:
        if len(self._pending):
            self._run(self._pending)
            self._pending = np.zeros(0, dtype=np.float32)
        return np.concatenate(self._probs) if self._probs else np.zeros(0, dtype=np.float32)


def speech_probs(audio16k: np.ndarray) -> np.ndarray:
    """Speech probability per 32 ms frame of a whole 16 kHz signal."""
    s = VadStream()
    s.push(audio16k)
    return s.finish()


def speech_mask(probs: np.ndarray, threshold: float = 0.5, release: Optional[float] = None) -> np.ndarray:
    """Per-frame speech decisions with hysteresis: speech starts at ``threshold`` and lasts until
    the probability falls below ``release`` (default ``threshold - 0.15``, Silero's own rule)."""
    release = threshold - 0.15 if release is None else release
    p = np.asarray(probs)
    event = np.where(p >= threshold, 1, np.where(p < release, 0, -1))  # -1: keep the previous state
    idx = np.where(event >= 0, np.arange(len(p)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, event[np.maximum(idx, 0)], 0).astype(bool)


def on_grid(values: np.ndarray, n: int, hop_s: float) -> np.ndarray:
    """Per-32 ms values resampled to ``n`` frames of ``hop_s`` (each takes the frame at its centre)."""
    values = np.asarray(values)
    if n == 0 or not len(values):
        return np.zeros(n, dtype=values.dtype)
    idx = np.minimum(((np.arange(n) + 0.5) * hop_s / FRAME_S).astype(np.int64), len(values) - 1)
    return values[idx]
