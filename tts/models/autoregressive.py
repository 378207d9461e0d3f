"""TorToiSe's autoregressive model: a GPT-2 that predicts DVAE codes from text and a voice.

Same parameter names and shapes as tortoise-tts's ``UnifiedVoice`` (so ``autoregressive.pth``
loads with ``strict=True``, causal-mask buffers included, and a trained model drops into
tortoise-tts): a conditioning encoder (1×1 conv and attention blocks over a reference clip's mel,
first time step taken), text and mel-code embeddings with their own learned positions, a stack of
pre-LayerNorm GPT-2 blocks (``gpt.h.N``, Conv1D weights stored [in, out]), a second final
LayerNorm and separate text and mel heads.

Training sequence: [voice latent] [255 text… 0] [8192 codes… 8193], each target shifted by one.
As in tortoise-tts and DL-Art-School, the codes are cut to the longest clip's ``wav_length // 1024``
and each shorter clip keeps one code past its ``wav_length // 1024`` before stop codes; then one
stop code ends every row. Loss = ``text_weight`` × text CE + mel CE.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


@dataclass(frozen=True)
class ArConfig:
    layers: int = 30
    model_dim: int = 1024
    heads: int = 16
    max_text_tokens: int = 402
    max_mel_tokens: int = 604
    max_conditioning_inputs: int = 2
    number_text_tokens: int = 255
    start_text_token: int = 255
    stop_text_token: int = 0
    number_mel_codes: int = 8194
    start_mel_token: int = 8192
    stop_mel_token: int = 8193
    cond_attn_blocks: int = 6
    dropout: float = 0.1
    text_weight: float = 0.01
    mel_weight: float = 1.0

    @classmethod
    def preset(cls, name: str, num_codes: int = 8192) -> "ArConfig":
        if name == "released":
            return cls()
        if name == "tiny":
            return cls(layers=2, model_dim=64, heads=4, cond_attn_blocks=6, number_mel_codes=num_codes + 2,
                       start_mel_token=num_codes, stop_mel_token=num_codes + 1, dropout=0.0)
        raise ValueError(f"unknown autoregressive config {name!r} (tiny, released)")

    @property
    def n_positions(self) -> int:
        return (self.max_mel_tokens + 2 + self.max_conditioning_inputs) + (self.max_text_tokens + 2)


TORTOISE_COND_ATTN_BLOCKS = 6  # tortoise-tts's UnifiedVoice builds its conditioning encoder with the default


def group_norm_groups(channels: int) -> int:
    """The GroupNorm groups tortoise-tts's ``normalization`` picks for a width: 32, 16 up to 64, 8 up to 16,
    halved until they divide the width (its class refuses 2 or fewer)."""
    groups = 8 if channels <= 16 else 16 if channels <= 64 else 32
    while channels % groups:
        groups //= 2
    return groups


def tortoise_mismatches(cfg: ArConfig) -> List[str]:
    """Why tortoise-tts's ``UnifiedVoice`` class could not load this config or would compute differently."""
    out = []
    if cfg.cond_attn_blocks != TORTOISE_COND_ATTN_BLOCKS:
        out.append(f"cond_attn_blocks {cfg.cond_attn_blocks} (tortoise-tts's UnifiedVoice always builds "
                   f"{TORTOISE_COND_ATTN_BLOCKS})")
    if group_norm_groups(cfg.model_dim) <= 2:
        out.append(f"model_dim {cfg.model_dim} (tortoise-tts's GroupNorm needs more than 2 groups)")
    if cfg.stop_text_token != 0:
        out.append(f"stop_text_token {cfg.stop_text_token} (tortoise-tts's is always 0)")
    return out


def mel_codes_and_targets(codes: torch.Tensor, wav_lengths: torch.Tensor, start: int, stop: int
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) for DVAE ``codes`` [B, M] of clips ``wav_lengths`` samples long, laid out as
    tortoise-tts's ``UnifiedVoice.forward`` lays them out (``clip_inputs``, ``set_mel_padding``)."""
    ends = wav_lengths // 1024
    codes = codes[:, : int(ends.max())].clone()
    for i, n in enumerate(ends.tolist()):
        codes[i, n + 1:] = stop  # the code past the clip's end is kept: the DVAE's convolutions reach into it
    codes = F.pad(codes, (0, 1), value=stop)
    return F.pad(codes, (1, 0), value=start), F.pad(codes, (0, 1), value=stop)


class Conv1D(nn.Module):
    """GPT-2's linear layer, weight stored [in, out]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, n_positions: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.c_attn = Conv1D(dim, 3 * dim)
        self.c_proj = Conv1D(dim, dim)
        self.resid_dropout = nn.Dropout(dropout)
        # kept for checkpoint compatibility: the released model stores the causal mask and its fill value
        self.register_buffer("bias", torch.tril(torch.ones(n_positions, n_positions, dtype=torch.bool))
                             .view(1, 1, n_positions, n_positions))
        self.register_buffer("masked_bias", torch.tensor(-1e4))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (y.view(b, t, self.heads, c // self.heads).transpose(1, 2) for y in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.c_fc = Conv1D(dim, 4 * dim)
        self.c_proj = Conv1D(4 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, n_positions: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = CausalSelfAttention(dim, heads, n_positions, dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    """GPT-2 without token or position embeddings (the model adds its own)."""

    def __init__(self, cfg: ArConfig):
        super().__init__()
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg.model_dim, cfg.heads, cfg.n_positions, cfg.dropout) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.model_dim, eps=1e-5)

    checkpointing = False  # recompute each block in the backward pass (memory for compute)

    def forward(self, x):
        x = self.drop(x)
        for block in self.h:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.ln_f(x)


class AttentionBlock(nn.Module):
    """Self-attention over a mel's time axis (GroupNorm, 1×1 qkv conv, zero-initialised output)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(group_norm_groups(dim), dim)
        self.qkv = nn.Conv1d(dim, 3 * dim, 1)
        self.proj_out = nn.Conv1d(dim, dim, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x):
        b, c, t = x.shape
        qkv = self.qkv(self.norm(x.float()).to(x.dtype))
        # per head, channels are [q | k | v] of c // heads each
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, t).split(c // self.heads, dim=1)
        scale = 1 / math.sqrt(math.sqrt(c // self.heads))
        w = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1).to(q.dtype)
        h = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, t)
        return x + self.proj_out(h)


class ConditioningEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, blocks: int, spec_dim: int = 80):
        super().__init__()
        self.init = nn.Conv1d(spec_dim, dim, 1)
        self.attn = nn.Sequential(*[AttentionBlock(dim, heads) for _ in range(blocks)])

    def forward(self, mel):
        return self.attn(self.init(mel))[:, :, 0]


class LearnedPositionEmbeddings(nn.Module):
    def __init__(self, n: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(n, dim)
        nn.init.normal_(self.emb.weight, std=0.02)

    def forward(self, length: int):
        return self.emb(torch.arange(length, device=self.emb.weight.device))


class UnifiedVoice(nn.Module):
    def __init__(self, cfg: ArConfig = ArConfig()):
        super().__init__()
        self.cfg = cfg
        d = cfg.model_dim
        self.conditioning_encoder = ConditioningEncoder(d, cfg.heads, cfg.cond_attn_blocks)
        self.text_embedding = nn.Embedding(cfg.number_text_tokens + 1, d)
        self.mel_embedding = nn.Embedding(cfg.number_mel_codes, d)
        for emb in (self.text_embedding, self.mel_embedding):
            nn.init.normal_(emb.weight, std=0.02)
        self.gpt = Gpt(cfg)
        self.mel_pos_embedding = LearnedPositionEmbeddings(cfg.max_mel_tokens + 2 + cfg.max_conditioning_inputs, d)
        self.text_pos_embedding = LearnedPositionEmbeddings(cfg.max_text_tokens + 2, d)
        self.final_norm = nn.LayerNorm(d)
        self.text_head = nn.Linear(d, cfg.number_text_tokens + 1)
        self.mel_head = nn.Linear(d, cfg.number_mel_codes)

    def conditioning_latent(self, cond_mels: torch.Tensor) -> torch.Tensor:
        """[B, 80, S] or [B, N, 80, S] normalised mels → [B, dim] (mean over the N clips)."""
        if cond_mels.dim() == 3:
            cond_mels = cond_mels.unsqueeze(1)
        return torch.stack([self.conditioning_encoder(cond_mels[:, j]) for j in range(cond_mels.shape[1])], 1).mean(1)

    def forward(self, cond_mels, text, text_lengths, codes, wav_lengths):
        """(text CE, mel CE) for padded ``text`` [B, T] and DVAE ``codes`` [B, M]."""
        c = self.cfg
        text = text[:, : int(text_lengths.max())]
        text = F.pad(text, (0, 1), value=c.stop_text_token)
        text_in, text_tar = F.pad(text, (1, 0), value=c.start_text_token), F.pad(text, (0, 1), value=c.stop_text_token)
        mel_in, mel_tar = mel_codes_and_targets(codes, wav_lengths, c.start_mel_token, c.stop_mel_token)
        cond = self.conditioning_latent(cond_mels).unsqueeze(1)
        t_emb = self.text_embedding(text_in) + self.text_pos_embedding(text_in.shape[1])
        m_emb = self.mel_embedding(mel_in) + self.mel_pos_embedding(mel_in.shape[1])
        h = self.final_norm(self.gpt(torch.cat([cond, t_emb, m_emb], 1))[:, 1:])
        text_logits = self.text_head(h[:, : t_emb.shape[1]])
        mel_logits = self.mel_head(h[:, -m_emb.shape[1]:])
        loss_text = F.cross_entropy(text_logits.transpose(1, 2).float(), text_tar)
        loss_mel = F.cross_entropy(mel_logits.transpose(1, 2).float(), mel_tar)
        return loss_text, loss_mel
