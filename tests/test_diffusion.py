"""The diffusion decoder, its Gaussian diffusion process, the 24 kHz mel and the UnivNet vocoder (tiny, CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tts.frontends.vocoder_mel import VocoderMel, denormalize, frames_for_codes, normalize, resample
from tts.inference.ar_inference import _blocks, mel_latents, prefix_embeddings, sample_codes
from tts.models.autoregressive import ArConfig, UnifiedVoice
from tts.models.conv_attention import AttentionBlock, relative_bucket
from tts.models.diffusion import DiffusionConfig, DiffusionTts
from tts.models.gaussian_diffusion import GaussianDiffusion, spaced_steps
from tts.models.vocoder import UnivNetGenerator
from tts.training.loop import atomic_save, load_state_dict

DATA = Path(__file__).parent / "data"


def shapes_on_meta(build) -> dict:
    with torch.device("meta"):  # no memory, no initialisation cost: only names and shapes
        model = build()
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("build,table", [
    (lambda: DiffusionTts(DiffusionConfig.preset("released")), "diffusion_released_shapes.json"),
    (UnivNetGenerator, "univnet_released_shapes.json"),
])
def test_released_configs_have_the_reference_names_and_shapes(build, table):
    expected = json.loads((DATA / table).read_text())
    got = shapes_on_meta(build)
    assert sorted(got) == sorted(expected)
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def test_released_decoder_is_tortoises_size():
    n = sum(int(np.prod(s)) for s in json.loads((DATA / "diffusion_released_shapes.json").read_text()).values())
    assert n == 292_334_380  # tortoise-tts's diffusion_decoder.pth


def test_state_dict_round_trip(tmp_path):
    cfg = DiffusionConfig.preset("tiny", latent_dim=64, num_codes=256)
    a, b = DiffusionTts(cfg), DiffusionTts(cfg)
    atomic_save(a.state_dict(), str(tmp_path / "m.pth"))
    b.load_state_dict(load_state_dict(str(tmp_path / "m.pth")), strict=True)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_decoder_reads_latents_or_codes_and_conditioning_free():
    torch.manual_seed(0)
    cfg = DiffusionConfig.preset("tiny", latent_dim=48, num_codes=256)
    model = DiffusionTts(cfg).eval()
    torch.nn.init.normal_(model.out[-1].weight, std=0.02)  # the output conv starts at zero
    x, t = torch.randn(2, 100, 90), torch.tensor([5, 3000])
    cond = model.get_conditioning(torch.randn(2, 2, 100, 200))  # two clips each, averaged
    assert cond.shape == (2, 2 * cfg.model_channels)
    from_latents = model(x, t, torch.randn(2, 20, 48), cond)
    from_codes = model(x, t, torch.randint(0, 257, (2, 20)), cond)
    free = model(x, t, conditioning_free=True)
    assert from_latents.shape == from_codes.shape == free.shape == (2, 200, 90)
    assert not torch.allclose(from_latents, free) and not torch.allclose(from_codes, free)
    pre = model.timestep_independent(torch.randn(2, 20, 48), cond, 90, False)
    assert pre.shape == (2, cfg.model_channels, 90)


def test_relative_position_buckets():
    rel = torch.tensor([0, 1, -1, 7, 8, -8, 63, 64, 1000, -1000])
    # exact up to 8 steps each way (the other direction offset by 16), then logarithmic, capped at the last bucket
    assert relative_bucket(rel).tolist() == [0, 17, 1, 23, 24, 8, 31, 31, 31, 15]


def test_attention_block_starts_as_identity_and_uses_its_bias():
    block = AttentionBlock(32, 4, relative=True)
    x = torch.randn(2, 32, 50)
    assert torch.equal(block(x), x)  # zero-initialised output projection
    torch.nn.init.normal_(block.proj_out.weight)
    before = block(x)
    torch.nn.init.normal_(block.relative_pos_embeddings.relative_attention_bias.weight, std=3.0)
    assert not torch.allclose(before, block(x))


def test_spaced_steps_and_respaced_schedule():
    assert spaced_steps(4000, 1) == [0] and spaced_steps(10, 10) == list(range(10))
    steps = spaced_steps(4000, 30)
    assert len(steps) == 30 and steps[0] == 0 and steps[-1] == 3999
    full = GaussianDiffusion.linear(4000)
    short = full.respaced(30)
    # the same noise levels at the kept steps: only the betas between them change
    np.testing.assert_allclose(short._np["alphas_cumprod"], full._np["alphas_cumprod"][steps], rtol=1e-10)
    assert short.model_steps(torch.tensor([0, 29])).tolist() == [0, 3999]
    with pytest.raises(ValueError, match="sampling steps"):
        full.respaced(5000)


def test_losses_vanish_for_the_true_noise_and_posterior_variance():
    process = GaussianDiffusion.linear(4000)
    x0 = torch.rand(3, 100, 20) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([10, 1000, 3999])
    xt = process.q_sample(x0, t, noise)
    perfect = torch.cat([noise, -torch.ones_like(noise)], 1)  # -1: the posterior variance
    terms = process.training_losses(perfect, x0, xt, t, noise)
    assert terms["mse"].abs().max() < 1e-10 and terms["vb"].abs().max() < 1e-3
    wrong = process.training_losses(torch.cat([noise, torch.ones_like(noise)], 1), x0, xt, t, noise)
    assert (wrong["vb"][:2] > terms["vb"][:2] + 1e-7).all()  # beta instead of the posterior variance costs bits
    at_zero = process.training_losses(perfect, x0, process.q_sample(x0, torch.zeros(3, dtype=torch.long), noise),
                                      torch.zeros(3, dtype=torch.long), noise)
    assert (at_zero["vb"] > 0).all()  # the decoder's negative log-likelihood at step 0


@pytest.mark.parametrize("sampler", ["p", "ddim"])
def test_samplers_land_on_the_data_with_a_perfect_denoiser(sampler):
    process = GaussianDiffusion.linear(4000)
    short = process.respaced(25)
    x0 = torch.rand(2, 100, 16) * 1.6 - 0.8
    ac = torch.from_numpy(process._np["alphas_cumprod"]).float()

    def perfect(x, steps):  # the noise that turns x0 into x at each original step
        a = ac[steps].view(-1, 1, 1)
        return torch.cat([(x - a.sqrt() * x0) / (1 - a).sqrt(), -torch.ones_like(x)], 1)

    out = short.sample(perfect, torch.randn(2, 100, 16, generator=torch.Generator().manual_seed(0)), sampler=sampler,
                       generator=torch.Generator().manual_seed(1))
    assert (out - x0).abs().max() < 1e-3


def test_guidance_blends_conditioned_and_unconditioned_noise():
    short = GaussianDiffusion.linear(4000).respaced(1)  # one step: k = cond_free_k · (1 − 0 / 1)
    x = torch.randn(1, 100, 8)
    cond = lambda x, s: torch.cat([torch.full_like(x, 0.5), -torch.ones_like(x)], 1)
    uncond = lambda x, s: torch.cat([torch.full_like(x, 0.1), -torch.ones_like(x)], 1)
    plain = short.sample(cond, x.clone(), clip=False)
    guided = short.sample(cond, x.clone(), uncond_fn=uncond, cond_free_k=2.0, clip=False)
    blended = short.sample(lambda x, s: torch.cat([torch.full_like(x, 3 * 0.5 - 2 * 0.1), -torch.ones_like(x)], 1),
                           x.clone(), clip=False)
    assert torch.allclose(guided, blended, atol=1e-6) and not torch.allclose(guided, plain)


def test_resampling_and_the_24k_mel_match_librosa():
    import librosa
    t = np.arange(22050) / 22050
    sine = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32)
    ours = resample(torch.from_numpy(sine)[None], 22050, 24000)[0].numpy()
    ref = librosa.resample(sine, orig_sr=22050, target_sr=24000, res_type="soxr_vhq")
    assert len(ours) == 24000 and np.abs(ours[300:-300] - ref[300:24000 - 300]).max() < 2e-3
    noise = (np.random.default_rng(0).standard_normal(24000) * 0.1).astype(np.float32)
    mel = VocoderMel()(torch.from_numpy(noise)[None])[0].numpy()
    ref = librosa.feature.melspectrogram(y=noise, sr=24000, n_fft=1024, hop_length=256, power=1.0, n_mels=100,
                                         fmin=0, fmax=12000, pad_mode="reflect")
    assert mel.shape == (100, 24000 // 256 + 1)
    np.testing.assert_allclose(mel, np.log(np.clip(ref, 1e-5, None)), atol=1e-4)
    m = torch.linspace(-11.5, 2.3, 50)
    assert torch.allclose(denormalize(normalize(m)), m, atol=1e-5) and normalize(m).abs().max() <= 1.0
    assert frames_for_codes(100) == 435  # tortoise-tts: codes × 4 × 24000 // 22050


def test_cached_sampling_sees_what_the_full_forward_sees():
    torch.manual_seed(0)
    model = UnifiedVoice(ArConfig.preset("tiny", num_codes=256)).eval()
    cond, text, codes = torch.randn(1, 64), torch.randint(3, 200, (1, 7)), torch.randint(0, 256, (1, 12))
    full = mel_latents(model, cond, text, codes)
    pos = model.mel_pos_embedding.emb.weight
    seq = torch.cat([torch.tensor([[model.cfg.start_mel_token]]), codes], 1)
    with torch.no_grad():
        h, cache = _blocks(model, torch.cat([prefix_embeddings(model, cond, text), model.mel_embedding(seq[:, :1]) + pos[0]], 1),
                           None)
        stepped = [model.final_norm(h[:, -1])]
        for i in range(1, 12):
            h, cache = _blocks(model, model.mel_embedding(seq[:, i:i + 1]) + pos[i], cache)
            stepped.append(model.final_norm(h[:, -1]))
    assert full.shape == (1, 12, 64) and (torch.stack(stepped, 1) - full).abs().max() < 1e-4
    seqs, logprob = sample_codes(model, cond, text, 3, max_codes=15, min_codes=4, generator=torch.Generator().manual_seed(0))
    assert len(seqs) == 3 and all(4 <= len(s) <= 15 and int(s.max()) < 256 for s in seqs)
    assert (logprob < 0).all()


def test_vocoder_upsamples_256_samples_per_frame():
    torch.manual_seed(0)
    voc = UnivNetGenerator(channels=8).eval()
    audio = voc.inference(torch.randn(1, 100, 6) - 5)
    assert audio.shape == (1, 1, 6 * 256) and audio.abs().max() <= 1
