"""The discrete VAE that turns mels into codes: one code per 4 mel frames (1024 samples).

Same parameter names and shapes as the ``DiscreteVAE`` that TorToiSe's released ``dvae.pth`` was
saved from: two stride-2 convolutions and residual blocks down to a ``codebook_dim`` vector per
code, a vector-quantising codebook updated by exponential moving average (buffers, no gradients),
and a decoder of residual blocks and nearest-neighbour ×2 upsampling convolutions back to 80 bins.
The loss is mean squared reconstruction error plus ``commitment_weight`` × the commitment loss.

A codebook trained this way collapses onto a few codes unless unused ones come back: a code no
encoder output has picked for ``dead_code_steps`` steps is moved onto a recent encoder output
(the step counter is a buffer outside the state dict, so checkpoints keep the released layout).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DvaeConfig:
    channels: int = 80
    num_tokens: int = 8192
    codebook_dim: int = 512
    hidden_dim: int = 512
    num_layers: int = 2
    num_resnet_blocks: int = 3
    kernel_size: int = 3
    commitment_weight: float = 0.25
    ema_decay: float = 0.99
    dead_code_steps: int = 20  # revive a code after this many training steps unused (0: never)

    @classmethod
    def preset(cls, name: str) -> "DvaeConfig":
        if name == "released":
            return cls()
        if name == "tiny":
            return cls(num_tokens=256, codebook_dim=32, hidden_dim=32, num_resnet_blocks=1)
        raise ValueError(f"unknown DVAE config {name!r} (tiny, released)")


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(ch, ch, k, padding=k // 2), nn.ReLU(),
                                 nn.Conv1d(ch, ch, k, padding=k // 2), nn.ReLU(), nn.Conv1d(ch, ch, 1))

    def forward(self, x):
        return self.net(x) + x


class UpsampledConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, padding=k // 2)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Quantize(nn.Module):
    """Nearest-code vector quantiser with an EMA codebook laid out [dim, n_codes]."""

    def __init__(self, dim: int, n_embed: int, decay: float = 0.99, eps: float = 1e-5, dead_code_steps: int = 20):
        super().__init__()
        self.decay, self.eps, self.dead_code_steps = decay, eps, dead_code_steps
        embed = torch.randn(dim, n_embed)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_avg", embed.clone())
        # training steps since each code was last picked; not in the state dict (the released layout has none)
        self.register_buffer("unused_steps", torch.zeros(n_embed, dtype=torch.long), persistent=False)
        self.register_buffer("last_counts", torch.zeros(n_embed), persistent=False)  # picks in the last batch

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, T, dim] → code ids [B, T]."""
        flat = z.reshape(-1, z.shape[-1]).float()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed + self.embed.pow(2).sum(0, keepdim=True)
        return dist.argmin(1).view(z.shape[:-1])

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embed.t())

    @torch.no_grad()
    def _restart(self, flat: torch.Tensor) -> None:
        """Point unused codes at encoder outputs from this batch: a fresh codebook (nothing counted
        yet) is set from the data, and codes unpicked for ``dead_code_steps`` steps (or whose counts
        have decayed to nothing) are revived, so the codebook does not collapse onto a few entries."""
        n = self.embed.shape[1]
        if flat.shape[0] == 0:
            return
        dead = (self.cluster_size < 1e-3) | (self.cluster_size.sum() == 0)  # the latter: a fresh codebook
        if self.dead_code_steps > 0:
            dead |= self.unused_steps >= self.dead_code_steps
        # computed for every code and kept where dead: no host-device sync in the training step
        picks = flat[torch.randint(0, flat.shape[0], (n,), device=flat.device)]
        picks = (picks + 1e-3 * picks.std() * torch.randn_like(picks)).t()
        self.embed.copy_(torch.where(dead[None], picks, self.embed))
        self.embed_avg.copy_(torch.where(dead[None], picks, self.embed_avg))
        self.cluster_size.masked_fill_(dead, 1.0)
        self.unused_steps.masked_fill_(dead, 0)

    @torch.no_grad()
    def usage(self) -> dict:
        """How many codes the last training batch picked, and the perplexity of the codebook's running
        usage counts (the number of equally used codes that would have the same entropy)."""
        p = self.cluster_size.float() / self.cluster_size.sum().clamp(min=1e-12)
        perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
        return {"codes_used": int((self.last_counts > 0).sum()), "code_perplexity": round(float(perplexity), 2)}

    def forward(self, z: torch.Tensor):
        if self.training:
            self._restart(z.reshape(-1, z.shape[-1]).detach().to(self.embed.dtype))
        ids = self.codes(z)
        q = self.lookup(ids).to(z.dtype)
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(ids.reshape(-1), self.embed.shape[1]).to(self.embed.dtype)
                flat = z.reshape(-1, z.shape[-1]).to(self.embed.dtype)
                counts, sums = onehot.sum(0), flat.t() @ onehot
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(counts)
                    torch.distributed.all_reduce(sums)
                self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
                self.last_counts.copy_(counts)
                self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
                n = self.cluster_size.sum()
                size = (self.cluster_size + self.eps) / (n + self.embed.shape[1] * self.eps) * n
                self.embed.copy_(self.embed_avg / size.unsqueeze(0))
        commitment = (q.detach() - z).pow(2).mean()
        return z + (q - z).detach(), commitment, ids


class DiscreteVAE(nn.Module):
    def __init__(self, cfg: DvaeConfig = DvaeConfig()):
        super().__init__()
        self.cfg = cfg
        k = cfg.kernel_size
        enc = [cfg.channels] + [cfg.hidden_dim * 2 ** i for i in range(cfg.num_layers)]
        dec = list(reversed(enc[1:]))
        dec = [dec[0]] + dec
        layers = [nn.Sequential(nn.Conv1d(a, b, k, stride=2, padding=k // 2), nn.ReLU()) for a, b in zip(enc, enc[1:])]
        layers += [ResBlock(enc[-1], k) for _ in range(cfg.num_resnet_blocks)]
        layers.append(nn.Conv1d(enc[-1], cfg.codebook_dim, 1))
        self.encoder = nn.Sequential(*layers)
        layers = [nn.Conv1d(cfg.codebook_dim, dec[0], 1)]
        layers += [ResBlock(dec[0], k) for _ in range(cfg.num_resnet_blocks)]
        layers += [nn.Sequential(UpsampledConv(a, b, k), nn.ReLU()) for a, b in zip(dec, dec[1:])]
        layers.append(nn.Conv1d(dec[-1], cfg.channels, 1))
        self.decoder = nn.Sequential(*layers)
        self.codebook = Quantize(cfg.codebook_dim, cfg.num_tokens, cfg.ema_decay, dead_code_steps=cfg.dead_code_steps)

    @property
    def frames_per_code(self) -> int:
        return 2 ** self.cfg.num_layers

    @torch.no_grad()
    def get_codebook_indices(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised mel [B, 80, T] → codes [B, ceil(T / 4)]."""
        z = self.encoder(mel).permute(0, 2, 1)
        return self.codebook.codes(z)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.codebook.lookup(ids).permute(0, 2, 1))

    def forward(self, mel: torch.Tensor):
        """(reconstruction MSE, commitment loss, reconstruction) for a normalised mel [B, 80, T]."""
        t = mel.shape[-1]
        pad = (-t) % self.frames_per_code
        x = F.pad(mel, (0, pad)) if pad else mel
        z = self.encoder(x).permute(0, 2, 1)
        q, commitment, _ = self.codebook(z)
        out = self.decoder(q.permute(0, 2, 1))[..., :t]
        return F.mse_loss(out, mel), commitment, out
