"""Loading a trained stage's ``model.pth`` for the stages and tools that use it without training it.

A model's config is the ``config.json`` its trainer wrote beside ``model.pth``; a checkpoint
without one (a released tortoise-tts file) is read with the released config. The model comes back
in eval mode with gradients off.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from tts.models.autoregressive import ArConfig, UnifiedVoice
from tts.models.clvp import CLVP, ClvpConfig
from tts.models.cvvp import CVVP, CvvpConfig
from tts.models.diffusion import DiffusionConfig, DiffusionTts
from tts.models.vocoder import UnivNetGenerator
from tts.training.loop import load_state_dict
from tts.training.tasks import load_config

MODELS = {"autoregressive": (UnifiedVoice, ArConfig), "diffusion": (DiffusionTts, DiffusionConfig),
          "clvp": (CLVP, ClvpConfig), "cvvp": (CVVP, CvvpConfig)}


def config_for(kind: str, path: str):
    cls = MODELS[kind][1]
    cfg_path = os.path.join(os.path.dirname(path), "config.json")
    return load_config(cls, cfg_path if os.path.exists(cfg_path) else "released")


def load_frozen(kind: str, path: str, device: torch.device):
    """The ``kind`` model (autoregressive, diffusion, clvp, cvvp) saved at ``path``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {kind} model at {path}")
    model_cls = MODELS[kind][0]
    try:
        cfg = config_for(kind, path)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a {kind} model: its config.json does not fit ({e})") from None
    model = model_cls(cfg)
    try:
        model.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"{path} is not a {kind} model of the config beside it (config.json, or the released "
                         f"config without one): {first[1].strip() if len(first) > 1 else first[0]}") from None
    return model.to(device).eval().requires_grad_(False)


def load_vocoder(path: str, device: torch.device) -> UnivNetGenerator:
    """A UnivNet generator from a state dict, or from tortoise-tts's ``vocoder.pth`` (its ``model_g`` entry)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no vocoder at {path}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("model_g"), dict):
        sd = sd["model_g"]
    if not isinstance(sd, dict) or "conv_pre.bias" not in sd:
        raise ValueError(f"{path} is not a UnivNet generator state dict (no conv_pre.bias)")
    model = UnivNetGenerator(channels=int(sd["conv_pre.bias"].shape[0]))  # tortoise-tts's is 32 wide
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} is not a UnivNet generator state dict: {str(e).splitlines()[0]}") from None
    return model.to(device).eval().requires_grad_(False)


def sibling(path: Optional[str], name: str) -> Optional[str]:
    """``name`` in the directory of ``path`` when it exists there (tokenizer.json, mel_norms.pth travel with runs)."""
    if not path:
        return None
    candidate = os.path.join(os.path.dirname(path), name)
    return candidate if os.path.exists(candidate) else None


def inherit_front_end(args, tokenizer_from: Optional[str], norms_from: tuple) -> None:
    """Point ``args.tokenizer`` / ``args.mel_norms`` at the files the upstream models were trained with
    (found beside their model.pth) unless given: a later stage must read text and mels exactly as they did."""
    if tokenizer_from and not args.tokenizer:
        args.tokenizer = sibling(tokenizer_from, "tokenizer.json")
        if not args.tokenizer:
            raise ValueError(f"no tokenizer.json beside {tokenizer_from}: pass --tokenizer, the one the "
                             f"autoregressive model was trained with")
    if not args.mel_norms:
        args.mel_norms = next((p for p in (sibling(f, "mel_norms.pth") for f in norms_from) if p), None)
        if not args.mel_norms:
            raise ValueError(f"no mel_norms.pth beside {' or '.join(norms_from)}: pass --mel_norms, the norms "
                             f"the DVAE was trained with")
