"""Train CLVP (text ↔ speech-code contrastive model) on speechmill shards.

    python -m pipelines.train_clvp --shards 'corpus/shards/*.tar' --dvae runs/dvae/model.pth --output runs/clvp \\
        [--config tiny|released|FILE] [--max_steps N] [--init_from CKPT] [--resume|--overwrite]

Each clip is read twice per step: alone, and as tortoise-tts scores the autoregressive model's
candidates (padded to --score_length codes with the DVAE's calm code, no mask), so the trained model
ranks candidates under tortoise-tts's scoring as well as it ranks clean clips. An --output that already
holds a trained model needs --resume (continue it) or --overwrite (start again).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from tts.models.clvp import TORTOISE_PADDING, ClvpConfig, tortoise_mismatches
from tts.training import cli
from tts.training.loop import train
from tts.training.tasks import ClvpTask, load_config, load_dvae, save_config


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m pipelines.train_clvp", __doc__)
    p.add_argument("--dvae", required=True, help="the DVAE's model.pth whose codes CLVP reads")
    p.add_argument("--score_length", type=int, default=TORTOISE_PADDING.length,
                   help="train on each clip also as tortoise-tts scores candidates: padded to this many codes with "
                        "the calm code, no mask (its max_mel_tokens); 0 trains on the clips alone")
    cli.add_common(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.score_length < 0:
        raise ValueError(f"--score_length {args.score_length}: give 0 (off) or tortoise-tts's max_mel_tokens (500)")
    shards, eval_shards, tok, norms = cli.prepare(args)
    num_codes = load_dvae(args.dvae, torch.device("cpu")).cfg.num_tokens
    cfg = load_config(ClvpConfig, args.config, num_codes=num_codes) if args.config in ("tiny", "released") \
        else load_config(ClvpConfig, args.config)
    cli.warn_if_not_tortoise_loadable(tortoise_mismatches(cfg), "CLVP")
    padding = None
    max_codes = cfg.speech_seq_len
    if args.score_length:
        padding = dataclasses.replace(TORTOISE_PADDING, length=args.score_length).validate(num_codes)
        max_codes = min(max_codes, args.score_length - len(padding.tail) - 1)  # room for a stop and the tail
    task = ClvpTask(cfg, args.dvae, shards, eval_shards, tok,
                    cli.loader_config(args, cfg.text_seq_len - 1, max_codes), norms)
    task.padding, task.grad_checkpointing = padding, args.grad_checkpointing
    cli.use_code_cache(task, args)
    save_config(cfg, args.output)
    result = train(task, cli.train_config(args), args.output, resume=args.resume, init_from=args.init_from)
    cli.report(task, result, args, "use it as tortoise-tts's clvp2.pth (--config released), or continue with --resume "
                                   "and more --max_steps")
    return result


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
