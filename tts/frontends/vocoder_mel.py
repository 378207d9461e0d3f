"""The 100-bin, 24 kHz mel that TorToiSe's diffusion decoder writes and its UnivNet vocoder reads.

24 000 Hz audio (the corpus's 22 050 Hz resampled on the device with a windowed-sinc filter);
n_fft 1024, hop 256, window 1024 (periodic Hann), centred with reflect padding, *magnitude*
spectrum; librosa's default (Slaney-scale, Slaney-normalised) 100-band filterbank from 0 to
12 000 Hz; natural log of the energies clamped at 1e-5. The decoder is trained on this mel mapped
to [-1, 1] with TorToiSe's fixed bounds (``normalize``), and reads conditioning clips unmapped.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 24000
HOP = 256
N_MELS = 100
MEL_MIN = -11.512925148010254  # log(1e-5)
MEL_MAX = 2.3143386840820312
COND_SAMPLES = 102400  # the decoder's conditioning clips: about 4.3 s at 24 kHz


def normalize(mel: torch.Tensor) -> torch.Tensor:
    return 2 * (mel - MEL_MIN) / (MEL_MAX - MEL_MIN) - 1


def denormalize(mel: torch.Tensor) -> torch.Tensor:
    return (mel + 1) / 2 * (MEL_MAX - MEL_MIN) + MEL_MIN


def frames_for_codes(n_codes: int) -> int:
    """Decoder output frames for ``n_codes`` DVAE codes (each 1024 samples at 22 050 Hz), as tortoise-tts sizes it."""
    return n_codes * 4 * SAMPLE_RATE // 22050


@functools.lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int, zeros: int = 16, rolloff: float = 0.945):
    """Polyphase windowed-sinc filters for resampling ``orig`` → ``new`` (both already divided by their gcd):
    [new, 1, taps] weights and the input padding each side needs."""
    cutoff = min(orig, new) * rolloff  # in units of the coarser rate / gcd
    width = math.ceil(zeros * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None] / orig
    t = (taps - torch.arange(new, dtype=torch.float64)[:, None] / new) * cutoff
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    arg = t * math.pi
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / torch.where(arg == 0, torch.ones_like(arg), arg))
    return (sinc * window * cutoff / orig).float()[:, None], width


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling of [..., T] audio on its own device; output length ceil(T · new / orig)."""
    if orig_sr == new_sr:
        return wav
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, width = _sinc_kernel(orig, new)
    shape = wav.shape
    x = wav.reshape(-1, 1, shape[-1])
    x = F.pad(x, (width, width + orig))
    y = F.conv1d(x, kernel.to(device=wav.device, dtype=wav.dtype), stride=orig)  # [N, new, frames]
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    return y[:, : math.ceil(new * shape[-1] / orig)].reshape(*shape[:-1], -1)


@functools.lru_cache(maxsize=4)
def _filterbank(n_mels: int = N_MELS, sr: int = SAMPLE_RATE, n_fft: int = 1024, fmax: float = 12000.0) -> np.ndarray:
    import librosa
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=fmax).astype(np.float32)


class VocoderMel(torch.nn.Module):
    """wav [B, T] at 24 kHz in -1..1 → log-mel [B, 100, T // 256 + 1] (not normalised)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(1024, periodic=True), persistent=False)
        self.register_buffer("fb", torch.from_numpy(_filterbank()), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav.float().clamp(-1, 1), n_fft=1024, hop_length=HOP, win_length=1024, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        return torch.log(torch.clamp(torch.matmul(self.fb, spec.abs()), min=1e-5))


def mel_to_audio(mel: torch.Tensor, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """A log-mel [100, T] (not normalised) back to 24 kHz audio by Griffin-Lim phase reconstruction (seeded):
    a fallback that is intelligible but buzzy, for listening without a trained vocoder."""
    import librosa
    magnitude = np.exp(mel.detach().float().cpu().numpy())
    stft = librosa.feature.inverse.mel_to_stft(magnitude, sr=SAMPLE_RATE, n_fft=1024, power=1.0, fmin=0.0, fmax=12000.0)
    audio = librosa.griffinlim(stft, n_iter=n_iter, hop_length=HOP, win_length=1024, n_fft=1024, pad_mode="reflect",
                               random_state=seed)
    return np.clip(audio, -1, 1).astype(np.float32)
