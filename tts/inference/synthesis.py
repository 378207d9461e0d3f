"""Text to speech with a trained stack, as tortoise-tts runs it, for listening to what was trained.

1. The text is cleaned and tokenised as in training; the voice clips give the autoregressive
   model's conditioning latent (80-bin mels, 6 s each) and the decoder's (24 kHz mels, 4.3 s each).
2. The autoregressive model samples several code sequences. Each is "fixed" as tortoise-tts does:
   the stop token and everything after it become the DVAE's code for silence ("calm" code, found by
   encoding a silent clip).
3. CLVP, when given, ranks them by how well they match the text; otherwise the autoregressive
   model's own mean log-probability ranks them.
4. For the best, the autoregressive model's latents are computed, cut where more than 8 calm codes
   in a row begin, and the diffusion decoder turns them into a 24 kHz, 100-bin mel in
   ``diffusion_steps`` respaced steps, with classifier-free guidance.
5. The UnivNet vocoder, when given, turns the mel into audio; otherwise Griffin-Lim does (buzzy
   but intelligible when the models are).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tts.frontends.mel import SAMPLE_RATE as CORPUS_RATE
from tts.frontends.mel import MelSpectrogram, load_mel_norms
from tts.frontends.text import UNK, TextTokenizer, clean_text
from tts.frontends.vocoder_mel import (
    COND_SAMPLES,
    SAMPLE_RATE,
    VocoderMel,
    denormalize,
    frames_for_codes,
    mel_to_audio,
    resample,
)
from tts.inference.ar_inference import mel_latents, sample_codes
from tts.models.gaussian_diffusion import GaussianDiffusion
from tts.training.data import crop_or_pad
from tts.training.frozen import load_frozen, load_vocoder
from tts.training.tasks import load_dvae

AR_COND_SAMPLES = 132300  # 6 s at 22 050 Hz, as the autoregressive model is trained
CALM_RUN = 8  # tortoise-tts keeps up to 8 calm codes after the speech: room for the decoder to end it


@dataclass(frozen=True)
class SynthesisConfig:
    candidates: int = 4
    keep: int = 1
    max_codes: int = 500
    min_codes: int = 1
    temperature: float = 0.8
    top_p: float = 0.8
    repetition_penalty: float = 2.0
    diffusion_steps: int = 30
    sampler: str = "p"
    cond_free_k: float = 2.0
    seed: int = 0
    griffin_lim_iters: int = 32

    def validate(self) -> "SynthesisConfig":
        if not 1 <= self.keep <= self.candidates:
            raise ValueError(f"--keep must be between 1 and --candidates ({self.candidates})")
        if self.max_codes < max(1, self.min_codes):
            raise ValueError("--max_codes must be at least 1 and at least --min_codes")
        if self.diffusion_steps < 1 or self.diffusion_steps > 4000:
            raise ValueError("--diffusion_steps must be between 1 and the 4000 trained steps")
        if self.sampler not in ("p", "ddim"):
            raise ValueError(f"--sampler must be p or ddim, not {self.sampler!r}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise ValueError("need --temperature > 0, 0 < --top_p <= 1 and --repetition_penalty > 0")
        return self


@dataclass
class Stack:
    ar: torch.nn.Module
    diffusion: torch.nn.Module
    dvae: torch.nn.Module
    tokenizer: TextTokenizer
    mel: MelSpectrogram
    device: torch.device
    clvp: Optional[torch.nn.Module] = None
    vocoder: Optional[torch.nn.Module] = None


@dataclass
class Sample:
    audio: np.ndarray  # float32 mono at 24 kHz
    mel: torch.Tensor  # [100, T] log-mel
    codes: torch.Tensor
    score: float


def load_stack(ar: str, diffusion: str, dvae: str, tokenizer: str, mel_norms: str, clvp: Optional[str] = None,
               vocoder: Optional[str] = None, device: str = "auto") -> Stack:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
    stack = Stack(ar=load_frozen("autoregressive", ar, dev), diffusion=load_frozen("diffusion", diffusion, dev),
                  dvae=load_dvae(dvae, dev), tokenizer=TextTokenizer(tokenizer),
                  mel=MelSpectrogram(load_mel_norms(mel_norms)).to(dev), device=dev,
                  clvp=load_frozen("clvp", clvp, dev) if clvp else None,
                  vocoder=load_vocoder(vocoder, dev) if vocoder else None)
    n_codes = stack.dvae.cfg.num_tokens
    if stack.ar.cfg.number_mel_codes != n_codes + 2:
        raise ValueError(f"the autoregressive model expects {stack.ar.cfg.number_mel_codes - 2} codes, the DVAE has {n_codes}")
    if stack.diffusion.cfg.in_latent_channels != stack.ar.cfg.model_dim:
        raise ValueError(f"the decoder reads {stack.diffusion.cfg.in_latent_channels}-wide latents, the autoregressive "
                         f"model gives {stack.ar.cfg.model_dim}")
    if stack.clvp is not None and stack.clvp.cfg.num_speech_tokens != n_codes:
        raise ValueError(f"CLVP reads {stack.clvp.cfg.num_speech_tokens} codes, the DVAE has {n_codes}")
    return stack


def read_voice(path: str) -> np.ndarray:
    """A voice clip as float32 mono at 22 050 Hz."""
    import librosa
    import soundfile as sf
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # any unreadable file is the user's input error
        raise ValueError(f"cannot read voice clip {path}: {e}") from None
    audio = audio.mean(1)
    if sr != CORPUS_RATE:
        audio = librosa.resample(audio, orig_sr=sr, target_sr=CORPUS_RATE)
    if not len(audio):
        raise ValueError(f"voice clip {path} is empty")
    return np.clip(audio, -1, 1).astype(np.float32)


@torch.no_grad()
def conditioning(stack: Stack, clips: Sequence[np.ndarray]):
    """(autoregressive latent [1, d], decoder latent [1, 2 × channels]) from voice clips at 22 050 Hz;
    with none, a silent clip (the models then choose a voice)."""
    clips = list(clips) or [np.zeros(AR_COND_SAMPLES, np.float32)]
    wav = torch.stack([torch.from_numpy(crop_or_pad(c, AR_COND_SAMPLES)) for c in clips]).to(stack.device)
    ar_latent = stack.ar.conditioning_latent(stack.mel(wav).unsqueeze(0))
    vmel = VocoderMel().to(stack.device)
    wav24 = [resample(torch.from_numpy(c).to(stack.device), CORPUS_RATE, SAMPLE_RATE) for c in clips]
    mels = torch.stack([vmel(F.pad(w, (0, max(0, COND_SAMPLES - len(w))))[None, :COND_SAMPLES])[0] for w in wav24])
    return ar_latent, stack.diffusion.get_conditioning(mels.unsqueeze(0))


@torch.no_grad()
def calm_code(stack: Stack) -> int:
    """The DVAE's code for silence: the most frequent code of a silent second."""
    codes = stack.dvae.get_codebook_indices(stack.mel(torch.zeros(1, CORPUS_RATE, device=stack.device)))
    return int(codes.flatten().mode().values)


def check_text(tokenizer: TextTokenizer, text: str, found: str = "") -> List[int]:
    """The text's token ids; a ``ValueError`` that names the characters the tokenizer lacks and the
    tokenizer's file (``found`` says how it was found), instead of speech with them dropped."""
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError("the text is empty after cleaning")
    lacking = tokenizer.lacking(text)
    if lacking or UNK in ids:
        what = ", ".join(lacking) if lacking else f"some characters of {clean_text(text)!r} (as cleaned)"
        raise ValueError(f"the tokenizer {tokenizer.path}{found} has no {what}: spell them out in words or "
                         f"leave them out (it spells {''.join(sorted(tokenizer.characters() - {' '}))})")
    return ids


def tokenize(stack: Stack, text: str) -> torch.Tensor:
    ids = check_text(stack.tokenizer, text)
    if len(ids) > stack.ar.cfg.max_text_tokens:
        raise ValueError(f"the text is {len(ids)} tokens, the autoregressive model takes at most "
                         f"{stack.ar.cfg.max_text_tokens}: split it")
    return torch.tensor([ids], device=stack.device)


def first_calm_run(codes: torch.Tensor, calm: int, run: int = CALM_RUN) -> int:
    """Where the first stretch of more than ``run`` calm codes would go past ``run`` (else the length)."""
    count = 0
    for i, c in enumerate(codes.tolist()):
        count = count + 1 if c == calm else 0
        if count > run:
            return i
    return len(codes)


@torch.no_grad()
def clvp_scores(stack: Stack, text: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
    n = padded.shape[0]
    t = F.pad(text, (0, 1)).expand(n, -1)  # one stop token, as CLVP was trained
    ones = lambda x: torch.ones(x.shape, dtype=torch.bool, device=x.device)
    return stack.clvp(t, ones(t), padded, ones(padded)).float()


@torch.no_grad()
def synthesize(stack: Stack, text: str, clips: Sequence[np.ndarray], cfg: SynthesisConfig,
               log: Callable[[str], None] = lambda m: None) -> List[Sample]:
    """The ``cfg.keep`` best renditions of ``text`` in the voice of ``clips``."""
    cfg.validate()
    gen = torch.Generator(device=stack.device).manual_seed(cfg.seed)
    tokens = tokenize(stack, text)
    ar_latent, diff_latent = conditioning(stack, clips)
    calm = calm_code(stack)
    log(f"sampling {cfg.candidates} code sequences (at most {cfg.max_codes} codes each)")
    seqs, logprob = sample_codes(stack.ar, ar_latent, tokens, cfg.candidates, max_codes=cfg.max_codes,
                                 min_codes=cfg.min_codes, temperature=cfg.temperature, top_p=cfg.top_p,
                                 repetition_penalty=cfg.repetition_penalty, generator=gen)
    longest = max(len(s) for s in seqs) + CALM_RUN + 1
    padded = torch.stack([F.pad(s, (0, longest - len(s)), value=calm) for s in seqs])
    if stack.clvp is not None:
        scores = clvp_scores(stack, tokens, padded)
        log("ranked by CLVP: " + ", ".join(f"{s:.3f}" for s in scores.tolist()))
    else:
        scores = logprob
        log("ranked by the autoregressive model's mean log-probability: " + ", ".join(f"{s:.3f}" for s in scores.tolist()))
    out = []
    decoder = stack.diffusion.cfg
    process = GaussianDiffusion.linear(decoder.diffusion_steps).respaced(cfg.diffusion_steps)
    for rank, i in enumerate(scores.argsort(descending=True)[: cfg.keep].tolist()):
        codes = padded[i : i + 1]
        latents = mel_latents(stack.ar, ar_latent, tokens, codes)
        latents = latents[:, : max(1, first_calm_run(codes[0], calm))]
        frames = frames_for_codes(latents.shape[1])
        log(f"decoding candidate {i} ({len(seqs[i])} codes, {frames} mel frames) in {cfg.diffusion_steps} diffusion steps")
        pre = stack.diffusion.timestep_independent(latents, diff_latent, frames, False)
        noise = torch.randn((1, decoder.in_channels, frames), generator=gen, device=stack.device)
        x = process.sample(lambda x, s: stack.diffusion(x, s, precomputed_aligned_embeddings=pre), noise,
                           uncond_fn=lambda x, s: stack.diffusion(x, s, conditioning_free=True),
                           cond_free_k=cfg.cond_free_k, sampler=cfg.sampler, generator=gen)
        mel = denormalize(x)[0]
        if stack.vocoder is not None:
            audio = stack.vocoder.inference(mel[None], generator=gen)[0, 0].float().cpu().numpy()
        else:
            audio = mel_to_audio(mel, cfg.griffin_lim_iters, seed=cfg.seed)
        out.append(Sample(audio=audio, mel=mel.cpu(), codes=seqs[i].cpu(), score=float(scores[i])))
    return out


def plot_mel(mel: torch.Tensor, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(4.0, mel.shape[1] / 60), 3.5))
    im = ax.imshow(mel.numpy(), origin="lower", aspect="auto", interpolation="nearest", cmap="magma")
    ax.set_xlabel(f"frame ({1000 * 256 / SAMPLE_RATE:.1f} ms)")
    ax.set_ylabel("mel bin")
    ax.set_title(title[:80])
    fig.colorbar(im, ax=ax, label="log energy")
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def write_samples(samples: Sequence[Sample], out_dir: str, text: str, stem: str = "sample") -> List[str]:
    """``{stem}_{k}.wav`` (16-bit, 24 kHz) and ``{stem}_{k}.png`` (its mel) per sample, best first."""
    import soundfile as sf
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for k, s in enumerate(samples):
        wav, png = os.path.join(out_dir, f"{stem}_{k}.wav"), os.path.join(out_dir, f"{stem}_{k}.png")
        tmp = wav + ".tmp.wav"
        sf.write(tmp, s.audio, SAMPLE_RATE, subtype="PCM_16")
        os.replace(tmp, wav)
        plot_mel(s.mel, png, f"{text} (score {s.score:.3f})")
        paths += [wav, png]
    return paths


def stderr_log(msg: str) -> None:
    print(f"[synthesize] {msg}", file=sys.stderr, flush=True)
