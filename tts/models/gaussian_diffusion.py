"""The Gaussian diffusion process TorToiSe's decoder is trained and sampled with ("improved DDPM").

Training: the schedule tortoise-tts samples its decoder with — linear betas over 4000 steps
(1e-4 → 0.02, rescaled for the length); the model predicts the noise (``epsilon``) and, in its
second half of channels, where the variance lies between the posterior variance and beta
(``learned_range``) — with a uniformly drawn step per sample and the loss DL-Art-School's
``GaussianDiffusion`` computes for that setting. Loss per sample = MSE on the noise + the
variational bound term (KL between the true and predicted posteriors, in bits; the decoder's
discretised log-likelihood at step 0), computed with the mean frozen so that it only trains the
variance.

Sampling uses a respaced schedule of ``steps`` evenly spread steps, either ancestral sampling with
the learned variance (what tortoise-tts does) or deterministic DDIM, and optionally
classifier-free guidance: ``(1 + k) · conditioned − k · unconditioned`` noise, with k ramping down
to 0 over the run as tortoise-tts does.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import numpy as np
import torch


def linear_betas(steps: int) -> np.ndarray:
    scale = 1000 / steps
    return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)


def spaced_steps(total: int, count: int) -> list:
    """``count`` steps of a ``total``-step schedule, evenly spread and including the first and last."""
    if not 1 <= count <= total:
        raise ValueError(f"cannot take {count} sampling steps from a {total}-step schedule")
    if count == 1:
        return [0]
    stride = (total - 1) / (count - 1)
    return sorted({round(i * stride) for i in range(count)})


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-probability of ``x`` (in [-1, 1], 256 bins) under a Gaussian, the outer bins open-ended."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=list(range(1, t.dim())))


class GaussianDiffusion:
    """One schedule (the full one, or a respaced one for sampling); arrays indexed by step."""

    def __init__(self, betas: np.ndarray, timestep_map: Optional[list] = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.num_timesteps = len(betas)
        self.timestep_map = list(timestep_map) if timestep_map is not None else list(range(len(betas)))
        alphas_cumprod = np.cumprod(1.0 - betas)
        prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
        self._np = {
            "betas": betas,
            "log_betas": np.log(betas),
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
            # the posterior variance is 0 at step 0: its log takes step 1's value there
            "posterior_log_variance_clipped": np.log(np.append(posterior_variance[1], posterior_variance[1:]))
            if len(betas) > 1 else np.log(np.maximum(posterior_variance, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
        }
        self._cache: Dict[tuple, torch.Tensor] = {}

    @classmethod
    def linear(cls, steps: int = 4000) -> "GaussianDiffusion":
        return cls(linear_betas(steps))

    def respaced(self, count: int) -> "GaussianDiffusion":
        """A ``count``-step schedule through the same noise levels (the model still sees the original steps)."""
        keep = spaced_steps(self.num_timesteps, count)
        betas, last = [], 1.0
        for i, ac in enumerate(self._np["alphas_cumprod"]):
            if i in keep:
                betas.append(1 - ac / last)
                last = ac
        return GaussianDiffusion(np.array(betas), [self.timestep_map[i] for i in keep])

    def _get(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        key = (name, t.device)
        if key not in self._cache:
            self._cache[key] = torch.from_numpy(self._np[name]).float().to(t.device)
        return self._cache[key][t].view(-1, *([1] * (x.dim() - 1)))

    def model_steps(self, t: torch.Tensor) -> torch.Tensor:
        """The original-schedule step numbers the model is conditioned on."""
        return torch.tensor(self.timestep_map, device=t.device)[t]

    # --- the forward process and its posterior
    def q_sample(self, x0, t, noise):
        return self._get("sqrt_alphas_cumprod", t, x0) * x0 + self._get("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior(self, x0, xt, t):
        mean = self._get("posterior_mean_coef1", t, xt) * x0 + self._get("posterior_mean_coef2", t, xt) * xt
        return mean, self._get("posterior_log_variance_clipped", t, xt)

    def predict_x0(self, xt, t, eps):
        return self._get("sqrt_recip_alphas_cumprod", t, xt) * xt - self._get("sqrt_recipm1_alphas_cumprod", t, xt) * eps

    def p_mean_variance(self, eps, var_values, xt, t, clip: bool):
        """Mean and log-variance of p(x_{t-1} | x_t) and the implied x_0, from the model's two halves."""
        min_log = self._get("posterior_log_variance_clipped", t, xt)
        max_log = self._get("log_betas", t, xt)
        frac = (var_values + 1) / 2  # −1 … 1 ↦ the posterior variance … beta
        log_variance = frac * max_log + (1 - frac) * min_log
        x0 = self.predict_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, log_variance, x0

    # --- training
    def training_losses(self, model_output: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-sample ``mse`` (noise) and ``vb`` (variance, through a frozen mean) for the model's output at (xt, t)."""
        eps, var_values = model_output.float().chunk(2, dim=1)
        mse = _mean_flat((noise - eps) ** 2)
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        mean, log_var, _ = self.p_mean_variance(eps.detach(), var_values, xt, t, clip=False)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / math.log(2.0)
        return {"mse": mse, "vb": torch.where(t == 0, nll, kl)}

    # --- sampling
    @torch.no_grad()
    def sample(self, model_fn: Callable, noise: torch.Tensor, uncond_fn: Optional[Callable] = None,
               cond_free_k: float = 0.0, sampler: str = "p", clip: bool = True,
               generator: Optional[torch.Generator] = None, progress: Optional[Callable[[int, int], None]] = None):
        """Run the reverse process from ``noise``. ``model_fn(x, steps)`` returns the model's output for
        original-schedule ``steps``; ``uncond_fn`` the same without conditioning (for guidance)."""
        if sampler not in ("p", "ddim"):
            raise ValueError(f"unknown sampler {sampler!r} (p, ddim)")
        x = noise
        n = self.num_timesteps
        for i in reversed(range(n)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            steps = self.model_steps(t)
            eps, var_values = model_fn(x, steps).float().chunk(2, dim=1)
            if uncond_fn is not None and cond_free_k:
                k = cond_free_k * (1 - i / n)
                eps_u, _ = uncond_fn(x, steps).float().chunk(2, dim=1)
                eps = (1 + k) * eps - k * eps_u
            mean, log_var, x0 = self.p_mean_variance(eps, var_values, x, t, clip)
            if sampler == "p":
                if i > 0:
                    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                    x = mean + torch.exp(0.5 * log_var) * z
                else:
                    x = mean
            else:  # DDIM, eta = 0: step deterministically along the predicted noise
                eps = (self._get("sqrt_recip_alphas_cumprod", t, x) * x - x0) / self._get("sqrt_recipm1_alphas_cumprod", t, x)
                prev = self._get("alphas_cumprod_prev", t, x)
                x = x0 * prev.sqrt() + (1 - prev).sqrt() * eps
            if progress is not None:
                progress(n - i, n)
        return x
