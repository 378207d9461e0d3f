"""Speech probabilities from Silero VAD, run from the ONNX model inside the ``silero-vad`` wheel.

Silero scores 32 ms frames with an LSTM, so run the usual way — one frame per model call, or the
package's ``get_speech_timestamps`` — it spends its time in call overhead (≈ 90× realtime on one
core here). speechmill cuts a source's 8 kHz audio into chunks (4–16 s, sized from the source's
length so that up to ``BATCH`` of them cover it), each preceded by ``WARM_FRAMES`` (0.5 s) of the
audio before it to settle the LSTM state (whose outputs are dropped), and runs the chunks side by
side as one batch: one call per frame for all of them. Measured here: ≈ 1,000× realtime on one core with full batches, against
≈ 550× for the wheel's 16 kHz "sequence" export, the fastest single-stream form.

Chunks are counted from the start of the source and batched in order, so the probabilities do not
depend on how the audio was fed in. The package itself is not imported: importing it calls
``torch.set_num_threads(1)`` for the whole process. The model file is found through the
package's location and run with onnxruntime on one thread per session; on a GPU (the ASR step's
device), the package's TorchScript export of the same network runs the same batches there
(probabilities within 1e-5 of onnxruntime's, measured on CPU).
"""
from __future__ import annotations

import threading
from typing import List, Optional

import numpy as np

from audio.packaged import ModelFileMissing, package_file

RATE = 8000
FRAME = 256  # samples: 32 ms at 8 kHz
CONTEXT = 32
FRAME_S = FRAME / RATE
CHUNK_FRAMES = 250  # 8 s, when the source's length is not known
MIN_CHUNK_FRAMES, MAX_CHUNK_FRAMES = 125, 500  # 4 s .. 16 s
WARM_FRAMES = 16  # 0.5 s
BATCH = 64
MODEL_FILE = "silero_vad.onnx"
TORCH_FILE = "silero_vad.jit"  # the same network for torch, used on a GPU

_session = None
_lock = threading.Lock()


VadUnavailable = ModelFileMissing


def model_path() -> str:
    return package_file("silero_vad", "data", MODEL_FILE, install="pip install silero-vad onnxruntime")


def session():
    """The process's ONNX session (created once; ``run`` is safe to call from several threads)."""
    global _session
    with _lock:
        if _session is None:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            _session = ort.InferenceSession(model_path(), opts, providers=["CPUExecutionProvider"])
        return _session


_torch_models: dict = {}
_torch_lock = threading.Lock()


def torch_model(device: str):
    """The package's TorchScript export of the same network on ``device`` (for a GPU: onnxruntime
    here is a CPU build)."""
    with _torch_lock:
        if device not in _torch_models:
            import torch
            path = package_file("silero_vad", "data", TORCH_FILE, install="pip install silero-vad")
            _torch_models[device] = torch.jit.load(path, map_location=device).eval()
        return _torch_models[device]


def engine_for(device: str) -> str:
    """onnxruntime on the CPU (the faster there), torch on a GPU (onnxruntime here is a CPU build)."""
    return "onnx" if device == "cpu" else "torch"


def run_chunks(chunks: np.ndarray, device: str = "cpu", engine: Optional[str] = None) -> np.ndarray:
    """Probabilities (n, frames) for ``n`` independent streams of equal length, one call per frame,
    on ``engine`` ("onnx" or "torch"; default ``engine_for(device)``)."""
    if (engine or engine_for(device)) == "torch":
        return _run_chunks_torch(chunks, device)
    sess = session()
    n, length = chunks.shape
    frames = length // FRAME
    state = np.zeros((2, n, 128), dtype=np.float32)
    context = np.zeros((n, CONTEXT), dtype=np.float32)
    rate = np.array(RATE, dtype=np.int64)
    out = np.empty((n, frames), dtype=np.float32)
    for j in range(frames):
        x = np.concatenate([context, chunks[:, j * FRAME:(j + 1) * FRAME]], axis=1)
        prob, state = sess.run(None, {"input": x, "state": state, "sr": rate})
        out[:, j] = prob[:, 0]
        context = x[:, -CONTEXT:]
    return out


def _run_chunks_torch(chunks: np.ndarray, device: str) -> np.ndarray:
    import torch
    model = torch_model(device)
    n, length = chunks.shape
    x = torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32)).to(device)
    with _torch_lock, torch.inference_mode():  # the model keeps its streams' state inside: one caller at a time
        model.reset_states()
        out = [model(x[:, j * FRAME:(j + 1) * FRAME], RATE)[:, 0] for j in range(length // FRAME)]
        probs = torch.stack(out, dim=1) if out else torch.zeros((n, 0))
        model.reset_states()
    return probs.float().cpu().numpy()


def chunk_frames_for(total_samples: Optional[int], batch: int = BATCH) -> int:
    """Chunk length for a source of ``total_samples`` (8 kHz): as few model calls as the batch allows."""
    if not total_samples:
        return CHUNK_FRAMES
    frames = -(-total_samples // FRAME)
    return int(min(MAX_CHUNK_FRAMES, max(MIN_CHUNK_FRAMES, -(-frames // batch))))


class VadStream:
    """Feed 8 kHz float32 audio in any chunks; ``finish`` gives one speech probability per 32 ms frame.

    ``total_samples`` (the source's length at 8 kHz, when known) sizes the chunks; ``device`` is
    where the model runs (see ``run_chunks``).
    """

    def __init__(self, batch: int = BATCH, total_samples: Optional[int] = None, device: str = "cpu"):
        if engine_for(device) == "onnx":  # the model is loaded before the first audio
            session()
        else:
            torch_model(device)
        self.device = device
        self.batch = batch
        self.chunk = chunk_frames_for(total_samples, batch)
        self._signal = np.zeros(WARM_FRAMES * FRAME, dtype=np.float32)  # silence before the start
        self._offset = 0  # samples of the source dropped from the front of _signal
        self._done_chunks = 0
        self._probs: List[np.ndarray] = []

    def push(self, audio: np.ndarray) -> None:
        self._signal = np.concatenate([self._signal, np.asarray(audio, dtype=np.float32).reshape(-1)])
        while self._available_chunks() >= self.batch:
            self._run(self.batch)

    def _available_chunks(self) -> int:
        have = len(self._signal) - WARM_FRAMES * FRAME
        return max(0, have // (self.chunk * FRAME))

    def _run(self, n: int, tail: Optional[int] = None) -> None:
        span = (WARM_FRAMES + self.chunk) * FRAME
        step = self.chunk * FRAME
        need = (n - 1) * step + span
        sig = self._signal if len(self._signal) >= need else np.pad(self._signal, (0, need - len(self._signal)))
        chunks = np.stack([sig[k * step:k * step + span] for k in range(n)])
        probs = run_chunks(chunks, self.device)[:, WARM_FRAMES:].reshape(-1)
        self._probs.append(probs if tail is None else probs[:tail])
        self._signal = self._signal[n * step:]
        self._done_chunks += n

    def finish(self) -> np.ndarray:
        real = len(self._signal) - WARM_FRAMES * FRAME
        if real > 0:
            frames = (real + FRAME - 1) // FRAME
            n = (frames + self.chunk - 1) // self.chunk
            for first in range(0, n, self.batch):
                m = min(self.batch, n - first)
                left = frames - first * self.chunk
                self._run(m, tail=min(left, m * self.chunk))
        self._signal = np.zeros(0, dtype=np.float32)
        return np.concatenate(self._probs) if self._probs else np.zeros(0, dtype=np.float32)


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
