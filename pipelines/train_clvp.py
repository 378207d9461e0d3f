"""Train CLVP (text ↔ speech-code contrastive model) on speechmill shards.

    python -m pipelines.train_clvp --shards 'corpus/shards/*.tar' --dvae runs/dvae/model.pth --output runs/clvp \\
        [--config tiny|released|FILE] [--max_steps N] [--init_from CKPT] [--resume|--overwrite]

An --output that already holds a trained model needs --resume (continue it) or --overwrite (start again).
"""
from __future__ import annotations

import argparse
import sys

import torch

from trainers import cli
from trainers.clvp import ClvpConfig
from trainers.loop import train
from trainers.tasks import ClvpTask, load_config, load_dvae, save_config


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m pipelines.train_clvp", __doc__)
    p.add_argument("--dvae", required=True, help="the DVAE's model.pth whose codes CLVP reads")
    cli.add_common(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    shards, eval_shards, tok, norms = cli.prepare(args)
    num_codes = load_dvae(args.dvae, torch.device("cpu")).cfg.num_tokens
    cfg = load_config(ClvpConfig, args.config, num_codes=num_codes) if args.config in ("tiny", "released") \
        else load_config(ClvpConfig, args.config)
    task = ClvpTask(cfg, args.dvae, shards, eval_shards, tok,
                    cli.loader_config(args, cfg.text_seq_len - 1, cfg.speech_seq_len), norms)
    save_config(cfg, args.output)
    result = train(task, cli.train_config(args), args.output, resume=args.resume, init_from=args.init_from)
    cli.report(task, result, args, "use it as tortoise-tts's clvp2.pth (--config released), or continue with --resume "
                                   "and more --max_steps")
    return result


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
