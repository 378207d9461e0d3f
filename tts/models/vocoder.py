"""TorToiSe's UnivNet vocoder: 24 kHz audio from the decoder's 100-bin log-mel (``tts.frontends.vocoder_mel``).

Same parameter names and shapes as tortoise-tts's ``UnivNetGenerator`` with weight norm in place
(``weight_g`` / ``weight_v``), so the generator state dict of tortoise's ``vocoder.pth`` (its
``model_g`` entry) loads with ``strict=True``. Noise [B, 64, T] passes a 7-tap convolution, then three
location-variable convolution blocks that upsample ×8, ×8, ×4 (256 samples per mel frame): each
block's kernels and biases are predicted per mel frame from the mel by a small convolutional
network, and applied with gated activations over four dilated layers. This repository loads and
runs the generator; it does not train it.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from tts.frontends.vocoder_mel import HOP, MEL_MIN, N_MELS


class WeightNormConv(nn.Module):
    """A 1-D (transposed) convolution whose weight is ``weight_g · weight_v / ‖weight_v‖`` (norm over all but dim 0)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 transposed: bool = False, output_padding: int = 0, reflect: bool = False):
        super().__init__()
        shape = (cin, cout, kernel) if transposed else (cout, cin, kernel)
        v = torch.empty(shape)
        nn.init.kaiming_uniform_(v, a=5 ** 0.5)
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.flatten(1).norm(dim=1).view(-1, 1, 1).clone())
        self.bias = nn.Parameter(torch.zeros(cout))
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.transposed, self.output_padding, self.reflect = transposed, output_padding, reflect

    def weight(self) -> torch.Tensor:
        return self.weight_g * self.weight_v / self.weight_v.flatten(1).norm(dim=1).view(-1, 1, 1)

    def forward(self, x):
        if self.transposed:
            return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding, self.output_padding)
        if self.reflect:
            return F.conv1d(F.pad(x, (self.padding, self.padding), mode="reflect"), self.weight(), self.bias,
                            self.stride, 0, self.dilation)
        return F.conv1d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)


class KernelPredictor(nn.Module):
    def __init__(self, cond_channels: int, conv_in: int, conv_out: int, layers: int, kernel: int = 3,
                 hidden: int = 64, slope: float = 0.2):
        super().__init__()
        self.conv_in, self.conv_out, self.layers, self.kernel = conv_in, conv_out, layers, kernel
        self.input_conv = nn.Sequential(WeightNormConv(cond_channels, hidden, 5, padding=2), nn.LeakyReLU(slope))
        self.residual_convs = nn.ModuleList(
            nn.Sequential(nn.Dropout(0.0), WeightNormConv(hidden, hidden, 3, padding=1), nn.LeakyReLU(slope),
                          WeightNormConv(hidden, hidden, 3, padding=1), nn.LeakyReLU(slope)) for _ in range(3))
        self.kernel_conv = WeightNormConv(hidden, conv_in * conv_out * kernel * layers, 3, padding=1)
        self.bias_conv = WeightNormConv(hidden, conv_out * layers, 3, padding=1)

    def forward(self, c):
        b, _, frames = c.shape
        c = self.input_conv(c)
        for block in self.residual_convs:
            c = c + block(c)
        kernels = self.kernel_conv(c).view(b, self.layers, self.conv_in, self.conv_out, self.kernel, frames)
        return kernels, self.bias_conv(c).view(b, self.layers, self.conv_out, frames)


def location_variable_conv(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, hop: int) -> torch.Tensor:
    """Convolve each ``hop``-sample stretch of x [B, Cin, L·hop] with its own kernel [B, Cin, Cout, K, L] and bias [B, Cout, L]."""
    b, _, cout, k, frames = kernel.shape
    pad = (k - 1) // 2
    windows = F.pad(x, (pad, pad)).unfold(2, hop + 2 * pad, hop).unfold(3, k, 1)  # [B, Cin, L, hop, K]
    out = torch.einsum("bilsk,biokl->bols", windows, kernel) + bias.unsqueeze(-1)
    return out.reshape(b, cout, frames * hop)


class LVCBlock(nn.Module):
    def __init__(self, channels: int, cond_channels: int, stride: int, cond_hop: int, dilations=(1, 3, 9, 27),
                 slope: float = 0.2, kernel: int = 3):
        super().__init__()
        self.cond_hop = cond_hop
        self.kernel_predictor = KernelPredictor(cond_channels, channels, 2 * channels, len(dilations), kernel,
                                                slope=slope)
        self.convt_pre = nn.Sequential(nn.LeakyReLU(slope), WeightNormConv(
            channels, channels, 2 * stride, stride=stride, padding=stride // 2 + stride % 2, transposed=True,
            output_padding=stride % 2))
        self.conv_blocks = nn.ModuleList(
            nn.Sequential(nn.LeakyReLU(slope), WeightNormConv(channels, channels, kernel, padding=d * (kernel - 1) // 2,
                                                              dilation=d), nn.LeakyReLU(slope)) for d in dilations)

    def forward(self, x, c):
        channels = x.shape[1]
        x = self.convt_pre(x)
        kernels, bias = self.kernel_predictor(c)
        for i, conv in enumerate(self.conv_blocks):
            out = location_variable_conv(conv(x), kernels[:, i], bias[:, i], self.cond_hop)
            x = x + torch.sigmoid(out[:, :channels]) * torch.tanh(out[:, channels:])
        return x


class UnivNetGenerator(nn.Module):
    def __init__(self, noise_dim: int = 64, channels: int = 32, strides=(8, 8, 4), slope: float = 0.2,
                 n_mels: int = N_MELS):
        super().__init__()
        self.noise_dim, self.n_mels = noise_dim, n_mels
        hops = [1]
        for s in strides:
            hops.append(hops[-1] * s)
        if hops[-1] != HOP:
            raise ValueError(f"strides {strides} upsample ×{hops[-1]}, the mel hop is {HOP}")
        self.res_stack = nn.ModuleList(LVCBlock(channels, n_mels, s, hop, slope=slope) for s, hop in zip(strides, hops[1:]))
        self.conv_pre = WeightNormConv(noise_dim, channels, 7, padding=3, reflect=True)
        self.conv_post = nn.Sequential(nn.LeakyReLU(slope), WeightNormConv(channels, 1, 7, padding=3, reflect=True),
                                       nn.Tanh())

    def forward(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mel [B, 100, L] and noise [B, 64, L] → audio [B, 1, L · 256]."""
        z = self.conv_pre(z)
        for block in self.res_stack:
            z = block(z, c)
        return self.conv_post(z)

    @torch.no_grad()
    def inference(self, mel: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Audio [B, 1, L · 256] in -1..1 from a log-mel [B, 100, L]; ten silent frames appended and cut off
        again keep the end free of artefacts."""
        mel = torch.cat([mel, torch.full((mel.shape[0], self.n_mels, 10), MEL_MIN, device=mel.device, dtype=mel.dtype)], 2)
        z = torch.randn(mel.shape[0], self.noise_dim, mel.shape[2], generator=generator, device=mel.device)
        return self.forward(mel, z)[:, :, : -(HOP * 10)].clamp(-1, 1)
