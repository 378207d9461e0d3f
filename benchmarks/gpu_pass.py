"""One pass over every model speechmill runs, on a GPU (or, with ``--tiny``, on a CPU in seconds).

    python -m benchmarks.gpu_pass                # on a CUDA machine: under 8 minutes
    python -m benchmarks.gpu_pass --tiny         # anywhere: tiny sizes, a few seconds of audio

It prints one table:
  * CTC ASR, wav2vec2 base and large configs with random weights (built locally with transformers,
    so nothing is downloaded), bf16 on a GPU, at several batch sizes: x realtime and MFU (FLOPs
    counted by torch's FlopCounterMode over the compute roof of the card);
  * Whisper tiny.en (``builtin:whisper-tiny.en``, CTranslate2) fp16 on a GPU: x realtime;
  * Silero VAD as a build runs it (``audio.vad``: torch on a GPU) on the device, the voice encoder
    (speakers.encoder, float32 and bfloat16) on the device and DNSMOS (onnxruntime, CUDA provider where installed);
  * an end-to-end build (``pipelines.build_corpus``, in-memory DirectRunner) of ``--build_minutes``
    of speech (default 60) with the ASR step on the device: x realtime of the whole command.
Each row that fails prints its error and the command exits 1. ``--tiny`` is what CI runs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable, List, Tuple

import numpy as np
import soundfile as sf

from benchmarks import scratch_dir

RATE = 16000
SPEECH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                      "real_speech", "lj_1.wav")
# dense bf16 tensor-core peak (FLOP/s) by card name; MFU is printed only for a card listed here
ROOFS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "L40": 181e12}


def roof(device: str):
    import torch
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in ROOFS.items() if k in name), None)


def sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def ctc_config(size: str):
    from transformers import Wav2Vec2Config
    if size == "base":
        return Wav2Vec2Config(vocab_size=32)
    if size == "large":
        return Wav2Vec2Config(vocab_size=32, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, feat_extract_norm="layer", do_stable_layer_norm=True)
    return Wav2Vec2Config(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,  # tiny
                          intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=4)


def ctc_rows(device: str, sizes: List[str], batches: List[int], seconds: float, repeats: int) -> List[Tuple]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Wav2Vec2ForCTC
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    peak, rows = roof(device), []
    for size in sizes:
        torch.manual_seed(0)
        model = Wav2Vec2ForCTC(ctc_config(size)).to(device=device, dtype=dtype).eval()
        for batch in batches:
            x = torch.randn(batch, int(seconds * RATE), device=device, dtype=dtype)
            with torch.no_grad():  # (FlopCounterMode fails on weight_norm's parametrization in inference mode)
                with FlopCounterMode(display=False) as counter:
                    model(x)
                flops = counter.get_total_flops()
                wall = timed(lambda m=model, x=x: m(x), device, repeats)
            mfu = f"{flops / wall / peak:.1%}" if peak else "-"
            rows.append((f"CTC {size} {str(dtype).split('.')[-1]}", f"batch {batch} x {seconds:g} s",
                         rate(batch * seconds / wall), mfu))
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def whisper_rows(device: str, audio: np.ndarray, repeats: int) -> List[Tuple]:
    from faster_whisper import WhisperModel

    from asr.builtin import locate
    compute = "float16" if device.startswith("cuda") else "int8"
    model = WhisperModel(locate("builtin:whisper-tiny.en"), device="cuda" if device.startswith("cuda") else "cpu",
                         compute_type=compute, cpu_threads=1)
    wall = timed(lambda: list(model.transcribe(audio, beam_size=1, language="en")[0]), device, repeats)
    return [(f"Whisper tiny.en {compute}", f"{len(audio) / RATE:.0f} s", rate(len(audio) / RATE / wall), "-")]


def vad_rows(device: str, audio: np.ndarray, repeats: int) -> List[Tuple]:
    from audio import vad
    from audio.resample import resample
    x = resample(audio, RATE, vad.RATE)
    streams = vad.BATCH if device.startswith("cuda") else 4
    piece = len(x) // streams // vad.FRAME * vad.FRAME
    chunks = np.ascontiguousarray(x[:piece * streams].reshape(streams, piece))
    wall = timed(lambda: vad.run_chunks(chunks, device), device, repeats)
    return [(f"Silero VAD ({vad.engine_for(device)}, as a build runs it)", f"{streams} streams x {piece / vad.RATE:.0f} s",
             rate(piece * streams / vad.RATE / wall), "-")]


def encoder_rows(device: str, audio: np.ndarray, repeats: int) -> List[Tuple]:
    from speakers.encoder import embed_partials, partials
    pieces = partials(audio)
    rows = []
    for precision in ("float32", "bfloat16"):  # "auto" is float32 on a GPU: this row says whether it should be
        wall = timed(lambda: embed_partials(pieces, device=device, precision=precision), device, repeats)
        rows.append((f"voice encoder ({precision})", f"{len(pieces)} pieces", rate(len(audio) / RATE / wall), "-"))
    return rows


def dnsmos_rows(device: str, audio: np.ndarray, repeats: int) -> List[Tuple]:
    from audio import dnsmos
    clips = [audio[i:i + 10 * RATE] for i in range(0, len(audio), 10 * RATE)]
    wall = timed(lambda: dnsmos.score(clips, device=device), device, repeats)
    where = "CUDA" if device.startswith("cuda") and dnsmos.cuda_available() else "CPU"
    return [(f"DNSMOS ({where} provider)", f"{len(clips)} clips", rate(len(audio) / RATE / wall), "-")]


def start_build(device: str, audio: np.ndarray, minutes: float, size: str, tmp: str) -> Callable[[], List[Tuple]]:
    """Start the end-to-end build (a ``pipelines.build_corpus`` process); the returned call waits for it
    and gives its row."""
    from asr.tiny import build_tiny_model
    hidden, layers = {"base": (768, 12), "tiny": (32, 2)}[size]
    model = build_tiny_model(os.path.join(tmp, f"ctc-{size}"), hidden=hidden, layers=layers)
    wav = os.path.join(tmp, "build.wav")
    sf.write(wav, np.resize(audio, int(minutes * 60 * RATE)), RATE, subtype="PCM_16")
    sources = os.path.join(tmp, "sources.txt")
    with open(sources, "w") as f:
        f.write(wav + "\n")
    cmd = [sys.executable, "-m", "pipelines.build_corpus", "--sources", sources, "--output",
           os.path.join(tmp, "corpus"), "--asr_model", model, "--asr_device", device, "--min_confidence", "0",
           "--min_chars_per_s", "0", "--max_chars_per_s", "1000"]
    t0 = time.perf_counter()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)

    def finish() -> List[Tuple]:
        with err:
            code = proc.wait()
            wall = time.perf_counter() - t0
            if code != 0:
                err.seek(0)
                raise RuntimeError(f"the build failed:\n{err.read().decode(errors='replace')[-2000:]}")
        return [(f"end-to-end build, CTC {size} on {device}", f"{minutes:g} min", rate(minutes * 60 / wall), "-")]
    return finish


def build_rows(device: str, audio: np.ndarray, minutes: float, size: str, tmp: str) -> List[Tuple]:
    return start_build(device, audio, minutes, size, tmp)()


def started(start: Callable[[], Callable[[], List[Tuple]]]) -> Callable[[], List[Tuple]]:
    """``start()``, or, where starting failed, a step that raises that error when its row is due."""
    try:
        return start()
    except Exception as e:  # reported as the step's failure, in its place in the table
        error = e

        def failed():
            raise error
        return failed


def rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_pass", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda where present)")
    p.add_argument("--tiny", action="store_true", help="tiny models and a few seconds of audio (CI, any CPU)")
    p.add_argument("--build_minutes", type=float, default=None, help="audio for the end-to-end build "
                   "(default 60; 0.3 with --tiny)")
    p.add_argument("--speech", default=SPEECH, help="a speech recording, looped to the lengths needed")
    args = p.parse_args(argv)
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        sizes, batches, seconds, repeats, clip_s, build_size = ["tiny"], [1, 2], 2.0, 1, 12.0, "tiny"
    else:
        sizes, batches, seconds, repeats, clip_s, build_size = ["base", "large"], [1, 8, 32], 20.0, 3, 120.0, "base"
    minutes = args.build_minutes if args.build_minutes is not None else (0.3 if args.tiny else 60.0)
    speech, rate = sf.read(args.speech, dtype="float32")
    if speech.ndim > 1:
        speech = speech.mean(axis=1)
    if rate != RATE:
        from audio.resample import resample
        speech = resample(speech, rate, RATE)
    audio = np.resize(speech.astype(np.float32), int(clip_s * RATE))
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else ""),
          file=sys.stderr)
    rows, failed = [], 0
    with scratch_dir("speechmill-gpu-pass-") as tmp:
        # --tiny: the build runs beside the other rows (a CPU's numbers there only show that each row works);
        # on a GPU it runs alone, last, so that it does not share the card with the rows it is compared to
        build = (started(lambda: start_build(device, audio, minutes, build_size, tmp)) if args.tiny
                 else lambda: build_rows(device, audio, minutes, build_size, tmp))
        steps = [("CTC ASR", lambda: ctc_rows(device, sizes, batches, seconds, repeats)),
                 ("Whisper", lambda: whisper_rows(device, audio, repeats)),
                 ("VAD", lambda: vad_rows(device, audio, repeats)),
                 ("voice encoder", lambda: encoder_rows(device, audio, repeats)),
                 ("DNSMOS", lambda: dnsmos_rows(device, audio, repeats)),
                 ("build", build)]
        for name, step in steps:
            t0 = time.perf_counter()
            try:
                rows += step()
            except Exception as e:  # one failing model must not hide the others' numbers
                failed += 1
                rows.append((name, "FAILED", type(e).__name__, "-"))
                traceback.print_exc()
            print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(f"\n{'what':44s} {'input':>22s} {'x realtime':>12s} {'MFU':>7s}")
    for r in rows:
        print(f"{r[0]:44s} {r[1]:>22s} {r[2]:>12s} {r[3]:>7s}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
