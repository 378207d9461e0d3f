"""Speaker embeddings from Resemblyzer's voice encoder, whose weights ship inside its wheel.

The encoder is a 3-layer LSTM (256 units) over 40-band mel spectrograms of 16 kHz audio (25 ms
windows, 10 ms hop, power — not log — as Resemblyzer computes them), whose last hidden state goes
through a linear layer and a ReLU and is L2-normalised: a 256-d voice embedding for a 1.6 s
"partial" utterance. A longer stretch is cut into partials whose embeddings are averaged. Audio at
another rate is resampled to the encoder's own (``RATE``) first: callers say what rate they hand in.

The network is rebuilt here and only its weights are read (``weights_only``), so neither the
package's code nor its webrtcvad dependency is imported. Partials of many clips are embedded in
one batch (one LSTM call over all of them, their mel spectrograms in one float32 FFT), ``BATCH``
pieces a call: ≈ 500× realtime on one CPU core in float32, far more on a GPU. On a CPU with native
bfloat16 (AVX-512 BF16 or AMX) the network runs in bfloat16 by default (``precision="auto"``): ≈ 2.4×
faster, each piece's embedding within 0.005 (cosine) of float32's, and the same speech kept, clips cut and
speaker ids on the real-voice benchmark (docs/speakers.md). Elsewhere bfloat16 is emulated and
slower, so "auto" is float32 there and on a GPU. ONNX Runtime runs the float32 LSTM no faster than
torch here (≈ 460× against ≈ 445× realtime, 64 a call); int8 dynamic quantisation is slower still.
"""
from __future__ import annotations

import functools
import threading
from typing import List, Optional, Sequence

import numpy as np
import scipy.fft
from threadpoolctl import threadpool_limits

from audio.packaged import ModelFileMissing, package_file
from audio.resample import resample
from speakers.params import PRECISIONS

RATE = 16000  # the rate the encoder was trained at, whatever rate its callers decode at
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_SAMPLES = PARTIAL_FRAMES * HOP
PARTIAL_S = PARTIAL_SAMPLES / RATE
BATCH = 64  # pieces a call (256 a call measured no faster on one core)
TARGET_DBFS = -30.0  # loudness the encoder was trained at (quiet audio is raised to it)

_model = None
_lock = threading.Lock()


EncoderUnavailable = ModelFileMissing


def weights_path() -> str:
    return package_file("resemblyzer", "pretrained.pt",
                        install="pip install --no-deps resemblyzer: only its weights are used")


def _build(device: str):
    import torch

    class VoiceEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(N_MELS, 256, 3, batch_first=True)
            self.linear = torch.nn.Linear(256, 256)

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.clamp(torch.linalg.vector_norm(raw, dim=1, keepdim=True), min=1e-8)

    model = VoiceEncoder()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
    model.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}, strict=True)
    return model.to(device).eval()


def model(device: str = "cpu"):
    global _model
    with _lock:
        if _model is None or str(next(_model.parameters()).device) != str(device):
            _model = _build(device)
        return _model


_MEL_BASIS = None


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f * 3.0 / 200.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1000.0) / 1000.0) * 27.0 / np.log(6.4), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), m * 200.0 / 3.0)


def mel_basis() -> np.ndarray:
    """(40, 201) triangular Slaney-normalised filters from 0 Hz to Nyquist: the filterbank Resemblyzer
    uses (librosa's default ``filters.mel``), built here because importing librosa costs more CPU
    than embedding a minute of speech."""
    global _MEL_BASIS
    if _MEL_BASIS is None:
        fft_f = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
        mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(RATE / 2), N_MELS + 2))
        fdiff = np.diff(mel_f)
        ramps = np.subtract.outer(mel_f, fft_f)
        lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
        weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)  # rounded as librosa rounds
        _MEL_BASIS = (weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]).astype(np.float32)
    return _MEL_BASIS


def mels(x: np.ndarray) -> np.ndarray:
    """(frames, 40) power mel spectrogram, centred frames as librosa's ``melspectrogram`` makes them;
    for a (n, samples) stack of equally long pieces, (n, frames, 40)."""
    x = np.asarray(x, dtype=np.float32)
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(N_FFT // 2, N_FFT // 2)])
    n = 1 + (padded.shape[-1] - N_FFT) // HOP
    step = padded.strides[-1]
    frames = np.lib.stride_tricks.as_strided(padded, padded.shape[:-1] + (n, N_FFT),
                                             padded.strides[:-1] + (step * HOP, step))
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann, as librosa's default
    spec = scipy.fft.rfft(frames * window, axis=-1)  # float32 throughout: ≈ 3× numpy's
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    return power @ mel_basis().T


def loudness_normalised(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    if rms <= 0:
        return x
    change_db = TARGET_DBFS - 20 * np.log10(rms)
    return x * np.float32(10 ** (change_db / 20)) if change_db > 0 else x


def partials(x: np.ndarray, rate: int = RATE) -> List[np.ndarray]:
    """1.6 s pieces (at ``RATE``) of a stretch of float32 audio at ``rate``, end to end; a last piece
    of at least 0.8 s, or the only one, is zero-padded to full length."""
    x = resample(x, rate, RATE)
    out = []
    for a in range(0, max(1, len(x)), PARTIAL_SAMPLES):
        piece = x[a:a + PARTIAL_SAMPLES]
        if len(piece) < PARTIAL_SAMPLES:
            if out and len(piece) < PARTIAL_SAMPLES // 2:
                break
            piece = np.pad(piece, (0, PARTIAL_SAMPLES - len(piece)))
        out.append(piece)
    return out


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere it is emulated."""
    import torch
    cpu = getattr(torch, "cpu", None)
    return bool(cpu is not None and any(getattr(cpu, name, lambda: False)()
                                        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")))


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``float32`` or ``bfloat16``: "auto" is bfloat16 on a CPU that computes it natively, float32
    otherwise (on a GPU the float32 LSTM is cheap already)."""
    if precision not in PRECISIONS:
        raise ValueError(f"voice encoder precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if str(device) == "cpu" and native_bfloat16() else "float32"


def embed_partials(pieces: Sequence[np.ndarray], device: str = "cpu", batch: int = BATCH,
                   precision: str = "auto") -> np.ndarray:
    """(n, 256) float32 embeddings of 1.6 s pieces at ``RATE`` (what ``partials`` makes); the network
    runs at ``precision`` (see ``resolve_precision``)."""
    if not len(pieces):
        return np.zeros((0, 256), dtype=np.float32)
    import torch
    m = model(device)
    half = resolve_precision(precision, device) == "bfloat16"
    out = []
    threads = torch.get_num_threads()
    # one thread for torch and for numpy's BLAS: a matrix product's sums are split by the thread count,
    # so embeddings (and the speaker ids clustered from them) would differ in the last bits between
    # runners and machines
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1), torch.inference_mode():
            for i in range(0, len(pieces), batch):
                group = pieces[i:i + batch]
                spec = np.concatenate([mels(np.stack([loudness_normalised(p) for p in group[j:j + 32]]))
                                       [:, :PARTIAL_FRAMES] for j in range(0, len(group), 32)])  # 32: in cache
                with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=half):
                    out.append(m(torch.from_numpy(spec).to(device)).float().cpu().numpy())
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(out)


def mean_embedding(embeddings: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """L2-normalised (weighted) mean of embeddings."""
    v = np.average(embeddings, axis=0, weights=weights) if len(embeddings) else np.zeros(256, np.float32)
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)
