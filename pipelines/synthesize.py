"""Speak a text with a trained stack (DVAE, autoregressive model, diffusion decoder), to listen to it.

    python -m pipelines.synthesize --text 'Hello there.' --dvae runs/dvae/model.pth --ar runs/ar/model.pth \\
        --diffusion runs/diffusion/model.pth --output samples [--clvp runs/clvp/model.pth] \\
        [--vocoder vocoder.pth] [--voice clip.wav ...]

Writes sample_0.wav (16-bit, 24 kHz) and sample_0.png (its mel) — one pair per --keep — into
--output. The autoregressive model samples --candidates code sequences; CLVP ranks them when given
(else the autoregressive model's own likelihood does); the decoder turns the best into a mel in
--diffusion_steps steps; a UnivNet vocoder (tortoise-tts's vocoder.pth) makes audio when given,
otherwise Griffin-Lim does. The tokenizer and mel norms the models were trained with are found
beside --ar and --dvae unless --tokenizer / --mel_norms are given. Without --voice the
conditioning is a silent clip and the models choose a voice.
"""
from __future__ import annotations

import argparse
import sys

from tts.frontends.text import TextTokenizer, transliterated
from tts.inference.synthesis import (
    SynthesisConfig,
    check_text,
    load_stack,
    read_voice,
    stderr_log,
    synthesize,
    write_samples,
)
from tts.training import cli
from tts.training.frozen import sibling


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m pipelines.synthesize", __doc__)
    g = p.add_argument_group("what to say and where")
    g.add_argument("--text", required=True, help="the text to speak")
    g.add_argument("--output", required=True, help="directory for the WAVs and mel plots (sample_K.wav/png are replaced)")
    g.add_argument("--voice", nargs="*", default=[], help="one or more clips of the voice to speak in (any format "
                   "soundfile reads)")
    g = p.add_argument_group("models")
    g.add_argument("--dvae", required=True, help="the DVAE's model.pth (for its silence code)")
    g.add_argument("--ar", required=True, help="the autoregressive model's model.pth")
    g.add_argument("--diffusion", required=True, help="the diffusion decoder's model.pth")
    g.add_argument("--clvp", default=None, help="a CLVP model.pth to rank the candidates by")
    g.add_argument("--vocoder", default=None, help="a UnivNet generator (tortoise-tts's vocoder.pth); "
                   "default: Griffin-Lim")
    g.add_argument("--tokenizer", default=None, help="default: tokenizer.json beside --ar")
    g.add_argument("--mel_norms", default=None, help="default: mel_norms.pth beside --dvae or --ar")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    g = p.add_argument_group("sampling")
    d = SynthesisConfig()
    g.add_argument("--candidates", type=int, default=d.candidates, help="code sequences to sample and rank")
    g.add_argument("--keep", type=int, default=d.keep, help="how many of the best to decode and write")
    g.add_argument("--max_codes", type=int, default=d.max_codes, help="longest code sequence (21.5 codes a second)")
    g.add_argument("--min_codes", type=int, default=d.min_codes, help="shortest code sequence")
    g.add_argument("--temperature", type=float, default=d.temperature, help="autoregressive sampling temperature")
    g.add_argument("--top_p", type=float, default=d.top_p, help="nucleus sampling mass")
    g.add_argument("--repetition_penalty", type=float, default=d.repetition_penalty, help="divides the logits of "
                   "codes already produced")
    g.add_argument("--diffusion_steps", type=int, default=d.diffusion_steps, help="decoder sampling steps")
    g.add_argument("--sampler", default=d.sampler, choices=["p", "ddim"], help="p: ancestral with the learned "
                   "variance (tortoise-tts's); ddim: deterministic")
    g.add_argument("--cond_free_k", type=float, default=d.cond_free_k, help="classifier-free guidance strength "
                   "(0 turns it off)")
    g.add_argument("--seed", type=int, default=d.seed, help="seeds every random draw")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = SynthesisConfig(candidates=args.candidates, keep=args.keep, max_codes=args.max_codes,
                          min_codes=args.min_codes, temperature=args.temperature, top_p=args.top_p,
                          repetition_penalty=args.repetition_penalty, diffusion_steps=args.diffusion_steps,
                          sampler=args.sampler, cond_free_k=args.cond_free_k, seed=args.seed).validate()
    tokenizer = args.tokenizer or sibling(args.ar, "tokenizer.json")
    if not tokenizer:
        raise ValueError(f"no tokenizer.json beside {args.ar}: pass --tokenizer, the one the models were trained with")
    # the text is checked before any model is loaded: a character the tokenizer lacks is named at once
    check_text(TextTokenizer(tokenizer), args.text, " (--tokenizer)" if args.tokenizer else " (found beside --ar)")
    for c, read in transliterated(args.text):
        stderr_log(f"note: {c!r} is read as {read!r} (the text is spoken in ASCII letters)")
    norms = args.mel_norms or sibling(args.dvae, "mel_norms.pth") or sibling(args.ar, "mel_norms.pth")
    if not norms:
        raise ValueError(f"no mel_norms.pth beside {args.dvae} or {args.ar}: pass --mel_norms")
    clips = [read_voice(v) for v in args.voice]
    stderr_log("loading the models")
    stack = load_stack(args.ar, args.diffusion, args.dvae, tokenizer, norms, clvp=args.clvp, vocoder=args.vocoder,
                       device=args.device)
    samples = synthesize(stack, args.text, clips, cfg, log=stderr_log)
    paths = write_samples(samples, args.output, args.text)
    vocoded = "UnivNet" if stack.vocoder is not None else "Griffin-Lim (no --vocoder)"
    for s, wav in zip(samples, paths[::2]):
        stderr_log(f"wrote {wav} ({len(s.audio) / 24000:.2f} s, {vocoded}) and its mel plot")
    return paths


def run(argv=None) -> int:
    """``main`` with user errors as one line on stderr and exit status 2."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError) as e:
        stderr_log(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
