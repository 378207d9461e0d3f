"""Train CVVP (conditioning clip ↔ speech-code voice matcher) on speechmill shards.

    python -m pipelines.train_cvvp --shards 'corpus/shards/*.tar' --dvae runs/dvae/model.pth --output runs/cvvp \\
        [--config tiny|released|FILE] [--max_steps N] [--init_from CKPT] [--resume|--overwrite]

Each clip is paired with another clip of the same speaker (from its similar_keys, else its speaker
id). CVVP reads no text: --tokenizer is not used. Mels are normalised with the DVAE's mel_norms.pth
(found beside --dvae unless --mel_norms is given). An --output that already holds a trained model
needs --resume (continue it) or --overwrite (start again).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from tts.frontends.mel import load_mel_norms
from tts.models.cvvp import CvvpConfig
from tts.training import cli
from tts.training.data import expand_urls
from tts.training.decoder_tasks import CvvpTask
from tts.training.frozen import inherit_front_end
from tts.training.loop import train
from tts.training.tasks import load_config, load_dvae, save_config


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m pipelines.train_cvvp", __doc__)
    p.add_argument("--dvae", required=True, help="the DVAE's model.pth whose codes CVVP reads")
    cli.add_common(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.tokenizer:
        raise ValueError("--tokenizer: CVVP reads no text")
    if not os.path.exists(args.dvae):
        raise FileNotFoundError(f"no DVAE at {args.dvae}")
    inherit_front_end(args, None, (args.dvae,))
    cli.check_output(args)
    os.makedirs(args.output, exist_ok=True)
    shards = expand_urls(args.shards)
    eval_shards = expand_urls(args.eval_shards) if args.eval_shards else None
    if eval_shards and set(eval_shards) & set(shards):
        raise ValueError("--eval_shards overlaps --shards: hold the eval shards out of training")
    norms = load_mel_norms(args.mel_norms)
    num_codes = load_dvae(args.dvae, torch.device("cpu")).cfg.num_tokens
    cfg = load_config(CvvpConfig, args.config, num_codes=num_codes) if args.config in ("tiny", "released") \
        else load_config(CvvpConfig, args.config)
    if cfg.mel_codes != num_codes:
        raise ValueError(f"the DVAE has {num_codes} codes but the model expects {cfg.mel_codes} (mel_codes)")
    task = CvvpTask(cfg, args.dvae, shards, eval_shards, lambda text: [2],  # text is not read: never skip on it
                    cli.loader_config(args, 10 ** 6, 10 ** 6), norms)
    save_config(cfg, args.output)
    result = train(task, cli.train_config(args), args.output, resume=args.resume, init_from=args.init_from)
    cli.report(task, result, args, "use it as tortoise-tts's cvvp.pth (--config released), or continue with --resume "
                                   "and more --max_steps", conditioning=True)
    return result


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
