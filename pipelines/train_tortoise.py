"""Train TorToiSe's DVAE, then its autoregressive model, on speechmill shards.

    python -m pipelines.train_tortoise --stage dvae --shards 'corpus/shards/*.tar' --output runs/dvae
    python -m pipelines.train_tortoise --stage ar --shards 'corpus/shards/*.tar' --dvae runs/dvae/model.pth \\
        --output runs/ar [--config tiny|released|FILE] [--max_steps N] [--init_from CKPT] [--resume|--overwrite]

An --output that already holds a trained model needs --resume (continue it) or --overwrite (start again).
Under ``torchrun --nproc_per_node N`` it trains with DDP (gloo on CPU, NCCL on GPU).
"""
from __future__ import annotations

import argparse
import os
import sys

from trainers import cli
from trainers.autoregressive import ArConfig
from trainers.dvae import DvaeConfig
from trainers.loop import train
from trainers.tasks import ArTask, DvaeTask, load_config, load_dvae, save_config


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m pipelines.train_tortoise", __doc__)
    p.add_argument("--stage", required=True, choices=["dvae", "ar"], help="dvae (mels → codes) or ar "
                   "(text + voice → codes; needs --dvae)")
    p.add_argument("--dvae", default=None, help="the trained DVAE's model.pth (its config.json beside it; "
                   "without one, the released DVAE config) — required for --stage ar")
    cli.add_common(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.stage == "ar" and not args.dvae:
        raise ValueError("--stage ar needs --dvae PATH/model.pth")
    shards, eval_shards, tok, norms = cli.prepare(args)
    if args.stage == "dvae":
        cfg = load_config(DvaeConfig, args.config)
        task = DvaeTask(cfg, shards, eval_shards, tok, cli.loader_config(args, 10 ** 6, 10 ** 6), norms)
    else:
        import torch
        num_codes = load_dvae(args.dvae, torch.device("cpu")).cfg.num_tokens
        cfg = load_config(ArConfig, args.config, num_codes=num_codes) if args.config in ("tiny", "released") \
            else load_config(ArConfig, args.config)
        if cfg.number_mel_codes != num_codes + 2:
            raise ValueError(f"the DVAE has {num_codes} codes but the model expects {cfg.number_mel_codes - 2}")
        task = ArTask(cfg, args.dvae, shards, eval_shards, tok,
                      cli.loader_config(args, cfg.max_text_tokens, cfg.max_mel_tokens), norms)
    save_config(cfg, args.output)
    result = train(task, cli.train_config(args), args.output, resume=args.resume, init_from=args.init_from)
    cli.report(task, result, args, next_step(args), conditioning=args.stage == "ar")
    return result


def next_step(args) -> str:
    """What the trained model is for: the DVAE feeds the later stages; the autoregressive model is an end product."""
    model = os.path.join(args.output, "model.pth")
    if args.stage == "dvae":
        return (f"train the autoregressive model with --stage ar --dvae {model} "
                f"(and CLVP with pipelines.train_clvp --dvae {model})")
    return "use it as tortoise-tts's autoregressive.pth (--config released), or continue with --resume and more --max_steps"


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
