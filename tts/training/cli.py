"""Command-line options shared by ``train_tortoise`` and ``train_clvp``, and the text and mel front end
each run trains with.

The tokenizer and mel norms travel with the models: every run leaves the ``tokenizer.json`` and
``mel_norms.pth`` it used beside its ``model.pth``. A run takes them, in this order, from
``--tokenizer`` / ``--mel_norms``, from its ``--output`` (a resume, or files put there), from beside
``--init_from`` and from beside ``--dvae``; every source given must agree (the DVAE's tokenizer may be
replaced, as the DVAE reads no text; its mel norms may not). Only when there is none does a run train a
tokenizer on the transcripts or measure the norms on the shards — on rank 0 under ``torchrun``, from
every shard, while the other ranks wait and then read what it wrote. A checkpoint with no tokenizer
beside it (``--init_from`` tortoise-tts's released weights, or ``--dvae`` its ``dvae.pth``) was trained
with TorToiSe's released tokenizer and norms, and a run refuses anything else for it.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from run.console import logger
from tts.frontends.mel import MelSpectrogram, load_mel_norms
from tts.frontends.text import TextTokenizer, train_tokenizer
from tts.training.data import LoaderConfig, ShardLoader, expand_urls
from tts.training.loop import TrainConfig, atomic_save, setup_distributed

TOKENIZER_FILE, MEL_NORMS_FILE = "tokenizer.json", "mel_norms.pth"
# fingerprints of TorToiSe's released tokenizer.json and mel_norms.pth (see tokenizer_fingerprint, norms_fingerprint)
RELEASED_TOKENIZER = "686d5b7dc02222f0cdcd77488fb8f3d5d476ee6b80d6b93d313fbeb5af6bc47e"
RELEASED_MEL_NORMS = "c8d1452681391f3a4ea084d606b8f560f555fcb4f3ac9274839b75d12bd1af7e"


# what a run leaves; other files may be the user's
TRAINED_FILES = ("model.pth", "model_ema.pth", "train_state.pth", "log.jsonl")
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
                       "model: removes its model.pth, model_ema.pth, train_state.pth, log.jsonl and loss.png first")
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
    g.add_argument("--ema", type=float, default=0.0, help="keep an exponential moving average of the weights with "
                   "this decay (e.g. 0.999), saved as model_ema.pth beside model.pth; 0: none")
    g.add_argument("--no_bf16", action="store_true", help="train in float32 on CUDA (default: bf16 autocast there)")
    g.add_argument("--grad_checkpointing", action="store_true", help="autoregressive model and CLVP: recompute "
                   "each transformer block's activations in the backward pass (less memory for released-size models, "
                   "one more forward pass of compute)")
    g.add_argument("--code_cache", default="beside", help="stages that read DVAE codes: 'beside' codes each clip "
                   "once and keeps the codes beside its shard (dvae_codes-FINGERPRINT/), a directory keeps them "
                   "there, 'off' runs the DVAE on every batch")


def train_config(args) -> TrainConfig:
    return TrainConfig(max_steps=args.max_steps, decay_steps=args.lr_decay_steps, lr=args.lr, warmup_steps=args.warmup_steps,
                       weight_decay=args.weight_decay, grad_accum=args.grad_accum, grad_clip=args.grad_clip,
                       eval_every=args.eval_every, ckpt_every=args.ckpt_every, log_every=args.log_every,
                       seed=args.seed, device=args.device, ema=getattr(args, "ema", 0.0),
                       bf16=not getattr(args, "no_bf16", False)).validate()


log = logger("train")


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


def tokenizer_fingerprint(path: str) -> str:
    """What makes two tokenizer.json files encode alike (vocabulary, merges, specials, pre-tokenizer),
    whichever ``tokenizers`` version wrote them."""
    try:
        with open(path) as f:
            raw = json.load(f)
        m = raw["model"]
        key = {"vocab": sorted(m["vocab"].items()),
               "merges": [" ".join(x) if isinstance(x, list) else x for x in m.get("merges", [])],
               "unk": m.get("unk_token"), "pre": raw.get("pre_tokenizer"), "norm": raw.get("normalizer"),
               "added": sorted((t["content"], t["id"]) for t in raw.get("added_tokens") or [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a tokenizer.json ({type(e).__name__}: {e})") from None
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def norms_fingerprint(norms: torch.Tensor) -> str:
    return hashlib.sha256(norms.float().contiguous().numpy().tobytes()).hexdigest()


def beside(path: Optional[str], name: str) -> Optional[str]:
    """``name`` in the directory of the checkpoint ``path``, when it is there."""
    if not path:
        return None
    candidate = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    return candidate if os.path.exists(candidate) else None


@dataclass
class FrontEnd:
    """The tokenizer and mel norms a run trains with."""
    tokenizer: TextTokenizer
    norms: torch.Tensor


def _sources(args, name: str, flag: Optional[str]) -> List[Tuple[str, str]]:
    """(what, path) of every file given for ``name``: the flag, --output's, beside --init_from, beside --dvae."""
    out = [("--" + ("tokenizer" if name == TOKENIZER_FILE else "mel_norms"), flag)] if flag else []
    if flag and not os.path.exists(flag):
        raise FileNotFoundError(f"{out[0][0]} {flag}: no such file")
    for what, path in (("--output", os.path.join(args.output, name)), ("--init_from", beside(args.init_from, name)),
                       ("--dvae", beside(getattr(args, "dvae", None), name))):
        if path and os.path.exists(path):
            out.append((what, path))
    return out


def _agree(sources: List[Tuple[str, str]], fingerprint, kind: str) -> None:
    first = sources[0]
    for other in sources[1:]:
        if fingerprint(other[1]) != fingerprint(first[1]):
            raise ValueError(f"{first[0]}'s {kind} {first[1]} and {other[0]}'s {other[1]} differ: a model must read "
                             f"{'text' if kind == 'tokenizer' else 'mels'} as the models it follows did (remove or "
                             f"replace one of them)")


def _norms_fp(path: str) -> str:
    return norms_fingerprint(load_mel_norms(path))


def _foreign(args) -> List[Tuple[str, str]]:
    """(option, path) of given checkpoints with no front end beside them: tortoise-tts's released files."""
    out = []
    if args.init_from and not beside(args.init_from, TOKENIZER_FILE) and not beside(args.init_from, MEL_NORMS_FILE):
        out.append(("--init_from", args.init_from))
    dvae = getattr(args, "dvae", None)
    if dvae and not beside(dvae, MEL_NORMS_FILE) and not beside(dvae, "config.json"):
        out.append(("--dvae", dvae))
    return out


def resolve_front_end(args, shards: List[str], build: bool, reads_text: bool = True) -> FrontEnd:
    """The run's tokenizer and mel norms (see the module docstring), written into --output when new there."""
    os.makedirs(args.output, exist_ok=True)
    foreign = _foreign(args)
    tok_sources = _sources(args, TOKENIZER_FILE, args.tokenizer)
    own = [x for x in tok_sources if x[0] != "--dvae"]
    if own:  # the DVAE's tokenizer is only a default: the DVAE reads no text
        tok_sources = own
    if tok_sources:
        _agree(tok_sources, tokenizer_fingerprint, "tokenizer")
    norm_sources = _sources(args, MEL_NORMS_FILE, args.mel_norms)
    if norm_sources:
        _agree(norm_sources, _norms_fp, "mel norms")
    dvae = getattr(args, "dvae", None)
    if dvae and not norm_sources:
        raise ValueError(f"--dvae {dvae} has no mel_norms.pth beside it: pass --mel_norms with the norms the DVAE "
                         f"was trained with (TorToiSe's mel_norms.pth for its released dvae.pth)")
    for option, path in foreign:
        needs = (["tokenizer"] if option == "--init_from" and reads_text else []) + ["mel norms"]
        released = {"tokenizer": (tok_sources, tokenizer_fingerprint, RELEASED_TOKENIZER, "--tokenizer",
                                  "tokenizer.json"),
                    "mel norms": (norm_sources, _norms_fp, RELEASED_MEL_NORMS, "--mel_norms", "mel_norms.pth")}
        for kind in needs:
            sources, fp, want, flag, file = released[kind]
            if not sources or fp(sources[0][1]) != want:
                got = f"got {sources[0][1]}" if sources else "none given"
                raise ValueError(f"{option} {path} has no {file} beside it, so it is read as tortoise-tts's released "
                                 f"weights, which need TorToiSe's released {file}: pass {flag} with it ({got})")
    tok_path = os.path.join(args.output, TOKENIZER_FILE)
    if tok_sources:
        what, src = tok_sources[0]
        if not os.path.exists(tok_path):
            shutil.copyfile(src, tok_path + f".tmp-{os.getpid()}")
            os.replace(tok_path + f".tmp-{os.getpid()}", tok_path)
            if what == "--dvae":
                log(f"using the DVAE's tokenizer {src}")
    elif build:
        texts = (s.text for s in ShardLoader(shards, lambda t: [2], LoaderConfig(shuffle_buffer=1, split_by_node=False),
                                             epochs=1).samples() if s is not None)
        tok = train_tokenizer(texts, tok_path)
        log(f"trained a {len(tok)}-entry tokenizer on the transcripts: {tok_path}")
    else:
        raise FileNotFoundError(f"no {tok_path}: rank 0 should have written it")
    norms_path = os.path.join(args.output, MEL_NORMS_FILE)
    if norm_sources:
        norms_what, norms_src = norm_sources[0]
        norms = load_mel_norms(norms_src)
        if not os.path.exists(norms_path):
            atomic_save(norms, norms_path)
            if norms_what == "--dvae":
                log(f"using the DVAE's mel norms {norms_src}")
    elif build:
        norms = measure_mel_norms(shards)
        atomic_save(norms, norms_path)
        log(f"measured mel norms on the training shards: {norms_path}")
    else:
        raise FileNotFoundError(f"no {norms_path}: rank 0 should have written it")
    return FrontEnd(TextTokenizer(tok_path), norms)


def measure_mel_norms(shards: List[str], n_batches: int = 20) -> torch.Tensor:
    """Per-band mean log-mel over the first ``n_batches`` batches of all the shards (not one rank's share)."""
    mel = MelSpectrogram()
    sums, frames = torch.zeros(80), 0
    loader = ShardLoader(shards, lambda t: [2], LoaderConfig(batch_size=8, shuffle_buffer=1, split_by_node=False),
                         epochs=1)
    with torch.no_grad():
        for _, batch in zip(range(n_batches), loader):
            m = mel(batch["wav"])
            sums += m.sum((0, 2))
            frames += m.shape[0] * m.shape[2]
    return sums / max(1, frames)


def front_end(args, shards: List[str], reads_text: bool = True) -> FrontEnd:
    """``resolve_front_end`` once: by rank 0 under torchrun (which builds what is missing), then by the others."""
    _, world, _ = setup_distributed()
    if world == 1:
        return resolve_front_end(args, shards, build=True, reads_text=reads_text)
    import torch.distributed as dist
    result, error = None, None
    if rank() == 0:
        try:
            result = resolve_front_end(args, shards, build=True, reads_text=reads_text)
        except Exception as e:  # the other ranks must not wait for a rank that stopped
            error = e
    flag = [error is not None]
    dist.broadcast_object_list(flag, src=0)  # every rank stops when rank 0 refuses
    if error is not None:
        raise error
    if flag[0]:
        raise ValueError("rank 0 refused the tokenizer or mel norms (see its message)")
    return result if result is not None else resolve_front_end(args, shards, build=False, reads_text=reads_text)


def prepare(args, reads_text: bool = True) -> Tuple[List[str], Optional[List[str]], TextTokenizer, torch.Tensor]:
    check_output(args)
    os.makedirs(args.output, exist_ok=True)
    shards = expand_urls(args.shards)
    eval_shards = expand_urls(args.eval_shards) if args.eval_shards else None
    if eval_shards and set(eval_shards) & set(shards):
        raise ValueError("--eval_shards overlaps --shards: hold the eval shards out of training")
    fe = front_end(args, shards, reads_text)
    return shards, eval_shards, fe.tokenizer, fe.norms


def use_code_cache(task, args) -> None:
    """Code the shards once with the task's DVAE before training, unless --code_cache off or nothing trains."""
    if args.code_cache == "off" or args.max_steps == 0:
        return
    _, _, device = setup_distributed()
    if args.device != "auto":
        device = torch.device(args.device)
    task.use_code_cache(None if args.code_cache == "beside" else args.code_cache, device, log if rank() == 0 else None)


def warn_if_not_tortoise_loadable(problems: List[str], what: str) -> None:
    """One line when tortoise-tts's class could not take this config (the presets always fit)."""
    if problems and rank() == 0:
        log(f"note: tortoise-tts's {what} class cannot load this config: {'; '.join(problems)}")


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
