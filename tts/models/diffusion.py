"""TorToiSe's diffusion decoder: 100-bin, 24 kHz mels from the autoregressive model's latents and a voice.

Same parameter names and shapes as tortoise-tts's ``DiffusionTts`` (``diffusion_decoder.pth`` loads
with ``strict=True``): the aligned conditioning — autoregressive latents through
``latent_conditioner`` (a convolution and attention blocks), or DVAE codes through ``code_embedding``
and ``code_converter`` — is normalised and scaled/shifted by a voice latent from
``contextual_embedder`` (two stride-2 convolutions and attention blocks over a conditioning mel,
averaged over time), stretched to the output length, refined with the timestep by three diffusion
layers, joined with the noisy mel, and run through ``num_layers`` diffusion layers (a timestep-
conditioned residual block with scale-shift norm, then attention with relative position bias) and
three more residual blocks. The output is 2 × 100 channels: the predicted noise and the
interpolation between the two variance bounds (see ``tts.models.gaussian_diffusion``).

Regularisation while training, as in DL-Art-School: whole samples (``unconditioned_percentage``)
have their conditioning replaced by a learned "unconditioned" embedding, which classifier-free
guidance needs at sampling time, and middle layers are skipped with probability ``layer_drop``.
Both do nothing in eval mode, so the released model computes the same function whatever they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tts.models.conv_attention import AttentionBlock, normalization


@dataclass(frozen=True)
class DiffusionConfig:
    model_channels: int = 1024
    num_layers: int = 10
    in_channels: int = 100
    out_channels: int = 200
    in_latent_channels: int = 1024
    in_tokens: int = 8193
    dropout: float = 0.0
    num_heads: int = 16
    layer_drop: float = 0.1
    unconditioned_percentage: float = 0.1
    code_pred_weight: float = 1.0  # weight of the MSE between mel_head's quick guess and the target mel
    diffusion_steps: int = 4000  # the linear beta schedule's length (as trained)

    def __post_init__(self):
        if self.out_channels != 2 * self.in_channels:
            raise ValueError("out_channels must be 2 × in_channels (noise and variance)")
        if self.model_channels % self.num_heads or (2 * self.model_channels) % self.num_heads:
            raise ValueError(f"model_channels {self.model_channels} does not split into {self.num_heads} heads")

    @classmethod
    def preset(cls, name: str, latent_dim: int = 1024, num_codes: int = 8192) -> "DiffusionConfig":
        """``released``: tortoise-tts's decoder; ``tiny``: for tests. ``latent_dim`` is the autoregressive
        model's width."""
        if name == "released":
            return cls(in_latent_channels=latent_dim, in_tokens=num_codes + 1)
        if name == "tiny":
            return cls(model_channels=64, num_layers=1, num_heads=2, in_latent_channels=latent_dim,
                       in_tokens=num_codes + 1, layer_drop=0.0)
        raise ValueError(f"unknown diffusion config {name!r} (tiny, released)")


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: [N] → [N, dim], cosines then sines."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """Residual block whose second norm is scaled and shifted by the timestep embedding."""

    def __init__(self, channels: int, emb_channels: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(), nn.Conv1d(channels, channels, 1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * channels))
        self.out_layers = nn.Sequential(normalization(channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv1d(channels, channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = nn.Identity()

    def forward(self, x, emb):
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).type(h.dtype)[..., None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class DiffusionLayer(nn.Module):
    def __init__(self, channels: int, dropout: float, heads: int):
        super().__init__()
        self.resblk = ResBlock(channels, channels, dropout)
        self.attn = AttentionBlock(channels, heads, relative=True)

    def forward(self, x, emb):
        return self.attn(self.resblk(x, emb))


class TimestepSequential(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb)
        return x


class DiffusionTts(nn.Module):
    def __init__(self, cfg: DiffusionConfig = DiffusionConfig()):
        super().__init__()
        self.cfg = cfg
        mc, heads, cin = cfg.model_channels, cfg.num_heads, cfg.in_channels
        self.inp_block = nn.Conv1d(cin, mc, 3, 1, 1)
        self.time_embed = nn.Sequential(nn.Linear(mc, mc), nn.SiLU(), nn.Linear(mc, mc))
        self.code_embedding = nn.Embedding(cfg.in_tokens, mc)
        self.code_converter = nn.Sequential(*[AttentionBlock(mc, heads, relative=True) for _ in range(3)])
        self.code_norm = normalization(mc)
        self.latent_conditioner = nn.Sequential(nn.Conv1d(cfg.in_latent_channels, mc, 3, padding=1),
                                                *[AttentionBlock(mc, heads, relative=True) for _ in range(4)])
        self.contextual_embedder = nn.Sequential(nn.Conv1d(cin, mc, 3, padding=1, stride=2),
                                                 nn.Conv1d(mc, mc * 2, 3, padding=1, stride=2),
                                                 *[AttentionBlock(mc * 2, heads, relative=True) for _ in range(5)])
        self.unconditioned_embedding = nn.Parameter(torch.randn(1, mc, 1))
        self.conditioning_timestep_integrator = TimestepSequential(
            *[DiffusionLayer(mc, cfg.dropout, heads) for _ in range(3)])
        self.integrating_conv = nn.Conv1d(mc * 2, mc, kernel_size=1)
        self.mel_head = nn.Conv1d(mc, cin, kernel_size=3, padding=1)
        self.layers = nn.ModuleList([DiffusionLayer(mc, cfg.dropout, heads) for _ in range(cfg.num_layers)]
                                    + [ResBlock(mc, mc, cfg.dropout) for _ in range(3)])
        self.out = nn.Sequential(normalization(mc), nn.SiLU(), nn.Conv1d(mc, cfg.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # starts by predicting zero noise and mid-range variance
        nn.init.zeros_(self.out[-1].bias)

    def get_conditioning(self, conditioning_input: torch.Tensor) -> torch.Tensor:
        """Conditioning mels [B, 100, S] or [B, N, 100, S] (log, not normalised) → voice latent [B, 2 × channels]."""
        if conditioning_input.dim() == 3:
            conditioning_input = conditioning_input.unsqueeze(1)
        conds = [self.contextual_embedder(conditioning_input[:, j]) for j in range(conditioning_input.shape[1])]
        return torch.cat(conds, dim=-1).mean(dim=-1)

    def timestep_independent(self, aligned_conditioning, conditioning_latent, expected_seq_len: int,
                             return_code_pred: bool):
        """The conditioning stretched to ``expected_seq_len`` frames (computed once per sampling run);
        with ``return_code_pred`` also ``mel_head``'s direct guess of the mel from it."""
        if aligned_conditioning.is_floating_point():  # autoregressive latents [B, M, latent]
            code_emb = self.latent_conditioner(aligned_conditioning.permute(0, 2, 1))
        else:  # DVAE codes [B, M]
            code_emb = self.code_converter(self.code_embedding(aligned_conditioning).permute(0, 2, 1))
        cond_scale, cond_shift = torch.chunk(conditioning_latent, 2, dim=1)
        code_emb = self.code_norm(code_emb) * (1 + cond_scale.unsqueeze(-1)) + cond_shift.unsqueeze(-1)
        unconditioned = torch.zeros((code_emb.shape[0], 1, 1), dtype=torch.bool, device=code_emb.device)
        if self.training and self.cfg.unconditioned_percentage > 0:
            unconditioned = torch.rand((code_emb.shape[0], 1, 1), device=code_emb.device) < self.cfg.unconditioned_percentage
            code_emb = torch.where(unconditioned, self.unconditioned_embedding.to(code_emb.dtype)
                                   .expand(code_emb.shape[0], -1, code_emb.shape[-1]), code_emb)
        expanded = F.interpolate(code_emb, size=expected_seq_len, mode="nearest")
        if not return_code_pred:
            return expanded
        # no gradient from the guess through samples whose conditioning was dropped
        return expanded, self.mel_head(expanded) * unconditioned.logical_not()

    def forward(self, x, timesteps, aligned_conditioning=None, conditioning_latent=None,
                precomputed_aligned_embeddings=None, conditioning_free=False, return_code_pred=False,
                conditioning_input=None):
        """Noise and variance prediction [B, 200, T] for noisy mels ``x`` [B, 100, T] at ``timesteps`` [B].
        Conditioning: ``aligned_conditioning`` with ``conditioning_latent`` (or the raw
        ``conditioning_input`` mels), or ``precomputed_aligned_embeddings``, or none (``conditioning_free``)."""
        if conditioning_latent is None and conditioning_input is not None:
            conditioning_latent = self.get_conditioning(conditioning_input)
        unused = []  # parameters a step may skip take part with weight 0, so DDP sees a gradient for all
        mel_pred = None
        if conditioning_free:
            code_emb = self.unconditioned_embedding.expand(x.shape[0], -1, x.shape[-1])
        elif precomputed_aligned_embeddings is not None:
            code_emb = precomputed_aligned_embeddings
        else:
            if aligned_conditioning is None or conditioning_latent is None:
                raise ValueError("need aligned_conditioning and a conditioning latent (or input)")
            code_emb, mel_pred = self.timestep_independent(aligned_conditioning, conditioning_latent, x.shape[-1], True)
            branch = self.code_converter if aligned_conditioning.is_floating_point() else self.latent_conditioner
            unused += list(branch.parameters())
            if aligned_conditioning.is_floating_point():
                unused += list(self.code_embedding.parameters())
            unused.append(self.unconditioned_embedding)
        time_emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels))
        code_emb = self.conditioning_timestep_integrator(code_emb, time_emb)
        h = self.integrating_conv(torch.cat([self.inp_block(x), code_emb], dim=1))
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if (self.training and self.cfg.layer_drop > 0 and 0 < i < last
                    and float(torch.rand(())) < self.cfg.layer_drop):
                unused += list(layer.parameters())
                continue
            h = layer(h, time_emb)
        out = self.out(h.float())
        if self.training and unused:
            out = out + 0 * sum(p.float().mean() for p in unused)
        return (out, mel_pred) if return_code_pred else out
