"""CLVP: a CLIP-style model that scores how well a text matches speech (as DVAE codes).

Same parameter names and shapes as tortoise-tts's ``CLVP`` (``clvp2.pth`` loads with
``strict=True``): text and speech token embeddings, two pre-norm transformer encoders (RMSNorm,
rotary position embedding on the first 32 dims of each head's q, k and v, GLU feed-forward with
GELU, a final LayerNorm), masked mean pooling, bias-free projections to a shared latent, and a
learned temperature. Loss: symmetric cross-entropy over the batch's text × speech similarities.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ClvpConfig:
    dim_text: int = 768
    dim_speech: int = 768
    dim_latent: int = 768
    num_text_tokens: int = 256
    text_enc_depth: int = 20
    text_seq_len: int = 350
    text_heads: int = 12
    num_speech_tokens: int = 8192
    speech_enc_depth: int = 20
    speech_heads: int = 12
    speech_seq_len: int = 430
    dim_head: int = 64
    dropout: float = 0.1

    @classmethod
    def preset(cls, name: str, num_codes: int = 8192) -> "ClvpConfig":
        if name == "released":
            return cls()
        if name == "tiny":
            return cls(dim_text=64, dim_speech=64, dim_latent=64, text_enc_depth=2, text_heads=2, speech_enc_depth=2,
                       speech_heads=2, num_speech_tokens=num_codes, dim_head=32, dropout=0.0)
        raise ValueError(f"unknown CLVP config {name!r} (tiny, released)")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.scale, self.eps = dim ** -0.5, eps
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x / (x.norm(dim=-1, keepdim=True) * self.scale).clamp(min=self.eps) * self.g


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, n: int, device) -> torch.Tensor:
        freqs = torch.einsum("i,j->ij", torch.arange(n, device=device).type_as(self.inv_freq), self.inv_freq)
        return torch.cat((freqs, freqs), dim=-1)[None, None]


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    d = freqs.shape[-1]
    t, rest = t[..., :d], t[..., d:]
    return torch.cat((t * freqs.cos() + _rotate_half(t) * freqs.sin(), rest), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale, self.dropout = heads, dim_head ** -0.5, dropout
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x, mask, freqs):
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, self.heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        q, k, v = (apply_rotary(t, freqs) for t in (q, k, v))
        attn_mask = mask[:, None, :, None] & mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x, mask=None, freqs=None):
        return self.net(x)


class _Wrap(nn.Module):
    """Holds a branch under ``.wrap`` (the released checkpoint's key layout)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.wrap = inner

    def forward(self, *args):
        return self.wrap(*args)


class AttentionLayers(nn.Module):
    """Alternating attention and feed-forward layers, each ``[norms, branch, residual]``."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.rotary_pos_emb = RotaryEmbedding(max(dim_head // 2, 32))
        self.layers = nn.ModuleList()
        for _ in range(depth):
            for branch in (Attention(dim, heads, dim_head, dropout), FeedForward(dim, 2, dropout)):
                self.layers.append(nn.ModuleList([nn.ModuleList([RMSNorm(dim), None, None]), _Wrap(branch),
                                                  nn.Identity()]))

    def forward(self, x, mask):
        freqs = self.rotary_pos_emb(x.shape[1], x.device)
        for norms, branch, _ in self.layers:
            x = x + branch(norms[0](x), mask, freqs)
        return x


class _Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.attn_layers = AttentionLayers(dim, depth, heads, dim_head, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, mask):
        return self.norm(self.attn_layers(x, mask))


class Encoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.transformer = _Transformer(dim, depth, heads, dim_head, dropout)

    def forward(self, x, mask):
        return self.transformer(x, mask)


def masked_mean(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(t.dtype)
    return (t * m).sum(1) / m.sum(1).clamp(min=1)


class CLVP(nn.Module):
    def __init__(self, cfg: ClvpConfig = ClvpConfig()):
        super().__init__()
        self.cfg = cfg
        self.text_emb = nn.Embedding(cfg.num_text_tokens, cfg.dim_text)
        self.to_text_latent = nn.Linear(cfg.dim_text, cfg.dim_latent, bias=False)
        self.speech_emb = nn.Embedding(cfg.num_speech_tokens, cfg.dim_speech)
        self.to_speech_latent = nn.Linear(cfg.dim_speech, cfg.dim_latent, bias=False)
        self.text_transformer = Encoder(cfg.dim_text, cfg.text_enc_depth, cfg.text_heads, cfg.dim_head, cfg.dropout)
        self.speech_transformer = Encoder(cfg.dim_speech, cfg.speech_enc_depth, cfg.speech_heads, cfg.dim_head,
                                          cfg.dropout)
        self.temperature = nn.Parameter(torch.tensor(1.0))

    def latents(self, text, text_mask, speech, speech_mask):
        t = masked_mean(self.text_transformer(self.text_emb(text), text_mask), text_mask)
        s = masked_mean(self.speech_transformer(self.speech_emb(speech), speech_mask), speech_mask)
        return F.normalize(self.to_text_latent(t), dim=-1), F.normalize(self.to_speech_latent(s), dim=-1)

    def forward(self, text, text_mask, speech, speech_mask, return_loss: bool = False):
        """Similarity of each text with its own speech (scaled by exp(temperature)), or with
        ``return_loss`` the symmetric cross-entropy over all text × speech pairs of the batch."""
        t, s = self.latents(text, text_mask, speech, speech_mask)
        if not return_loss:
            return (t * s).sum(-1) * self.temperature.exp()
        sim = t @ s.t() * self.temperature.exp()
        labels = torch.arange(sim.shape[0], device=sim.device)
        return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2
