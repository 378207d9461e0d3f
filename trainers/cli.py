"""Command-line options shared by ``train_tortoise`` and ``train_clvp``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Tuple

import torch

from trainers.data import LoaderConfig, ShardLoader, expand_urls
from trainers.loop import TrainConfig, atomic_save
from trainers.mel import MelSpectrogram, load_mel_norms
from trainers.text import TextTokenizer, train_tokenizer


def add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--shards", required=True, help="training shards: a glob ('corpus/shards/*.tar'), a brace "
                   "pattern ('shard-{000000..000099}.tar') or a comma-separated list")
    g.add_argument("--eval_shards", default=None, help="held-out shards for the eval loss (same forms)")
    g.add_argument("--output", required=True, help="directory for model.pth, train_state.pth, log.jsonl, loss.png")
    g.add_argument("--tokenizer", default=None, help="a TorToiSe-format tokenizer.json (e.g. TorToiSe's released "
                   "one, needed to fine-tune released models); default: train a 255-entry one on the transcripts")
    g.add_argument("--mel_norms", default=None, help="TorToiSe's mel_norms.pth (needed for released models); "
                   "default: per-band means measured on the training shards")
    g.add_argument("--batch_size", type=int, default=8)
    g.add_argument("--num_workers", type=int, default=0, help="dataloader worker processes (shards split across them)")
    g.add_argument("--resampled", action="store_true", help="draw shards with replacement forever (multi-node)")
    g = p.add_argument_group("model and training")
    g.add_argument("--config", default="tiny", help="tiny | released | a JSON file of the model config's fields")
    g.add_argument("--max_steps", type=int, default=1000, help="optimizer steps; 0 builds the model, saves it, exits")
    g.add_argument("--init_from", default=None, help="start from this checkpoint (e.g. a released .pth), strict load")
    g.add_argument("--resume", action="store_true", help="continue from --output's last checkpoint, exactly")
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--lr_decay_steps", type=int, default=None,
                   help="steps over which the learning rate decays (default --max_steps)")
    g.add_argument("--warmup_steps", type=int, default=100)
    g.add_argument("--weight_decay", type=float, default=0.01)
    g.add_argument("--grad_accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--grad_clip", type=float, default=1.0)
    g.add_argument("--eval_every", type=int, default=200)
    g.add_argument("--ckpt_every", type=int, default=500)
    g.add_argument("--log_every", type=int, default=10)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (CUDA when present, one per torchrun rank), cpu, cuda")


def train_config(args) -> TrainConfig:
    return TrainConfig(max_steps=args.max_steps, decay_steps=args.lr_decay_steps, lr=args.lr, warmup_steps=args.warmup_steps,
                       weight_decay=args.weight_decay, grad_accum=args.grad_accum, grad_clip=args.grad_clip,
                       eval_every=args.eval_every, ckpt_every=args.ckpt_every, log_every=args.log_every,
                       seed=args.seed, device=args.device).validate()


def log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def tokenizer_for(args, shards: List[str]) -> TextTokenizer:
    if args.tokenizer:
        return TextTokenizer(args.tokenizer)
    path = os.path.join(args.output, "tokenizer.json")
    if os.path.exists(path):
        return TextTokenizer(path)
    texts = (s.text for s in ShardLoader(shards, lambda t: [2], LoaderConfig(shuffle_buffer=1), epochs=1).samples()
             if s is not None)
    tok = train_tokenizer(texts, path)  # written to a temporary name and renamed: ranks may race here
    log(f"trained a {len(tok)}-entry tokenizer on the transcripts: {path}")
    return tok


def mel_norms_for(args, shards: List[str], n_batches: int = 20) -> torch.Tensor:
    if args.mel_norms:
        return load_mel_norms(args.mel_norms)
    path = os.path.join(args.output, "mel_norms.pth")
    if os.path.exists(path):
        return load_mel_norms(path)
    mel = MelSpectrogram()
    sums, frames = torch.zeros(80), 0
    loader = ShardLoader(shards, lambda t: [2], LoaderConfig(batch_size=8, shuffle_buffer=1), epochs=1)
    with torch.no_grad():
        for _, batch in zip(range(n_batches), loader):
            m = mel(batch["wav"])
            sums += m.sum((0, 2))
            frames += m.shape[0] * m.shape[2]
    norms = sums / max(1, frames)
    atomic_save(norms, path)
    log(f"measured mel norms on the training shards: {path}")
    return norms


def prepare(args) -> Tuple[List[str], Optional[List[str]], TextTokenizer, torch.Tensor]:
    os.makedirs(args.output, exist_ok=True)
    shards = expand_urls(args.shards)
    eval_shards = expand_urls(args.eval_shards) if args.eval_shards else None
    if eval_shards and set(eval_shards) & set(shards):
        raise ValueError("--eval_shards overlaps --shards: hold the eval shards out of training")
    return shards, eval_shards, tokenizer_for(args, shards), mel_norms_for(args, shards)


def loader_config(args, max_text_tokens: int, max_codes: int) -> LoaderConfig:
    return LoaderConfig(batch_size=args.batch_size, max_text_tokens=max_text_tokens, max_codes=max_codes,
                        resampled=args.resampled, seed=args.seed, num_workers=args.num_workers)


def run_cli(main, argv=None) -> int:
    try:
        main(argv)
    except (ValueError, FileNotFoundError) as e:
        log(f"error: {e}")
        return 2
    return 0
