"""What each downstream stage trains on: its model, its batches, its loss (see ``trainers.loop``).

Mels and DVAE codes are computed inside the loss, on the training device, from the waveforms the
loaders deliver. The autoregressive model and CLVP read codes from a frozen DVAE.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterator, List, Optional

import torch

from trainers.autoregressive import UnifiedVoice
from trainers.clvp import CLVP
from trainers.data import LoaderConfig, ShardLoader
from trainers.dvae import DiscreteVAE, DvaeConfig
from trainers.loop import load_state_dict
from trainers.mel import SAMPLES_PER_CODE, MelSpectrogram


def load_config(cls, spec: str, **preset_kw):
    """A model config from a preset name (``tiny``, ``released``) or a JSON file of its fields."""
    if os.path.isfile(spec):
        with open(spec) as f:
            fields = json.load(f)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - names
        if unknown:
            raise ValueError(f"{spec}: unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**fields)
    return cls.preset(spec, **preset_kw)


def save_config(cfg, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)


def load_dvae(path: str, device: torch.device) -> DiscreteVAE:
    """A frozen DVAE from ``model.pth`` (its ``config.json`` beside it; else the released config)."""
    cfg_path = os.path.join(os.path.dirname(path), "config.json")
    cfg = load_config(DvaeConfig, cfg_path if os.path.exists(cfg_path) else "released")
    model = DiscreteVAE(cfg)
    model.load_state_dict(load_state_dict(path), strict=True)
    return model.to(device).eval().requires_grad_(False)


class _ShardTask:
    name = "task"
    title = "model"  # how the end-of-run lines name it

    def __init__(self, shards: List[str], eval_shards: Optional[List[str]], tokenize, loader: LoaderConfig,
                 mel_norms: Optional[torch.Tensor]):
        self.shards, self.eval_shards, self.tokenize, self.loader_cfg = shards, eval_shards, tokenize, loader
        self.mel_norms = mel_norms
        self._mel = None
        self.train_loader = None

    def mel(self, device) -> MelSpectrogram:
        if self._mel is None:
            self._mel = MelSpectrogram(self.mel_norms).to(device)
        return self._mel

    def train_batches(self, seed: int) -> Iterator[dict]:
        self.train_loader = ShardLoader(self.shards, self.tokenize,
                                        dataclasses.replace(self.loader_cfg, seed=seed, drop_last=True))
        if self.loader_cfg.num_workers > 0:  # shards are split across the workers (webdataset's split_by_worker)
            return iter(torch.utils.data.DataLoader(self.train_loader, batch_size=None,
                                                    num_workers=self.loader_cfg.num_workers))
        return iter(self.train_loader)

    def eval_batches(self) -> Optional[Iterator[dict]]:
        if not self.eval_shards:
            return None
        cfg = dataclasses.replace(self.loader_cfg, resampled=False, seed=12345, split_by_node=False)
        return iter(ShardLoader(self.eval_shards, self.tokenize, cfg, epochs=1))


class DvaeTask(_ShardTask):
    name = "dvae"
    title = "DVAE"

    def __init__(self, cfg: DvaeConfig, *args):
        super().__init__(*args)
        self.cfg = cfg

    def build_model(self):
        return DiscreteVAE(self.cfg)

    def loss(self, model, batch, device):
        recon, commitment, _ = model(self.mel(device)(batch["wav"].to(device)))
        return (recon + self.cfg.commitment_weight * commitment,
                {"recon": recon.item(), "commitment": commitment.item()})


class _CodesTask(_ShardTask):
    """A task that reads speech as codes from a frozen DVAE."""

    def __init__(self, cfg, dvae_path: str, *args):
        super().__init__(*args)
        self.cfg, self.dvae_path, self._dvae = cfg, dvae_path, None

    def codes(self, wav: torch.Tensor, device) -> torch.Tensor:
        if self._dvae is None:
            self._dvae = load_dvae(self.dvae_path, device)
        return self._dvae.get_codebook_indices(self.mel(device)(wav))


class ArTask(_CodesTask):
    name = "ar"
    title = "autoregressive model"

    def build_model(self):
        return UnifiedVoice(self.cfg)

    def loss(self, model, batch, device):
        wav, cond = batch["wav"].to(device), batch["cond"].to(device)
        loss_text, loss_mel = model(self.mel(device)(cond), batch["text"].to(device), batch["text_lengths"].to(device),
                                    self.codes(wav, device), batch["wav_lengths"].to(device))
        c = self.cfg
        return c.text_weight * loss_text + c.mel_weight * loss_mel, {"text_ce": loss_text.item(),
                                                                     "mel_ce": loss_mel.item()}


class ClvpTask(_CodesTask):
    name = "clvp"
    title = "CLVP"

    def build_model(self):
        return CLVP(self.cfg)

    def loss(self, model, batch, device):
        codes = self.codes(batch["wav"].to(device), device)
        text = torch.nn.functional.pad(batch["text"], (0, 1)).to(device)  # one stop token, as tortoise feeds it
        text_mask = torch.arange(text.shape[1], device=device)[None] < (batch["text_lengths"].to(device) + 1)[:, None]
        n_codes = (batch["wav_lengths"].to(device) + SAMPLES_PER_CODE - 1) // SAMPLES_PER_CODE
        speech_mask = torch.arange(codes.shape[1], device=device)[None] < n_codes[:, None]
        return model(text, text_mask, codes, speech_mask, return_loss=True), {}
