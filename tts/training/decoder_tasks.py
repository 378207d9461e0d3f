"""What the diffusion decoder and CVVP train on (see ``tts.training.loop`` and ``tts.training.tasks``).

The diffusion decoder learns to denoise the 24 kHz, 100-bin mel of each clip (normalised to
[-1, 1]) given the frozen autoregressive model's latents for the clip's own DVAE codes, its text
and a conditioning clip of the same voice — the latents the autoregressive model gives at synthesis
time, when it reads the codes it sampled. The diffusion loss (``tts.models.gaussian_diffusion``) is
joined by ``code_pred_weight`` × the MSE of the decoder's direct guess from its conditioning.

CVVP learns to match a conditioning clip's mel with the DVAE codes of another clip of that voice;
conditioning clips shorter than the loader's 6 s are repeated to fill it rather than padded with
silence (CVVP averages over time).
Everything derived (mels, codes, latents, resampling to 24 kHz) is computed inside the loss on the
training device, from the waveforms the loaders deliver.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tts.frontends.mel import SAMPLE_RATE as CORPUS_RATE
from tts.frontends.mel import SAMPLES_PER_CODE
from tts.frontends.vocoder_mel import COND_SAMPLES, SAMPLE_RATE, VocoderMel, frames_for_codes, normalize, resample
from tts.inference.ar_inference import mel_latents
from tts.models.cvvp import CVVP
from tts.models.diffusion import DiffusionTts
from tts.models.gaussian_diffusion import GaussianDiffusion
from tts.training.frozen import load_frozen
from tts.training.tasks import _CodesTask


def fit(x: torch.Tensor, n: int, value: float = 0.0) -> torch.Tensor:
    """Cut or pad the last axis to ``n``."""
    return x[..., :n] if x.shape[-1] >= n else F.pad(x, (0, n - x.shape[-1]), value=value)


class DiffusionTask(_CodesTask):
    name = "diffusion"
    title = "diffusion decoder"

    def __init__(self, cfg, dvae_path: str, ar_path: str, *args):
        super().__init__(cfg, dvae_path, *args)
        self.ar_path, self._ar, self._vmel = ar_path, None, None
        self.process = GaussianDiffusion.linear(cfg.diffusion_steps)

    def build_model(self):
        return DiffusionTts(self.cfg)

    def autoregressive(self, device):
        if self._ar is None:
            self._ar = load_frozen("autoregressive", self.ar_path, device)
        return self._ar

    def vocoder_mel(self, device) -> VocoderMel:
        if self._vmel is None:
            self._vmel = VocoderMel().to(device)
        return self._vmel

    def inputs(self, batch: dict, device) -> dict:
        """Target mels, aligned latents and conditioning mels for a batch (no gradients)."""
        wav, cond = batch["wav"].to(device), batch["cond"].to(device)
        n_codes = wav.shape[1] // SAMPLES_PER_CODE
        vmel = self.vocoder_mel(device)
        with torch.no_grad():
            with torch.autocast(device.type, enabled=False):  # audio features in float32, whatever the loop's autocast
                ar_cond = self.mel(device)(cond)
                codes = self.codes(wav, device)[:, :n_codes]
                target = fit(normalize(vmel(resample(wav, CORPUS_RATE, SAMPLE_RATE))), frames_for_codes(n_codes), -1.0)
                cond_mel = vmel(fit(resample(cond, CORPUS_RATE, SAMPLE_RATE), COND_SAMPLES))
            ar = self.autoregressive(device)
            text = batch["text"][:, : int(batch["text_lengths"].max())].to(device)
            latents = mel_latents(ar, ar.conditioning_latent(ar_cond), text, codes).float()
        return {"target": target, "latents": latents, "cond_mel": cond_mel}

    def loss(self, model, batch, device):
        x = self.inputs(batch, device)
        target = x["target"]
        b, steps = target.shape[0], self.process.num_timesteps
        if model.training:
            t = torch.randint(0, steps, (b,), device=device)
            noise = torch.randn_like(target)
        else:  # the eval loss: steps spread evenly and fixed noise, so that evaluations compare
            t = ((torch.arange(b, device=device) + 0.5) * steps / b).long()
            noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0)).to(device)
        xt = self.process.q_sample(target, t, noise)
        out, guess = model(xt, t, aligned_conditioning=x["latents"], conditioning_input=x["cond_mel"],
                           return_code_pred=True)
        terms = self.process.training_losses(out, target, xt, t, noise)
        mse, vb = terms["mse"].mean(), terms["vb"].mean()
        guess_mse = F.mse_loss(guess.float(), target)
        return mse + vb + self.cfg.code_pred_weight * guess_mse, {"mse": mse.item(), "vb": vb.item(),
                                                                  "guess_mse": guess_mse.item()}


def tile_padding(wav: torch.Tensor) -> torch.Tensor:
    """Repeat each row's audio over its zero padding (a clip shorter than the conditioning length is
    padded with exact zeros): CVVP averages over time, and seconds of silence would drown the voice."""
    out = wav.clone()
    nonzero = wav != 0
    ends = torch.where(nonzero.any(1), wav.shape[1] - nonzero.flip(1).int().argmax(1), torch.zeros_like(nonzero[:, 0], dtype=torch.long))
    for i, end in enumerate(ends.tolist()):
        if 0 < end < wav.shape[1]:
            out[i] = wav[i, :end].repeat(-(-wav.shape[1] // end))[: wav.shape[1]]
    return out


class CvvpTask(_CodesTask):
    name = "cvvp"
    title = "CVVP"

    def build_model(self):
        return CVVP(self.cfg)

    def loss(self, model, batch, device):
        wav = batch["wav"].to(device)
        codes = self.codes(wav, device)[:, : wav.shape[1] // SAMPLES_PER_CODE]
        speakers = batch["speakers"]
        same = torch.tensor([[a == b for b in speakers] for a in speakers], device=device)
        cond = self.mel(device)(tile_padding(batch["cond"].to(device)))
        return model(cond, codes, return_loss=True, same_voice=same), {}
