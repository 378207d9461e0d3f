"""The training loop shared by the DVAE, the autoregressive model and CLVP. Read it top to bottom.

A ``Task`` knows its model, its batches and its loss; this file does the rest: AdamW with linear
warmup and cosine decay, gradient accumulation (gradients synchronised across DDP ranks on the last
micro-batch only) and clipping, bf16 autocast on CUDA, DDP under ``torchrun`` (gloo on CPU, NCCL on
GPU), an optional exponential moving average of the weights, periodic eval loss, progress lines,
atomic checkpoints, an exact resume, ``--init_from`` a released checkpoint (tortoise-tts's layouts
with or without GPT-2's causal-mask buffers), and a PNG of the loss curves. Losses stay on the
device until a progress line needs them, so a step does not wait for the GPU.

Files in the output directory:
  model.pth        the model's state dict alone (TorToiSe's format; loads with weights_only=True)
  model_ema.pth    with --ema: the averaged weights, in the same format
  train_state.pth  optimizer, step, RNG states, loss history, the EMA and the model's buffers kept
                   outside its state dict (plain values and tensors)
  log.jsonl        one line per logged step; loss.png: train and eval loss curves

Before training, one line says how much disk a checkpoint takes when that is over ``LARGE_CHECKPOINT_BYTES``;
a resume drops the log lines past the checkpoint's step, so log.jsonl and train_state.pth agree.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Protocol, Tuple

import numpy as np
import torch
import torch.distributed as dist

LARGE_CHECKPOINT_BYTES = 10 ** 9  # above this, say how much disk each checkpoint takes before training


@dataclass
class TrainConfig:
    max_steps: int = 1000
    decay_steps: Optional[int] = None  # cosine horizon (default max_steps); lets a run stop early and resume
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.96
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 200
    eval_batches: int = 8
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA only
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: none), saved as model_ema.pth

    def validate(self) -> "TrainConfig":
        if self.max_steps < 0 or self.grad_accum < 1 or self.lr <= 0:
            raise ValueError("need max_steps >= 0, grad_accum >= 1 and lr > 0")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema {self.ema}: the decay must be in [0, 1) (e.g. 0.999; 0 turns it off)")
        return self


class Task(Protocol):
    name: str

    def build_model(self) -> torch.nn.Module: ...

    def train_batches(self, seed: int) -> Iterator[dict]: ...

    def eval_batches(self) -> Optional[Iterator[dict]]: ...

    def loss(self, model: torch.nn.Module, batch: dict, device: torch.device) -> Tuple[torch.Tensor, Dict[str, float]]: ...

    # optional: ``log_stats(model) -> dict`` adds the model's own numbers (e.g. codebook usage) to each progress line


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    horizon = cfg.decay_steps or cfg.max_steps
    progress = (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def atomic_save(obj, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A checkpoint's state dict (plain or wrapped in {"model": ...}), loaded with weights_only=True."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(path)
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is the same user error
        raise ValueError(f"{path} is not a checkpoint this trainer can read ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else 'no details'})") from None
    sd = sd.get("model", sd) if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict) else sd
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict of tensors")
    return sd


GPT2_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # persistent before transformers 4.31, not from then on
INFERENCE_ALIASES = ("inference_model.", "gpt.wte.")  # tortoise-tts's inference wrapper: copies of other entries


def fit_state_dict(model: torch.nn.Module, sd: Dict[str, torch.Tensor], path: str, what: str) -> Dict[str, torch.Tensor]:
    """``sd`` in ``model``'s layout, or a one-line ValueError naming the first entry that does not fit.

    Accepts what tortoise-tts's own classes save: GPT-2 blocks with or without their causal-mask
    buffers (constants; the model's own are used) and the inference wrapper's duplicate entries."""
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(INFERENCE_ALIASES)}
    for k, v in own.items():
        if k.endswith(GPT2_MASK_BUFFERS):
            sd[k] = v
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        more = lambda keys: f" and {len(keys) - 1} more" if len(keys) > 1 else ""
        parts = ([f"lacks {missing[0]!r}{more(missing)}"] if missing else []) + \
                ([f"has {unexpected[0]!r}{more(unexpected)} that the model does not"] if unexpected else [])
        raise ValueError(f"{path} is not a checkpoint of this {what}: it {' and '.join(parts)} "
                         f"({len(own)} entries expected)")
    for k, v in own.items():
        if sd[k].shape != v.shape:
            raise ValueError(f"{path} does not fit this {what}'s config: {k!r} is {list(sd[k].shape)} there "
                             f"and {list(v.shape)} here (check --config)")
    return sd


def load_into(model: torch.nn.Module, path: str, what: str = "model") -> None:
    """Load the checkpoint at ``path`` into ``model`` (see ``fit_state_dict``); errors are one line."""
    model.load_state_dict(fit_state_dict(model, load_state_dict(path), path, what), strict=True)


def extra_buffers(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Buffers kept outside the state dict (the released layouts have no room for them), for train_state.pth."""
    own = model.state_dict()
    return {k: v.detach().cpu().clone() for k, v in model.named_buffers() if k not in own}


def set_extra_buffers(model: torch.nn.Module, saved: Dict[str, torch.Tensor]) -> None:
    buffers = dict(model.named_buffers())
    for k, v in saved.items():
        if k in buffers:
            buffers[k].copy_(v)


def checkpoint_bytes(model: torch.nn.Module) -> Tuple[int, int]:
    """(model.pth, optimizer state) bytes on disk: the state dict, and AdamW's two moments per trainable parameter."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights, moments


def human_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def checkpoint_size_note(model: torch.nn.Module, out_dir: str, threshold: float = LARGE_CHECKPOINT_BYTES) -> Optional[str]:
    """A warning for checkpoints over ``threshold`` bytes: a released-size model writes gigabytes at its first save."""
    weights, moments = checkpoint_bytes(model)
    if weights + moments <= threshold:
        return None
    return (f"checkpoints here take about {human_bytes(weights + moments)} ({human_bytes(weights)} weights + "
            f"{human_bytes(moments)} optimizer state) in {out_dir}")


def _logged_step(line: str) -> Optional[int]:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):  # a line cut short when the run was killed
        return None


def trim_log(path: str, step: int) -> None:
    """Drop log lines past ``step``: a run stopped between checkpoints logged steps that the resume repeats."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if (logged := _logged_step(line)) is not None and logged <= step]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def rng_state() -> dict:
    """RNG states as plain values and tensors, so the state file loads with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                    has_gauss, cached), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plot_losses(history: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    if history["train"]:
        ax.plot(*zip(*history["train"]), label="train", lw=1)
    if history["eval"]:
        ax.plot(*zip(*history["eval"]), label="eval", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def setup_distributed() -> Tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def train(task: Task, cfg: TrainConfig, out_dir: str, resume: bool = False, init_from: Optional[str] = None) -> dict:
    cfg.validate()
    rank, world, device = setup_distributed()
    if cfg.device != "auto":
        device = torch.device(cfg.device)
    main = rank == 0
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    # 1. the model: fresh, a released checkpoint, or where the last run stopped
    model = task.build_model()
    what = getattr(task, "title", "model")
    if init_from:
        load_into(model, init_from, what)
    state_path, model_path = os.path.join(out_dir, "train_state.pth"), os.path.join(out_dir, "model.pth")
    ema_path = os.path.join(out_dir, "model_ema.pth")
    state = None
    if resume:
        if not os.path.exists(state_path):
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist")
        load_into(model, model_path, what)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        set_extra_buffers(model, state.get("buffers", {}))
    note = checkpoint_size_note(model, out_dir, LARGE_CHECKPOINT_BYTES)
    if main and note and cfg.max_steps > 0:
        print(f"[train] {note}", file=sys.stderr, flush=True)
    model.to(device)
    if cfg.max_steps == 0:
        if main:
            atomic_save(model.state_dict(), model_path)
            print(f"[{task.name}] built {sum(p.numel() for p in model.parameters()):,} parameters; "
                  f"saved {model_path}", file=sys.stderr)
        return {"step": 0}
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    # 2. the optimizer: weight decay on matrices only
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    step, history = 0, {"train": [], "eval": []}
    ema = None
    if cfg.ema:
        ema = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
               for k, v in model.state_dict().items()}
        if state is not None and "ema" in state:
            ema = {k: v.to(device) for k, v in state["ema"].items()}
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        set_rng_state(state["rng"])
        if main:
            trim_log(os.path.join(out_dir, "log.jsonl"), step)
        print(f"[{task.name}] resumed at step {step}", file=sys.stderr)

    # 3. the data: a seeded stream, fast-forwarded past what earlier steps consumed
    batches = task.train_batches(cfg.seed + rank)
    for _ in range(step * cfg.grad_accum):
        next(batches)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16
                else torch.autocast("cpu", enabled=False))

    def save():
        if main:
            atomic_save(model.state_dict(), model_path)
            extra = {"ema": ema} if ema is not None else {}
            if ema is not None:
                own = model.state_dict()
                atomic_save({k: v.to(own[k].dtype) for k, v in ema.items()}, ema_path)
            atomic_save({"optimizer": opt.state_dict(), "step": step, "history": history, "rng": rng_state(),
                         "config": dataclasses.asdict(cfg), "buffers": extra_buffers(model), **extra}, state_path)
            plot_losses(history, os.path.join(out_dir, "loss.png"))

    averaged = {k for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update_ema():
        """Parameters are averaged; buffers (a codebook, its counts) are copied as they are."""
        for k, v in model.state_dict().items():
            if k in averaged:
                ema[k].mul_(cfg.ema).add_(v.float(), alpha=1 - cfg.ema)
            else:
                ema[k].copy_(v)

    def evaluate() -> Optional[float]:
        it = task.eval_batches()
        if it is None:
            return None
        model.eval()
        losses = []
        with torch.no_grad(), autocast:
            for _, batch in zip(range(cfg.eval_batches), it):
                losses.append(task.loss(model, batch, device)[0].item())
        model.train()
        return sum(losses) / len(losses) if losses else None

    # 4. the loop; per-step losses stay tensors until a progress line or a checkpoint reads them
    model.train()
    t0, last = time.time(), {}
    unread = []  # (step, loss tensor) not yet in history

    def read_losses():
        if unread:
            values = torch.stack([t for _, t in unread]).tolist()
            history["train"].extend((s, v) for (s, _), v in zip(unread, values))
            unread.clear()

    while step < cfg.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        total = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            # DDP averages gradients on the last micro-batch's backward only
            sync = contextlib.nullcontext() if world == 1 or micro == cfg.grad_accum - 1 else ddp.no_sync()
            with sync:
                with autocast:
                    loss, parts = task.loss(ddp, batch, device)
                (loss / cfg.grad_accum).backward()
            total += loss.detach().float() / cfg.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            update_ema()
        step += 1
        unread.append((step, total))
        if main and (step % cfg.log_every == 0 or step == 1 or step == cfg.max_steps):
            read_losses()
            loss_value = history["train"][-1][1]
            last = {"step": step, "loss": loss_value, "lr": opt.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                    **{k: float(v) for k, v in parts.items()}}
            if hasattr(task, "log_stats"):
                last.update(task.log_stats(model))
            rate = step / max(1e-9, time.time() - t0)
            extra = "".join(f" {k} {v:g}" for k, v in last.items() if k in ("codes_used", "code_perplexity"))
            print(f"[{task.name}] step {step}/{cfg.max_steps} loss {loss_value:.4f} lr {last['lr']:.2e}{extra} "
                  f"({rate:.2f} steps/s)", file=sys.stderr, flush=True)
            with open(os.path.join(out_dir, "log.jsonl"), "a") as f:
                f.write(json.dumps(last) + "\n")
        if cfg.eval_every and step % cfg.eval_every == 0:
            ev = evaluate()
            if ev is not None:
                history["eval"].append((step, ev))
                if main:
                    print(f"[{task.name}] step {step} eval loss {ev:.4f}", file=sys.stderr, flush=True)
        if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
            read_losses()
            save()
    read_losses()
    if world > 1:
        dist.barrier()
    return {"step": step, **last, "history": history}
