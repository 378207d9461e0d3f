"""Train TorToiSe's DVAE, then its autoregressive model, then its diffusion decoder, on speechmill shards.

    python -m pipelines.train_tortoise --stage dvae --shards 'corpus/shards/*.tar' --output runs/dvae
    python -m pipelines.train_tortoise --stage ar --shards 'corpus/shards/*.tar' --dvae runs/dvae/model.pth \\
        --output runs/ar [--config tiny|released|FILE] [--max_steps N] [--init_from CKPT] [--resume|--overwrite]
    python -m pipelines.train_tortoise --stage diffusion --shards 'corpus/shards/*.tar' --dvae runs/dvae/model.pth \\
        --ar runs/ar/model.pth --output runs/diffusion

An --output that already holds a trained model needs --resume (continue it) or --overwrite (start again).
Under ``torchrun --nproc_per_node N`` it trains with DDP (gloo on CPU, NCCL on GPU).
"""
from __future__ import annotations

import argparse
import os
import sys

from tts.models.autoregressive import ArConfig
from tts.models.autoregressive import tortoise_mismatches as ar_mismatches
from tts.models.diffusion import DiffusionConfig
from tts.models.dvae import DvaeConfig
from tts.training import cli
from tts.training.decoder_tasks import DiffusionTask
from tts.training.frozen import config_for, inherit_front_end
from tts.training.loop import train
from tts.training.tasks import ArTask, DvaeTask, load_config, load_dvae, save_config


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m pipelines.train_tortoise", __doc__)
    p.add_argument("--stage", required=True, choices=["dvae", "ar", "diffusion"], help="dvae (mels → codes), ar "
                   "(text + voice → codes; needs --dvae) or diffusion (autoregressive latents + voice → 24 kHz mels; "
                   "needs --dvae and --ar)")
    p.add_argument("--dvae", default=None, help="the trained DVAE's model.pth (its config.json beside it; "
                   "without one, the released DVAE config) — required for --stage ar and diffusion")
    p.add_argument("--ar", default=None, help="the trained autoregressive model.pth whose latents the diffusion "
                   "decoder reads (--stage diffusion); its tokenizer.json and the DVAE's mel_norms.pth are used "
                   "unless --tokenizer / --mel_norms are given")
    cli.add_common(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.stage == "ar" and not args.dvae:
        raise ValueError("--stage ar needs --dvae PATH/model.pth")
    if args.stage == "diffusion":
        if not (args.dvae and args.ar):
            raise ValueError("--stage diffusion needs --dvae PATH/model.pth and --ar PATH/model.pth")
        for path in (args.dvae, args.ar):
            if not os.path.exists(path):
                raise FileNotFoundError(f"no model at {path}")
        inherit_front_end(args, args.ar, (args.dvae, args.ar))
    shards, eval_shards, tok, norms = cli.prepare(args, reads_text=args.stage != "dvae")
    if args.stage == "diffusion":
        task, cfg = diffusion_task(args, shards, eval_shards, tok, norms)
    elif args.stage == "dvae":
        cfg = load_config(DvaeConfig, args.config)
        task = DvaeTask(cfg, shards, eval_shards, tok, cli.loader_config(args, 10 ** 6, 10 ** 6), norms)
    else:
        import torch
        num_codes = load_dvae(args.dvae, torch.device("cpu")).cfg.num_tokens
        cfg = load_config(ArConfig, args.config, num_codes=num_codes) if args.config in ("tiny", "released") \
            else load_config(ArConfig, args.config)
        if cfg.number_mel_codes != num_codes + 2:
            raise ValueError(f"the DVAE has {num_codes} codes but the model expects {cfg.number_mel_codes - 2}")
        cli.warn_if_not_tortoise_loadable(ar_mismatches(cfg), "UnifiedVoice")
        task = ArTask(cfg, args.dvae, shards, eval_shards, tok,
                      cli.loader_config(args, cfg.max_text_tokens, cfg.max_mel_tokens), norms)
        cli.use_code_cache(task, args)
    task.grad_checkpointing = args.grad_checkpointing
    save_config(cfg, args.output)
    result = train(task, cli.train_config(args), args.output, resume=args.resume, init_from=args.init_from)
    cli.report(task, result, args, next_step(args), conditioning=args.stage != "dvae")
    return result


def diffusion_task(args, shards, eval_shards, tok, norms):
    """The decoder's task; its config is sized to the autoregressive model's width and the DVAE's codes."""
    import torch
    num_codes = load_dvae(args.dvae, torch.device("cpu")).cfg.num_tokens
    ar_cfg = config_for("autoregressive", args.ar)
    cfg = load_config(DiffusionConfig, args.config, latent_dim=ar_cfg.model_dim, num_codes=num_codes) \
        if args.config in ("tiny", "released") else load_config(DiffusionConfig, args.config)
    if cfg.in_latent_channels != ar_cfg.model_dim:
        raise ValueError(f"the autoregressive model's latents are {ar_cfg.model_dim} wide but the decoder expects "
                         f"{cfg.in_latent_channels} (in_latent_channels)")
    return DiffusionTask(cfg, args.dvae, args.ar, shards, eval_shards, tok,
                         cli.loader_config(args, ar_cfg.max_text_tokens, ar_cfg.max_mel_tokens), norms), cfg


def next_step(args) -> str:
    """What the trained model is for: the DVAE feeds the later stages; the autoregressive model is an end product."""
    model = os.path.join(args.output, "model.pth")
    if args.stage == "dvae":
        return (f"train the autoregressive model with --stage ar --dvae {model} "
                f"(and CLVP with pipelines.train_clvp --dvae {model})")
    if args.stage == "diffusion":
        return (f"listen: python -m pipelines.synthesize --text 'Hello.' --dvae {args.dvae} --ar {args.ar} "
                f"--diffusion {model} --output samples (--config released: tortoise-tts's diffusion_decoder.pth)")
    return "use it as tortoise-tts's autoregressive.pth (--config released), or continue with --resume and more --max_steps"


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
