"""Running a trained autoregressive model (``UnifiedVoice``) outside its training loss.

``mel_latents`` gives the diffusion decoder its input: the final-norm hidden states at the code
positions, computed as tortoise-tts's ``return_latent`` does — the state that reads the start token
and codes 0 … i − 1 is latent i. ``sample_codes`` draws code sequences for a text and a voice with
a key/value cache (one new token per step through the GPT-2 blocks), with tortoise's sampling
controls: repetition penalty, temperature, nucleus (top-p). It also returns each sequence's mean
log-probability, a ranking signal when no CLVP is at hand.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from tts.models.autoregressive import UnifiedVoice


def prefix_embeddings(model: UnifiedVoice, cond_latent: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[voice latent] [start, text…, stop] embedded: cond_latent [B, d], text [B, T] → [B, T + 3, d]."""
    c = model.cfg
    text = F.pad(F.pad(text, (0, 1), value=c.stop_text_token), (1, 0), value=c.start_text_token)
    emb = model.text_embedding(text) + model.text_pos_embedding(text.shape[1])
    return torch.cat([cond_latent.unsqueeze(1).to(emb.dtype), emb], 1)


@torch.no_grad()
def mel_latents(model: UnifiedVoice, cond_latent: torch.Tensor, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The decoder's aligned conditioning for ``codes`` [B, M]: [B, M, d]."""
    c = model.cfg
    prefix = prefix_embeddings(model, cond_latent, text)
    mel_in = F.pad(F.pad(codes, (0, 1), value=c.stop_mel_token), (1, 0), value=c.start_mel_token)
    m_emb = model.mel_embedding(mel_in) + model.mel_pos_embedding(mel_in.shape[1])
    h = model.final_norm(model.gpt(torch.cat([prefix, m_emb], 1))[:, 1:])
    return h[:, -mel_in.shape[1]:][:, : codes.shape[1]]


def _blocks(model: UnifiedVoice, x: torch.Tensor, cache: Optional[list]) -> Tuple[torch.Tensor, list]:
    """Run the GPT-2 blocks over new positions ``x`` [B, t, d], attending to the cached keys and values."""
    new_cache = []
    for i, block in enumerate(model.gpt.h):
        attn = block.attn
        b, t, d = x.shape
        q, k, v = attn.c_attn(block.ln_1(x)).split(d, dim=2)
        q, k, v = (y.view(b, t, attn.heads, d // attn.heads).transpose(1, 2) for y in (q, k, v))
        if cache is not None:
            k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        x = x + attn.c_proj(y.transpose(1, 2).reshape(b, t, d))
        x = x + block.mlp(block.ln_2(x))
        new_cache.append((k, v))
    return model.gpt.ln_f(x), new_cache


def _filter_logits(logits: torch.Tensor, generated: torch.Tensor, temperature: float, top_p: float,
                   repetition_penalty: float) -> torch.Tensor:
    if repetition_penalty != 1.0 and generated.shape[1]:
        seen = logits.gather(1, generated)
        logits = logits.scatter(1, generated, torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty))
    logits = logits / max(temperature, 1e-5)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set whose mass reaches top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def sample_codes(model: UnifiedVoice, cond_latent: torch.Tensor, text: torch.Tensor, n: int, max_codes: int = 500,
                 min_codes: int = 0, temperature: float = 0.8, top_p: float = 0.8, repetition_penalty: float = 2.0,
                 generator: Optional[torch.Generator] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """``n`` code sequences (stop token excluded, none shorter than ``min_codes``) for one text [1, T] and voice
    latent [1, d], and their mean log-probabilities under the model."""
    c = model.cfg
    limit = min(max_codes, c.max_mel_tokens)
    prefix = prefix_embeddings(model, cond_latent, text).expand(n, -1, -1)
    pos = model.mel_pos_embedding.emb.weight
    start = torch.full((n, 1), c.start_mel_token, dtype=torch.long, device=text.device)
    h, cache = _blocks(model, torch.cat([prefix, model.mel_embedding(start) + pos[0]], 1), None)
    generated = torch.zeros((n, 0), dtype=torch.long, device=text.device)
    done = torch.zeros(n, dtype=torch.bool, device=text.device)
    logprob = torch.zeros(n, device=text.device)
    for step in range(limit):
        logits = model.mel_head(model.final_norm(h[:, -1])).float()
        logits[:, c.start_mel_token] = float("-inf")
        if step < min_codes:
            logits[:, c.stop_mel_token] = float("-inf")
        logits = _filter_logits(logits, generated, temperature, top_p, repetition_penalty)
        probs = logits.softmax(-1)
        tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        tok = torch.where(done, torch.full_like(tok, c.stop_mel_token), tok)
        logprob += torch.where(done, torch.zeros_like(logprob), probs.gather(1, tok[:, None]).squeeze(1).clamp(min=1e-12).log())
        generated = torch.cat([generated, tok[:, None]], 1)
        done |= tok == c.stop_mel_token
        if bool(done.all()) or step + 1 == limit:
            break
        h, cache = _blocks(model, model.mel_embedding(tok[:, None]) + pos[step + 1], cache)
    seqs = []
    for row in generated:
        stops = (row == c.stop_mel_token).nonzero()
        seqs.append(row[: int(stops[0]) if len(stops) else len(row)])
    lengths = torch.tensor([max(1, len(s) + (1 if len(s) < generated.shape[1] else 0)) for s in seqs],
                           device=text.device)
    return seqs, logprob / lengths
