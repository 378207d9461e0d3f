"""Command-line options shared by ``train_tortoise`` and ``train_clvp``."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import List, Optional, Tuple

import torch

from trainers.data import LoaderConfig, ShardLoader, expand_urls
from trainers.loop import TrainConfig, atomic_save
from trainers.mel import MelSpectrogram, load_mel_norms
from trainers.text import TextTokenizer, train_tokenizer


TRAINED_FILES = ("model.pth", "train_state.pth", "log.jsonl")  # what a run leaves; other files may be the user's
RUN_FILES = TRAINED_FILES + ("loss.png",)  # what --overwrite removes, so that the log matches the checkpoint


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and shows each option's default, so --help answers "what if I leave it out"."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if unset or not action.option_strings or "default" in text:
            return text
        return f"{text} (default %(default)s)"


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A trainer's parser; abbreviations are off so that a typo like ``--max_step`` is an error, not a guess."""
    return argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0], formatter_class=HelpFormatter,
                                   epilog=doc.split("\n\n", 1)[1], allow_abbrev=False)


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
    g.add_argument("--batch_size", type=int, default=8, help="clips per micro-batch, per process")
    g.add_argument("--num_workers", type=int, default=0, help="dataloader worker processes (shards split across them)")
    g.add_argument("--resampled", action="store_true", help="draw shards with replacement forever (multi-node)")
    g = p.add_argument_group("model and training")
    g.add_argument("--config", default="tiny", help="tiny | released | a JSON file of the model config's fields")
    g.add_argument("--max_steps", type=int, default=1000, help="optimizer steps; 0 builds the model, saves it, exits")
    g.add_argument("--init_from", default=None, help="start from this checkpoint (e.g. a released .pth), strict load")
    start = g.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from --output's last checkpoint, exactly "
                       "(an error when it has none)")
    start.add_argument("--overwrite", action="store_true", help="start again in an --output that holds a trained "
                       "model: removes its model.pth, train_state.pth, log.jsonl and loss.png first")
    g.add_argument("--lr", type=float, default=3e-4, help="peak learning rate, reached after the warmup")
    g.add_argument("--lr_decay_steps", type=int, default=None,
                   help="steps over which the learning rate decays (default --max_steps)")
    g.add_argument("--warmup_steps", type=int, default=100, help="steps of linear warmup")
    g.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay, on matrices only")
    g.add_argument("--grad_accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--grad_clip", type=float, default=1.0, help="largest gradient norm")
    g.add_argument("--eval_every", type=int, default=200, help="steps between eval losses on --eval_shards")
    g.add_argument("--ckpt_every", type=int, default=500, help="steps between checkpoints; the last step saves too")
    g.add_argument("--log_every", type=int, default=10, help="steps between progress lines and log.jsonl entries")
    g.add_argument("--seed", type=int, default=0, help="seeds the model's initialisation and the data order")
    g.add_argument("--device", default="auto", help="auto (CUDA when present, one per torchrun rank), cpu, cuda")


def train_config(args) -> TrainConfig:
    return TrainConfig(max_steps=args.max_steps, decay_steps=args.lr_decay_steps, lr=args.lr, warmup_steps=args.warmup_steps,
                       weight_decay=args.weight_decay, grad_accum=args.grad_accum, grad_clip=args.grad_clip,
                       eval_every=args.eval_every, ckpt_every=args.ckpt_every, log_every=args.log_every,
                       seed=args.seed, device=args.device).validate()


def log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def check_output(args) -> None:
    """Refuse a new run over a trained one: it would replace model.pth under the stages that read it and
    append a second run to log.jsonl. ``--overwrite`` clears the run's files; ``--resume`` needs them."""
    found = [f for f in TRAINED_FILES if os.path.exists(os.path.join(args.output, f))]
    if args.resume:
        if not os.path.exists(os.path.join(args.output, "train_state.pth")):
            raise FileNotFoundError(f"--resume: {args.output} has no train_state.pth to continue from; leave out "
                                    f"--resume to start a new run there (--init_from PATH starts from a model's weights)")
    elif found and not args.overwrite:
        raise ValueError(f"{args.output} already holds a trained model ({', '.join(found)}): pass --resume to "
                         f"continue it or --overwrite to start again")
    elif args.overwrite and rank() == 0:
        for f in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(args.output, f))


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
    check_output(args)
    os.makedirs(args.output, exist_ok=True)
    shards = expand_urls(args.shards)
    eval_shards = expand_urls(args.eval_shards) if args.eval_shards else None
    if eval_shards and set(eval_shards) & set(shards):
        raise ValueError("--eval_shards overlaps --shards: hold the eval shards out of training")
    return shards, eval_shards, tokenizer_for(args, shards), mel_norms_for(args, shards)


def loader_config(args, max_text_tokens: int, max_codes: int) -> LoaderConfig:
    return LoaderConfig(batch_size=args.batch_size, max_text_tokens=max_text_tokens, max_codes=max_codes,
                        resampled=args.resampled, seed=args.seed, num_workers=args.num_workers)


def data_summary(task, conditioning: bool) -> Optional[str]:
    """What the training loader read and skipped (None where dataloader workers kept the counts)."""
    if task.train_loader is None or task.loader_cfg.num_workers > 0:
        return None
    c = task.train_loader.counts
    skipped = sum(c.skipped.values())
    text = f"samples read {c.read}, skipped {skipped}"
    if skipped:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(c.skipped.items())) + ")"
    if conditioning:
        text += (f", conditioning from a similar clip {c.cond_from_similar}, from another clip of the speaker "
                 f"{c.cond_from_speaker}, from the same clip {c.cond_from_self}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        text += " on rank 0"
    return text


def training_summary(task, result: dict, conditioning: bool = False) -> str:
    """One line: what was trained, how far, the last losses and the data it saw."""
    step, history = result.get("step", 0), result.get("history") or {"train": [], "eval": []}
    if not history["train"]:
        parts = [f"{task.title}: built, not trained (step {step})"]
    else:
        parts = [f"{task.title}: trained to step {step}, final loss {history['train'][-1][1]:.4f}"]
        if history["eval"]:
            parts[0] += f", eval loss {history['eval'][-1][1]:.4f} at step {history['eval'][-1][0]}"
    data = data_summary(task, conditioning)
    return "; ".join(parts + ([data] if data else []))


def report(task, result: dict, args, next_step: str, conditioning: bool = False) -> None:
    """The run's last lines: the summary, then where the model is and what to do with it."""
    if rank() != 0:
        return
    log(training_summary(task, result, conditioning))
    log(f"model: {os.path.join(args.output, 'model.pth')} (config.json beside it); next: {next_step}")


def run_cli(main, argv=None) -> int:
    try:
        main(argv)
    except (ValueError, FileNotFoundError) as e:
        log(f"error: {e}")
        return 2
    return 0
