"""DNSMOS P.835 (signal, background, overall quality, 1–5) from the ONNX model in the ``speechmos`` wheel.

The model (``sig_bak_ovr.onnx``, the one Emilia-Pipe gates on) scores 9.01 s windows of 16 kHz
audio and takes a batch of windows in one call. ``speechmos``'s own ``dnsmos.run`` scores one
clip at a time with a window every second and a second (P.808) model besides (under 10× realtime
here); this scores the windows of many clips in one call — one window per 9 s of clip, spread
evenly over it (a clip shorter than a window is repeated to fill it, as the reference does) — and
maps the raw outputs through the published polynomials.

On a CPU core it still runs at ≈ 25× realtime, far below the rest of the pipeline, so it is off
by default there; with ``--asr_device cuda`` and onnxruntime's CUDA provider it runs beside the
ASR model on the GPU.
"""
from __future__ import annotations

import itertools
import threading
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from audio.packaged import ModelFileMissing, package_file
from audio.resample import int16_to_float

RATE = 16000
WINDOW = int(9.01 * RATE)
_POLY = {"sig": (-0.08397278, 1.22083953, 0.0052439), "bak": (-0.13166888, 1.60915514, -0.39604546),
         "ovrl": (-0.06766283, 1.11546468, 0.04602535)}
_sessions = {}
_lock = threading.Lock()


DnsmosUnavailable = ModelFileMissing


def model_path() -> str:
    return package_file("speechmos", "dnsmos_models", "sig_bak_ovr.onnx", install="pip install speechmos onnxruntime")


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def session(device: str = "cpu"):
    with _lock:
        key = "cuda" if device.startswith("cuda") and cuda_available() else "cpu"
        if key not in _sessions:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if key == "cuda" else ["CPUExecutionProvider"]
            _sessions[key] = ort.InferenceSession(model_path(), opts, providers=providers)
        return _sessions[key]


def windows(x: np.ndarray) -> np.ndarray:
    """The 9.01 s windows DNSMOS scores for one clip: evenly spread, or the clip repeated to fill one."""
    x = np.asarray(x, dtype=np.float32)
    if not len(x):
        return np.zeros((1, WINDOW), dtype=np.float32)
    if len(x) <= WINDOW:
        return np.resize(x, WINDOW)[None, :]
    n = max(1, int(len(x) / WINDOW + 0.5))  # a 10 s clip: one window; 20 s: two
    starts = np.linspace(0, len(x) - WINDOW, n).round().astype(np.int64)
    return np.stack([x[s:s + WINDOW] for s in starts])


def score(clips: Sequence[np.ndarray], device: str = "cpu", max_windows: Optional[int] = None
          ) -> List[Tuple[float, float, float]]:
    """(sig, bak, ovrl) per clip of 16 kHz float32 audio. On a GPU the windows of many clips go in one
    call (32 a call); on a CPU one window a call is faster (measured: 25 vs 21× realtime per core)."""
    if max_windows is None:
        max_windows = 32 if device.startswith("cuda") and cuda_available() else 1
    wins = [windows(c) for c in clips]
    owner = np.concatenate([np.full(len(w), i) for i, w in enumerate(wins)]) if wins else np.zeros(0, int)
    batch = np.concatenate(wins) if wins else np.zeros((0, WINDOW), np.float32)
    sess = session(device)
    raw = [sess.run(None, {"input_1": batch[i:i + max_windows]})[0] for i in range(0, len(batch), max_windows)]
    raw = np.concatenate(raw) if raw else np.zeros((0, 3), np.float32)
    mapped = np.stack([np.polyval(_POLY[k], raw[:, j].astype(np.float64)) for j, k in enumerate(("sig", "bak", "ovrl"))],
                      axis=1) if len(raw) else np.zeros((0, 3))
    out = []
    for i in range(len(clips)):
        m = mapped[owner == i].mean(axis=0)
        out.append(tuple(round(float(v), 3) for v in m))
    return out


def score_clips(clips: Iterable[np.ndarray], sample_rate: int, device: str = "cpu", group: int = 16
                ) -> Iterator[Tuple[float, float, float]]:
    """(sig, bak, ovrl) per int16 clip at ``sample_rate``, ``group`` clips at a time (memory stays bounded)."""
    it = iter(clips)
    while True:
        part = [int16_to_float(c, sample_rate, RATE) for c in itertools.islice(it, group)]
        if not part:
            return
        yield from score(part, device)


def resolve(mode: str, device: str) -> bool:
    """Whether DNSMOS runs: ``on``, ``off``, or ``auto`` (on when a CUDA provider is there for a CUDA run)."""
    if mode == "on":
        model_path()
        return True
    if mode == "off":
        return False
    return device.startswith("cuda") and cuda_available()
