"""What each downstream stage trains on: its model, its batches, its loss (see ``tts.training.loop``).

Mels are computed inside the loss, on the training device, from the waveforms the loaders deliver.
The autoregressive model and CLVP read codes from a frozen DVAE: from a ``CodeCache`` when there is
one (each clip's codes computed once, kept beside its shard under a name that fingerprints the DVAE
and the mel norms, so another DVAE never reads stale codes), else computed in the loss every step.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from tts.frontends.mel import SAMPLES_PER_CODE, MelSpectrogram
from tts.models.autoregressive import UnifiedVoice
from tts.models.clvp import CLVP, TORTOISE_PADDING, training_loss
from tts.models.dvae import DiscreteVAE, DvaeConfig
from tts.training.data import LoaderConfig, Sample, ShardLoader, decode
from tts.training.loop import load_into


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
    load_into(model, path, "DVAE")
    return model.to(device).eval().requires_grad_(False)


def dvae_fingerprint(dvae_path: str, norms: Optional[torch.Tensor]) -> str:
    """What the codes depend on: the DVAE's weights and config, and the mel norms its input is divided by."""
    h = hashlib.sha256()
    cfg_path = os.path.join(os.path.dirname(dvae_path), "config.json")
    for path in (dvae_path, cfg_path):
        if os.path.exists(path):
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    if norms is not None:
        h.update(norms.float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class CodeCache:
    """Each clip's DVAE codes (its ``wav_length // 1024 + 1``), one file per shard: ``dvae_codes-FINGERPRINT/
    SHARD.pt`` in ``root`` or beside the shard, holding {key: codes}. ``build`` computes the missing files
    (under torchrun, each rank a share, then all wait); ``lookup`` reads them, a few shards at a time."""

    ZERO_TAIL = 8 * 1024  # silence after each clip while coding: its last codes do not depend on its batch

    def __init__(self, dvae_path: str, norms: Optional[torch.Tensor], root: Optional[str] = None,
                 batch_size: int = 8):
        self.dvae_path, self.norms, self.root, self.batch_size = dvae_path, norms, root, batch_size
        self.fingerprint = dvae_fingerprint(dvae_path, norms)
        self._open: "collections.OrderedDict[str, Dict[str, np.ndarray]]" = collections.OrderedDict()

    def path(self, url: str) -> str:
        name = os.path.basename(url) + ".pt"
        if self.root:  # one folder for shards from anywhere: the name says which shard
            name = hashlib.sha1(os.path.abspath(url).encode()).hexdigest()[:10] + "-" + name
        folder = self.root or os.path.dirname(os.path.abspath(url))
        return os.path.join(folder, f"dvae_codes-{self.fingerprint}", name)

    def build(self, urls: List[str], device: torch.device, log=None) -> int:
        """Code the shards whose file is missing; returns how many this process coded."""
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        missing = [u for u in urls if not os.path.exists(self.path(u))]
        mine = [u for i, u in enumerate(missing) if i % world == rank]
        if mine:
            dvae = load_dvae(self.dvae_path, device)
            mel = MelSpectrogram(self.norms).to(device)
            for n, url in enumerate(mine, 1):
                self._code_shard(url, dvae, mel, device)
                if log and (n == len(mine) or n % 50 == 0):
                    log(f"coded {n}/{len(mine)} shards with the DVAE: {os.path.dirname(self.path(url))}")
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
        return len(mine)

    @torch.no_grad()
    def _code_shard(self, url: str, dvae: DiscreteVAE, mel: MelSpectrogram, device: torch.device) -> None:
        import webdataset as wds
        samples: List[Sample] = []
        for raw in wds.WebDataset([url], shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False):
            try:
                samples.append(decode(raw))
            except Exception:  # the loaders skip (and count) what does not decode
                continue
        samples.sort(key=lambda x: len(x.audio))
        out: Dict[str, np.ndarray] = {}
        dtype = np.int16 if dvae.cfg.num_tokens <= np.iinfo(np.int16).max else np.int32
        for i in range(0, len(samples), self.batch_size):
            group = samples[i:i + self.batch_size]
            n = max(len(x.audio) for x in group) + self.ZERO_TAIL
            wav = torch.zeros(len(group), -(-n // SAMPLES_PER_CODE) * SAMPLES_PER_CODE)
            for j, x in enumerate(group):
                wav[j, : len(x.audio)] = torch.from_numpy(x.audio)
            codes = dvae.get_codebook_indices(mel(wav.to(device))).cpu().numpy()
            for j, x in enumerate(group):
                out[x.key] = codes[j, : len(x.audio) // SAMPLES_PER_CODE + 1].astype(dtype)
        path = self.path(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save({k: torch.from_numpy(v) for k, v in out.items()}, tmp)
        os.replace(tmp, path)

    def lookup(self, url: str, key: str) -> Optional[np.ndarray]:
        if url not in self._open:
            path = self.path(url)
            if not os.path.exists(path):
                return None
            self._open[url] = {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}
            while len(self._open) > 8:
                self._open.popitem(last=False)
        self._open.move_to_end(url)
        return self._open[url].get(key)

    __call__ = lookup


class _ShardTask:
    name = "task"
    title = "model"  # how the end-of-run lines name it

    def __init__(self, shards: List[str], eval_shards: Optional[List[str]], tokenize, loader: LoaderConfig,
                 mel_norms: Optional[torch.Tensor]):
        self.shards, self.eval_shards, self.tokenize, self.loader_cfg = shards, eval_shards, tokenize, loader
        self.mel_norms = mel_norms
        self._mel = None
        self.train_loader = None
        self.grad_checkpointing = False  # the models' transformer blocks recompute activations in the backward
        self.code_cache: Optional[CodeCache] = None  # batches carry their DVAE codes

    def mel(self, device) -> MelSpectrogram:
        if self._mel is None:
            self._mel = MelSpectrogram(self.mel_norms).to(device)
        return self._mel

    def train_batches(self, seed: int) -> Iterator[dict]:
        self.train_loader = ShardLoader(self.shards, self.tokenize,
                                        dataclasses.replace(self.loader_cfg, seed=seed, drop_last=True),
                                        codes=self.code_cache)
        if self.loader_cfg.num_workers > 0:  # shards are split across the workers (webdataset's split_by_worker)
            return iter(torch.utils.data.DataLoader(self.train_loader, batch_size=None,
                                                    num_workers=self.loader_cfg.num_workers))
        return iter(self.train_loader)

    def eval_batches(self) -> Optional[Iterator[dict]]:
        if not self.eval_shards:
            return None
        cfg = dataclasses.replace(self.loader_cfg, resampled=False, seed=12345, split_by_node=False)
        return iter(ShardLoader(self.eval_shards, self.tokenize, cfg, epochs=1, codes=self.code_cache))


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
                {"recon": recon.detach(), "commitment": commitment.detach()})

    def log_stats(self, model) -> dict:
        """Codebook usage for the progress line: a collapsing codebook shows here long before in the loss."""
        return model.codebook.usage()


class _CodesTask(_ShardTask):
    """A task that reads speech as codes from a frozen DVAE."""

    def __init__(self, cfg, dvae_path: str, *args):
        super().__init__(*args)
        self.cfg, self.dvae_path, self._dvae = cfg, dvae_path, None

    def codes(self, wav: torch.Tensor, device) -> torch.Tensor:
        if self._dvae is None:
            self._dvae = load_dvae(self.dvae_path, device)
        return self._dvae.get_codebook_indices(self.mel(device)(wav))

    def batch_codes(self, batch: dict, device) -> torch.Tensor:
        """The batch's codes: cached ones when the loader put them there, else the DVAE's on its audio."""
        if "codes" in batch:
            return batch["codes"].to(device)
        return self.codes(batch["wav"].to(device), device)

    def use_code_cache(self, root: Optional[str], device: torch.device, log=None) -> Optional[CodeCache]:
        """Code every training and eval shard once (``root`` None: beside the shards) and read codes from there;
        None, and codes computed every step, when the shards are remote and no ``root`` is given."""
        urls = self.shards + (self.eval_shards or [])
        if root is None and any("://" in u for u in urls):
            if log:
                log("remote shards: DVAE codes are computed every step (give --code_cache DIR to keep them)")
            return None
        cache = CodeCache(self.dvae_path, self.mel_norms, root)
        cache.build(urls, device, log)
        self.code_cache = cache
        return cache


class ArTask(_CodesTask):
    name = "ar"
    title = "autoregressive model"

    def build_model(self):
        model = UnifiedVoice(self.cfg)
        model.gpt.checkpointing = self.grad_checkpointing
        return model

    def loss(self, model, batch, device):
        cond = batch["cond"].to(device)
        loss_text, loss_mel = model(self.mel(device)(cond), batch["text"].to(device), batch["text_lengths"].to(device),
                                    self.batch_codes(batch, device), batch["wav_lengths"].to(device))
        c = self.cfg
        return c.text_weight * loss_text + c.mel_weight * loss_mel, {"text_ce": loss_text.detach(),
                                                                     "mel_ce": loss_mel.detach()}


class ClvpTask(_CodesTask):
    """CLVP on each clip's codes as the autoregressive model learns to emit them (``wav_length // 1024 + 1``
    codes), read both as tortoise-tts pads candidates for scoring (``padding``) and alone."""
    name = "clvp"
    title = "CLVP"
    padding = TORTOISE_PADDING

    def build_model(self):
        return CLVP(self.cfg).set_checkpointing(self.grad_checkpointing)

    def loss(self, model, batch, device):
        codes = self.batch_codes(batch, device)
        n_codes = (batch["wav_lengths"].to(device) // SAMPLES_PER_CODE + 1).clamp(max=codes.shape[1])
        return training_loss(model, batch["text"].to(device), batch["text_lengths"].to(device), codes, n_codes,
                             self.padding), {}
