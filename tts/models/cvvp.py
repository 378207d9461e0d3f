"""CVVP: a CLIP-style model that scores how much a generated clip (as DVAE codes) sounds like a voice.

Same parameter names and shapes as tortoise-tts's ``CVVP`` (``cvvp.pth`` loads with ``strict=True``):
the conditioning clip's 80-bin mel goes through two stride-2 convolutions, the speech's DVAE codes
through an embedding; each side then runs a pre-norm transformer encoder (RMSNorm, rotary position
embedding on the first 32 dims of q, k and v, GLU feed-forward of width 1 × dim, final LayerNorm),
a 1×1 conv → attention block → 1×1 conv "pre-combiner", a mean over time and a bias-free projection;
the score is the cosine similarity × exp(temperature). tortoise-tts mixes it with CLVP's score to
rank candidates by voice.

Training pairs a clip of a speaker with another clip of the same speaker. The loss is the symmetric
cross-entropy over the batch's conditioning × speech similarities, as in CLIP, except that two
different clips of the *same* speaker are not counted as a mismatch (they are masked out of the
softmax): they are not negatives, and a batch may hold several clips of one voice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from tts.models.clvp import Attention, FeedForward, RMSNorm, RotaryEmbedding
from tts.models.conv_attention import AttentionBlock


@dataclass(frozen=True)
class CvvpConfig:
    model_dim: int = 512
    transformer_heads: int = 8
    dropout: float = 0.1
    conditioning_enc_depth: int = 8
    cond_mask_percentage: float = 0.0
    mel_channels: int = 80
    mel_codes: int = 8192  # the DVAE's code count; 0 reads 80-bin mels instead of codes
    speech_enc_depth: int = 8
    speech_mask_percentage: float = 0.0
    latent_multiplier: int = 1
    dim_head: int = 64

    @classmethod
    def preset(cls, name: str, num_codes: int = 8192) -> "CvvpConfig":
        if name == "released":
            return cls(mel_codes=num_codes)
        if name == "tiny":
            return cls(model_dim=64, transformer_heads=2, dropout=0.0, conditioning_enc_depth=1, speech_enc_depth=1,
                       mel_codes=num_codes, dim_head=32)
        raise ValueError(f"unknown CVVP config {name!r} (tiny, released)")


class EncoderLayers(nn.Module):
    """Alternating attention and feed-forward layers, each stored as ``[norms, branch, residual]``."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.rotary_pos_emb = RotaryEmbedding(max(dim_head // 2, 32))
        self.layers = nn.ModuleList()
        for _ in range(depth):
            for branch in (Attention(dim, heads, dim_head, dropout), FeedForward(dim, 1, dropout)):
                self.layers.append(nn.ModuleList([nn.ModuleList([RMSNorm(dim), None, None]), branch, nn.Identity()]))

    def forward(self, x):
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        freqs = self.rotary_pos_emb(x.shape[1], x.device)
        for norms, branch, _ in self.layers:
            x = x + branch(norms[0](x), mask, freqs)
        return x


class _Encoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.attn_layers = EncoderLayers(dim, depth, heads, dim_head, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.attn_layers(x))


class CollapsingTransformer(nn.Module):
    """[B, T, dim] → [B, out]: encoder, pre-combiner, mean over time (with random time/channel dropout while training)."""

    def __init__(self, dim: int, out: int, heads: int, dropout: float, depth: int, dim_head: int,
                 mask_percentage: float = 0.0):
        super().__init__()
        self.transformer = _Encoder(dim, depth, heads, dim_head, dropout)
        self.pre_combiner = nn.Sequential(nn.Conv1d(dim, out, 1), AttentionBlock(out, heads), nn.Conv1d(out, out, 1))
        self.mask_percentage = mask_percentage

    def forward(self, x):
        h = self.pre_combiner(self.transformer(x).permute(0, 2, 1)).permute(0, 2, 1)
        if self.training and self.mask_percentage > 0:
            keep = (torch.rand_like(h.float()) > self.mask_percentage).to(h.dtype)
            return (h * keep).sum(1) / keep.sum(1).clamp(min=1)
        return h.mean(1)


class ConvFormatEmbedding(nn.Module):
    def __init__(self, n: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(n, dim)

    def forward(self, x):
        return self.emb(x).permute(0, 2, 1)


class CVVP(nn.Module):
    def __init__(self, cfg: CvvpConfig = CvvpConfig()):
        super().__init__()
        self.cfg = cfg
        d, latent = cfg.model_dim, cfg.latent_multiplier * cfg.model_dim
        self.temperature = nn.Parameter(torch.tensor(1.0))
        self.cond_emb = nn.Sequential(nn.Conv1d(cfg.mel_channels, d // 2, kernel_size=5, stride=2, padding=2),
                                      nn.Conv1d(d // 2, d, kernel_size=3, stride=2, padding=1))
        self.conditioning_transformer = CollapsingTransformer(d, d, cfg.transformer_heads, cfg.dropout,
                                                              cfg.conditioning_enc_depth, cfg.dim_head,
                                                              cfg.cond_mask_percentage)
        self.to_conditioning_latent = nn.Linear(latent, latent, bias=False)
        self.speech_emb = (ConvFormatEmbedding(cfg.mel_codes, d) if cfg.mel_codes
                           else nn.Conv1d(cfg.mel_channels, d, kernel_size=5, padding=2))
        self.speech_transformer = CollapsingTransformer(d, latent, cfg.transformer_heads, cfg.dropout,
                                                        cfg.speech_enc_depth, cfg.dim_head, cfg.speech_mask_percentage)
        self.to_speech_latent = nn.Linear(latent, latent, bias=False)

    def latents(self, mel_cond: torch.Tensor, speech: torch.Tensor):
        """Unit-length voice latents of conditioning mels [B, 80, S] and of speech codes [B, M] (or mels)."""
        cond = self.to_conditioning_latent(self.conditioning_transformer(self.cond_emb(mel_cond).permute(0, 2, 1)))
        sp = self.to_speech_latent(self.speech_transformer(self.speech_emb(speech).permute(0, 2, 1)))
        return F.normalize(cond, dim=-1), F.normalize(sp, dim=-1)

    def forward(self, mel_cond, mel_input, return_loss: bool = False, same_voice: Optional[torch.Tensor] = None):
        """Each pair's similarity (scaled by exp(temperature)), or with ``return_loss`` the contrastive loss;
        ``same_voice`` [B, B] (bool) marks pairs of one speaker to leave out of the negatives."""
        cond, speech = self.latents(mel_cond, mel_input)
        scale = self.temperature.exp()
        if not return_loss:
            return (cond * speech).sum(-1) * scale
        sim = cond @ speech.t() * scale
        if same_voice is not None:
            eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
            sim = sim.masked_fill(same_voice.to(sim.device) & ~eye, float("-inf"))
        labels = torch.arange(sim.shape[0], device=sim.device)
        return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2
