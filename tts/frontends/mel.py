"""TorToiSe's 80-bin mel spectrogram, computed with ``torch.stft`` and librosa's filterbank.

22 050 Hz audio; n_fft 1024, hop 256, window 1024 (periodic Hann), centred with reflect padding,
power 2; an 80-band HTK-scale filterbank from 0 to 8 000 Hz with Slaney area normalisation (what
TorToiSe asks torchaudio's ``MelSpectrogram`` for); natural log of the energies clamped at 1e-5;
each band divided by TorToiSe's ``mel_norms``. Runs on whatever device the audio is on.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

SAMPLE_RATE = 22050
SAMPLES_PER_CODE = 1024  # the DVAE's rate: one code per 4 mel frames
HOP = 256


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024
    hop: int = HOP
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    clamp: float = 1e-5


@functools.lru_cache(maxsize=8)
def _filterbank(cfg: MelConfig) -> np.ndarray:
    import librosa
    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                               fmax=cfg.fmax, htk=True, norm="slaney").astype(np.float32)


def load_mel_norms(path: str) -> torch.Tensor:
    norms = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(norms, torch.Tensor) or norms.numel() != 80:
        raise ValueError(f"{path}: expected a tensor of 80 mel norms, got {type(norms).__name__}")
    return norms.float().flatten()


class MelSpectrogram(torch.nn.Module):
    """wav [B, T] in -1..1 → normalised log-mel [B, 80, T // hop + 1]."""

    def __init__(self, norms: Optional[torch.Tensor] = None, cfg: MelConfig = MelConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win, periodic=True), persistent=False)
        self.register_buffer("fb", torch.from_numpy(_filterbank(cfg)), persistent=False)
        self.register_buffer("norms", norms if norms is not None else torch.ones(cfg.n_mels), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        spec = torch.stft(wav.float(), n_fft=c.n_fft, hop_length=c.hop, win_length=c.win, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        mel = torch.matmul(self.fb, power)
        return torch.log(torch.clamp(mel, min=c.clamp)) / self.norms.unsqueeze(-1)
