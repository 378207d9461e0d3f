"""Training throughput of the autoregressive model (and the DVAE and CLVP): samples/s, tokens/s.

    python -m benchmarks.train_speed [--config tiny|released] [--device cpu|cuda] [--batch_size 8]
                                     [--steps 10] [--seconds 10] [--peak_tflops 989]

Batches have the shapes real ones have (``--seconds`` of 22 050 Hz audio → DVAE codes, ~15
characters per second of text, a 6 s conditioning clip); mel and codes are computed on the device
as in training. Prints steps/s, samples/s, tokens/s (text + mel tokens through the GPT) and, for
the autoregressive model, the model FLOPs utilisation against ``--peak_tflops`` (6 × parameters ×
tokens per second; H200 bf16 dense ≈ 989 TFLOP/s), on CUDA only. The autoregressive model and
CLVP are measured twice: with the DVAE coding each batch (as without a code cache) and with codes
read from ``tts.training.tasks.CodeCache`` files written for the same clips (``+cache`` rows), and the
ratio of the two is printed. CLVP steps read each clip alone and padded to tortoise-tts's 500
scoring codes, as the trainer does. The defaults (tiny models) take seconds on a CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import tarfile
import time

import soundfile as sf
import torch

from benchmarks import scratch_dir
from run.console import quiet_libraries
from tts.frontends.mel import SAMPLE_RATE, MelSpectrogram
from tts.models.autoregressive import ArConfig, UnifiedVoice
from tts.models.clvp import CLVP, ClvpConfig, training_loss
from tts.models.dvae import DiscreteVAE, DvaeConfig
from tts.training.data import LoaderConfig, ShardLoader
from tts.training.loop import atomic_save
from tts.training.tasks import CodeCache


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", choices=["tiny", "released"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0, help="audio per sample")
    p.add_argument("--peak_tflops", type=float, default=989.0, help="the device's peak for MFU (H200 bf16: 989)")
    args = p.parse_args(argv)
    quiet_libraries()
    with scratch_dir("speechmill-train-bench-") as tmp:
        return measure(args, tmp)


def cached_codes(dvae: DiscreteVAE, wav: torch.Tensor, folder: str) -> torch.Tensor:
    """The batch's clips written as a shard, coded once by a CodeCache, and read back as a loader batch does."""
    shard = os.path.join(folder, "bench-000000.tar")
    with tarfile.open(shard, "w") as tar:
        for i, clip in enumerate(wav.cpu().numpy()):
            flac = io.BytesIO()
            sf.write(flac, clip, SAMPLE_RATE, format="FLAC")
            meta = json.dumps({"speaker": "s"}).encode()
            for ext, data in (("flac", flac.getvalue()), ("txt", b"a sentence"), ("json", meta)):
                info = tarfile.TarInfo(f"clip{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    dvae_path = os.path.join(folder, "dvae.pth")
    atomic_save(dvae.state_dict(), dvae_path)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(dvae.cfg), f)
    cache = CodeCache(dvae_path, None)
    cache.build([shard], wav.device)
    batch = next(iter(ShardLoader([shard], lambda t: [5], LoaderConfig(batch_size=wav.shape[0], shuffle_buffer=1),
                                  epochs=1, codes=cache)))
    return batch["codes"].to(wav.device)


def measure(args, tmp: str) -> int:
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dvae = DiscreteVAE(DvaeConfig.preset(args.config)).to(dev)
    codes_n = dvae.cfg.num_tokens
    models = {"ar": UnifiedVoice(ArConfig.preset(args.config, num_codes=codes_n)).to(dev),
              "clvp": CLVP(ClvpConfig.preset(args.config, num_codes=codes_n)).to(dev), "dvae": dvae}
    mel = MelSpectrogram().to(dev)
    b, n = args.batch_size, int(args.seconds * 22050) // 1024 * 1024
    wav = (torch.randn(b, n, device=dev) * 0.1).clamp(-1, 1)
    cond = torch.randn(b, 132300, device=dev) * 0.1
    text_len = int(args.seconds * 15 / 2.5)  # ~15 chars/s, ~2.5 chars per BPE token
    text = torch.randint(3, 255, (b, text_len), device=dev)
    lengths = torch.full((b,), text_len, device=dev)
    wav_lengths = torch.full((b,), n, device=dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    frozen = DiscreteVAE(dvae.cfg).to(dev).eval()
    cached = cached_codes(frozen, wav, tmp)
    print(f"{args.config} models on {dev}, batch {b} x {args.seconds:g} s, torch threads {torch.get_num_threads()}")
    print(f"{'model':10s} {'params':>12s} {'steps/s':>8s} {'samples/s':>10s} {'tokens/s':>10s} {'MFU':>7s}")
    rates = {}
    for name, use_cache in (("ar", False), ("ar", True), ("clvp", False), ("clvp", True), ("dvae", False)):
        model = models[name]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            with autocast:
                if name == "dvae":
                    recon, commit, _ = model(mel(wav))
                    loss = recon + 0.25 * commit
                else:
                    codes = cached if use_cache else frozen.get_codebook_indices(mel(wav))
                    if name == "ar":
                        lt, lm = model(mel(cond), text, lengths, codes, wav_lengths)
                        loss = 0.01 * lt + lm
                    else:
                        n_codes = (wav_lengths // 1024 + 1).clamp(max=codes.shape[1])
                        loss = training_loss(model, text, lengths, codes, n_codes)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()  # warm-up
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / args.steps
        params = sum(p.numel() for p in model.parameters())
        tokens = b * (text_len + 2 + n // 1024 + 3) if name == "ar" else b * (text_len + n // 1024)
        mfu = f"{6 * params * tokens / wall / (args.peak_tflops * 1e12):7.2%}" if name == "ar" and cuda else "    n/a"
        label = name + ("+cache" if use_cache else "")
        rates[label] = tokens / wall
        print(f"{label:10s} {params:12,d} {1 / wall:8.2f} {b / wall:10.1f} {tokens / wall:10.0f} {mfu}")
    for name in ("ar", "clvp"):
        print(f"{name}: tokens/s with cached codes / with the DVAE every step = {rates[name + '+cache'] / rates[name]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
