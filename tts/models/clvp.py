"""CLVP: a CLIP-style model that scores how well a text matches speech (as DVAE codes).

Same parameter names and shapes as tortoise-tts's ``CLVP`` (``clvp2.pth`` loads with
``strict=True``): text and speech token embeddings, two pre-norm transformer encoders (RMSNorm,
rotary position embedding on the first 32 dims of each head's q, k and v, GLU feed-forward with
GELU, a final LayerNorm), masked mean pooling, bias-free projections to a shared latent, and a
learned temperature. Loss: symmetric cross-entropy over the batch's text × speech similarities.

How tortoise-tts scores: its autoregressive model's candidates (codes, then the stop code and stop
padding up to ``max_mel_tokens`` = 500) are rewritten by ``fix_autoregressive_output`` — every
position from the first stop code on becomes the DVAE's "calm" (silence) code 83 and the last three
become 45, 45, 248 — and CLVP reads all 500 positions with no mask, the text with one trailing
stop token. ``pad_candidates`` and ``clvp_scores`` reproduce that, and ``training_loss`` trains on
the same inputs (plus the unpadded clips, which teach the model what the speech says faster), so a
trained model ranks candidates under tortoise's scoring as well as it ranks clean clips.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
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
                       speech_heads=2, num_speech_tokens=num_codes, dim_head=64, dropout=0.0)
        raise ValueError(f"unknown CLVP config {name!r} (tiny, released)")


TORTOISE_DIM_HEAD = 64  # x-transformers' default, which tortoise-tts's CLVP does not change


def tortoise_mismatches(cfg: ClvpConfig) -> List[str]:
    """Why tortoise-tts's ``CLVP`` class could not load or would compute differently (empty: it can)."""
    if cfg.dim_head != TORTOISE_DIM_HEAD:
        return [f"dim_head {cfg.dim_head} (tortoise-tts's CLVP always uses {TORTOISE_DIM_HEAD})"]
    return []


@dataclass(frozen=True)
class CandidatePadding:
    """How tortoise-tts pads autoregressive candidates before CLVP scores them (api.py's ``tts``)."""
    length: int = 500  # max_mel_tokens
    calm_code: int = 83  # the released DVAE's code for silence
    tail: Tuple[int, ...] = (45, 45, 248)  # what that DVAE emits at the end of zero-padded audio

    def validate(self, num_codes: int) -> "CandidatePadding":
        if self.length < len(self.tail) + 1:
            raise ValueError(f"candidate length {self.length} leaves no room for the {len(self.tail)} tail codes")
        top = max((self.calm_code, *self.tail))
        if top >= num_codes:
            raise ValueError(f"tortoise-tts pads candidates with codes up to {top}, but the DVAE has only "
                             f"{num_codes} codes")
        return self


TORTOISE_PADDING = CandidatePadding()


def pad_candidates(codes: torch.Tensor, stop_code: int, padding: CandidatePadding = TORTOISE_PADDING) -> torch.Tensor:
    """Autoregressive outputs [B, M] → what tortoise-tts's CLVP reads [B, padding.length]: cut or padded
    with ``stop_code`` to the length, then, in each row holding a stop code, everything from the first
    one on set to the calm code and the last positions to the tail. Rows with no stop code stay as they are."""
    out = F.pad(codes, (0, padding.length - codes.shape[1]), value=stop_code).clone()
    stopped = out == stop_code
    has_stop = stopped.any(1)
    after = stopped.long().cumsum(1) > 0
    out[after] = padding.calm_code
    tail = torch.tensor(padding.tail, dtype=out.dtype, device=out.device)
    out[has_stop, -len(padding.tail):] = tail
    return out


def clip_candidates(codes: torch.Tensor, n_codes: torch.Tensor, padding: CandidatePadding = TORTOISE_PADDING
                    ) -> torch.Tensor:
    """Each clip's first ``n_codes`` codes as tortoise-tts would score them had its autoregressive model
    emitted them and stopped: codes [B, M] (DVAE codes of padded audio), n_codes [B]."""
    stop = -1  # any value that is not a code
    n = codes.shape[1]
    keep = torch.arange(n, device=codes.device)[None] < n_codes[:, None]
    marked = torch.where(keep, codes, torch.full_like(codes, stop))
    if int(n_codes.max()) >= n:  # a clip that fills the tensor still ends with a stop
        marked = F.pad(marked, (0, 1), value=stop)
    return pad_candidates(marked, stop, padding)


def scoring_text(tokens: Sequence[int], device=None) -> torch.Tensor:
    """A text as tortoise-tts gives it to CLVP: its token ids and one stop token (0), [1, T + 1]."""
    return F.pad(torch.tensor([list(tokens)], dtype=torch.long, device=device), (0, 1))


@torch.no_grad()
def clvp_scores(model: "CLVP", tokens: Sequence[int], candidates: torch.Tensor, stop_code: int,
                padding: CandidatePadding = TORTOISE_PADDING) -> torch.Tensor:
    """tortoise-tts's CLVP score of each autoregressive candidate [B, M] (codes, then stop codes) for a text."""
    was_training = model.training
    model.eval()
    speech = pad_candidates(candidates, stop_code, padding)
    text = scoring_text(tokens, speech.device).repeat(speech.shape[0], 1)
    scores = model(text, None, speech, None)
    model.train(was_training)
    return scores


def training_loss(model: "CLVP", text: torch.Tensor, text_lengths: torch.Tensor, codes: torch.Tensor,
                  n_codes: torch.Tensor, padding: Optional[CandidatePadding] = TORTOISE_PADDING) -> torch.Tensor:
    """The contrastive loss on a batch: texts [B, T] padded with 0 (one stop token is added, padding
    beyond it masked, which is what scoring one unpadded text amounts to), speech codes [B, M] of which
    each clip's first ``n_codes`` are its own. The mean of two losses over the same texts: the clips as
    tortoise-tts pads candidates (no speech mask), and the clips alone (masked); ``padding=None``: only the
    latter. ``model`` may be wrapped in DistributedDataParallel: everything goes through one forward call."""
    text = F.pad(text, (0, 1))
    text_mask = torch.arange(text.shape[1], device=text.device)[None] < (text_lengths + 1)[:, None]
    speech_mask = torch.arange(codes.shape[1], device=codes.device)[None] < n_codes[:, None]
    padded = None if padding is None else clip_candidates(codes, n_codes, padding)
    return model(text, text_mask, codes, speech_mask, return_loss=True, unmasked_speech=padded)


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
        """``mask`` [B, N] of the positions to attend, or None for all (as tortoise-tts scores)."""
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, self.heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        q, k, v = (apply_rotary(t, freqs) for t in (q, k, v))
        attn_mask = None if mask is None else mask[:, None, :, None] & mask[:, None, None, :]
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

    checkpointing = False  # recompute each layer in the backward pass (memory for compute)

    def forward(self, x, mask):
        freqs = self.rotary_pos_emb(x.shape[1], x.device)
        for norms, branch, _ in self.layers:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x = x + torch.utils.checkpoint.checkpoint(lambda h, n=norms, b=branch: b(n[0](h), mask, freqs), x,
                                                          use_reentrant=False)
            else:
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


def masked_mean(t: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    if mask is None:
        return t.mean(1)
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

    def text_latent(self, text, text_mask):
        t = masked_mean(self.text_transformer(self.text_emb(text), text_mask), text_mask)
        return F.normalize(self.to_text_latent(t), dim=-1)

    def speech_latent(self, speech, speech_mask):
        s = masked_mean(self.speech_transformer(self.speech_emb(speech), speech_mask), speech_mask)
        return F.normalize(self.to_speech_latent(s), dim=-1)

    def set_checkpointing(self, on: bool) -> "CLVP":
        for enc in (self.text_transformer, self.speech_transformer):
            enc.transformer.attn_layers.checkpointing = on
        return self

    def latents(self, text, text_mask, speech, speech_mask):
        """Unit text and speech latents; a mask of None reads every position (tortoise-tts's scoring)."""
        return self.text_latent(text, text_mask), self.speech_latent(speech, speech_mask)

    def contrastive(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Symmetric cross-entropy over all text × speech pairs, each text's own speech the answer."""
        sim = t @ s.t() * self.temperature.exp()
        labels = torch.arange(sim.shape[0], device=sim.device)
        return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2

    def forward(self, text, text_mask, speech, speech_mask, return_loss: bool = False,
                unmasked_speech: Optional[torch.Tensor] = None):
        """Similarity of each text with its own speech (scaled by exp(temperature)), or with
        ``return_loss`` the symmetric cross-entropy over all text × speech pairs of the batch; with
        ``unmasked_speech`` (the same clips read another way, every position), the mean of both losses."""
        t, s = self.latents(text, text_mask, speech, speech_mask)
        if not return_loss:
            return (t * s).sum(-1) * self.temperature.exp()
        loss = self.contrastive(t, s)
        if unmasked_speech is not None:
            loss = (loss + self.contrastive(t, self.speech_latent(unmasked_speech, None))) / 2
        return loss
