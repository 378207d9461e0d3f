"""Run a loaded CTC model on a batch of variable-length clips.

Clips are normalised one by one the way the feature extractor would (zero mean, unit variance over
the clip's own samples), padded with zeros to the longest, and given an attention mask only when
the model family expects one: layer-norm wav2vec2 models take a mask; group-norm ones must see
plain zero padding and no mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from asr.ctc import greedy_decode
from asr.model import LoadedCtcModel


@dataclass(frozen=True)
class AsrOutput:
    text: str
    confidence: float


def prepare_batch(audio: Sequence[np.ndarray], do_normalize: bool):
    """(padded input [B, L], lengths [B]) as tensors."""
    lengths = torch.tensor([len(a) for a in audio], dtype=torch.long)
    x = torch.zeros(len(audio), int(lengths.max()), dtype=torch.float32)
    for i, a in enumerate(audio):
        t = torch.from_numpy(np.asarray(a, dtype=np.float32))
        if do_normalize:
            t = (t - t.mean()) / torch.sqrt(t.var(unbiased=False) + 1e-7)
        x[i, : len(t)] = t
    return x, lengths


def frame_lengths(model: torch.nn.Module, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
    fn = getattr(model, "_get_feat_extract_output_lengths", None)
    if fn is None:
        return torch.full_like(lengths, n_frames)
    return fn(lengths).clamp(max=n_frames).long()


def transcribe(loaded: LoadedCtcModel, audio: Sequence[np.ndarray]) -> List[AsrOutput]:
    """Greedy transcripts and confidences for clips at ``loaded.sample_rate``."""
    if not audio:
        return []
    x, lengths = prepare_batch(audio, loaded.do_normalize)
    x = x.to(loaded.device)
    mask = None
    if loaded.use_attention_mask:
        mask = (torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).long().to(loaded.device)
    with torch.inference_mode():
        logits = loaded.model(x, attention_mask=mask).logits
    flens = frame_lengths(loaded.model, lengths, logits.shape[1])
    results = greedy_decode(logits, flens, loaded.blank_id)
    return [AsrOutput(loaded.decode_ids(r.ids), round(r.confidence, 4)) for r in results]
