"""Self-attention over the time axis of a [B, C, T] feature map, as TorToiSe's diffusion decoder and CVVP use it.

Group norm (in float32), a 1×1 convolution to q, k, v laid out per head as ``[q | k | v]``, softmax
attention, a zero-initialised 1×1 output convolution and a residual. With ``relative=True`` a learned
T5-style bias per head and relative-distance bucket (32 buckets, exact up to 8 frames, logarithmic
to 64) is added to the attention logits, scaled by √(head dim). Parameter names follow tortoise-tts's
``AttentionBlock`` so released checkpoints load as they are.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """Group norm computed in float32 whatever the input's dtype (bf16 statistics are too coarse)."""

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """TorToiSe's group count: 32 groups (16 up to 64 channels, 8 up to 16), halved until it divides."""
    groups = 8 if channels <= 16 else 16 if channels <= 64 else 32
    while channels % groups:
        groups //= 2
    if groups <= 2:
        raise ValueError(f"{channels} channels leave only {groups} norm groups: use a multiple of 8")
    return GroupNorm32(groups, channels)


def relative_bucket(relative: torch.Tensor, num_buckets: int = 32, max_distance: int = 64) -> torch.Tensor:
    """Bidirectional T5 buckets for key position minus query position: half the buckets per direction,
    distances below a quarter of the buckets exact, larger ones on a log scale up to ``max_distance``."""
    half = num_buckets // 2
    n = -relative
    bucket = (n < 0).long() * half
    n = n.abs()
    exact = half // 2
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (half - exact)).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(n < exact, n, large)


class RelativePositionBias(nn.Module):
    def __init__(self, scale: float, heads: int, num_buckets: int = 32, max_distance: int = 64):
        super().__init__()
        self.scale, self.num_buckets, self.max_distance = scale, num_buckets, max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, t: int, device) -> torch.Tensor:
        """The [1, heads, t, t] bias for t query and key positions."""
        pos = torch.arange(t, device=device)
        buckets = relative_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0) * self.scale


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, heads: int, relative: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.relative_pos_embeddings = (RelativePositionBias((channels // heads) ** 0.5, heads) if relative
                                        else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        ch = c // self.heads
        qkv = self.qkv(self.norm(x)).reshape(b, self.heads, 3 * ch, t)
        q, k, v = (y.transpose(2, 3) for y in qkv.split(ch, dim=2))  # [B, H, T, ch] each
        bias = None
        if self.relative_pos_embeddings is not None:
            bias = self.relative_pos_embeddings(t, x.device).to(q.dtype)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return x + self.proj_out(h.transpose(2, 3).reshape(b, c, t))
