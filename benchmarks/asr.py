"""Transcription speed of the real wav2vec2-base and -large architectures (random weights).

    python -m benchmarks.asr [--archs base large] [--audio_s 60] [--device cpu|cuda]
                             [--dtypes fp32 bf16] [--batch_seconds 20 40] [--peak_tflops 989]

Defaults fit the device: on CPU the base architecture, 60 s of audio, fp32, 20 and 40 s batches
(about two minutes on two cores); on CUDA both architectures, 1800 s, bf16 and fp32, 80 to 1280 s
batches.

Each architecture is built locally from its published configuration (facebook/wav2vec2-base-960h:
group-norm feature extractor, no attention mask; facebook/wav2vec2-large-960h-lv60-self, the
family of the recipe's model: layer norm, attention mask) with random weights, saved, and loaded
through speechmill's own loader, so the timed path is the pipeline's. Speed does not depend on the
weights. Clips are 4–20 s of synthesised speech, grouped by length as the segment stage groups
them. Prints seconds of audio per second of wall time for a batch-of-one baseline and for each
batch size and dtype, the speed-up over the baseline, and the padding fraction.

Three more figures say what bounds the speed on a faster device:
* host ceiling: the work the host does per batch (padding the input, then turning the per-frame
  best path into text, words and confidences) timed alone on one thread, in seconds of audio per
  second. On CUDA the model's work overlaps it; transcription cannot go faster than this per
  worker process.
* Beam's share: the transcribe stage (``RunInference`` and the conversion to transcripts) on the
  DirectRunner with the tiny model, and the time per batch it spends outside the model handler's
  calls (the gaps between one call's end and the next one's start), which a GPU would spend
  waiting unless another batch is in flight.
* model FLOPs per second of audio (``torch.utils.flop_counter``) and the rate this run achieved;
  on CUDA, or with ``--peak_tflops``, also the compute roof that gives on a device of that peak
  (default on CUDA 989: an H100's or H200's dense bf16 figure).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

from asr.handler import CtcModelHandler
from benchmarks import scratch_dir
from run.console import beam_quiet_args, quiet_libraries

ARCHS = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
                 num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                  num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16),
}
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAONIHSRDLUMWCFGYPBVK'XJQZ")
CUDA_PEAK_TFLOPS = 989.0  # dense bf16 of an H100 SXM or H200
BEAM_BATCHES = 40  # AsrBatches through the transcribe stage when timing Beam's share


def build(arch: str, out_dir: str) -> str:
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(VOCAB)}, f)
    layer_norm = ARCHS[arch]["feat_extract_norm"] == "layer"
    cfg = Wav2Vec2Config(vocab_size=len(VOCAB), pad_token_id=0, conv_dim=(512,) * 7,
                         conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2), **ARCHS[arch])
    torch.manual_seed(0)
    Wav2Vec2ForCTC(cfg).save_pretrained(out_dir)
    tok = Wav2Vec2CTCTokenizer(os.path.join(out_dir, "vocab.json"), word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=layer_norm)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(out_dir)
    return out_dir


def make_clips(total_s: float, seed: int = 0):
    from audio.synth import SENTENCES, build_recording
    rec = build_recording(SENTENCES, [0.3] * (len(SENTENCES) - 1), sample_rate=16000, seed=seed)
    rng = np.random.default_rng(seed)
    clips, used = [], 0.0
    while used < total_s:
        d = float(rng.uniform(4, 20))
        start = int(rng.uniform(0, max(1, len(rec.audio) - d * 16000)))
        clip = rec.audio[start:start + int(d * 16000)]
        clips.append(np.tile(clip, int(np.ceil(d * 16000 / max(1, len(clip)))))[: int(d * 16000)])
        used += d
    return clips


def timed(transcriber, batches, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    transcriber.many(batches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def host_ceiling(transcriber, batches, repeats: int = 3, max_audio_s: float = 120.0) -> float:
    """Seconds of audio per second for the host's share of the work alone (best of ``repeats``),
    on the first batches up to ``max_audio_s``: the rate is per batch, and the model's result each
    batch needs has to be computed once first."""
    batches = _leading(batches, max_audio_s)
    audio_s = sum(len(c) for b in batches for c in b) / 16000
    plans = [transcriber.pieces(b) for b in batches]
    rows = [transcriber.collect(transcriber.launch(transcriber.prepare(p))) for p in plans]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b, p, r in zip(batches, plans, rows):
            transcriber.prepare(transcriber.pieces(b))
            transcriber.decode(len(b), p, r)
        best = min(best, time.perf_counter() - t0)
    return audio_s / best


def _leading(batches, max_audio_s: float):
    """The first batches whose audio adds up to at most ``max_audio_s`` (at least one)."""
    out, used = [], 0.0
    for b in batches:
        d = sum(len(c) for c in b) / 16000
        if out and used + d > max_audio_s:
            break
        out.append(b)
        used += d
    return out


def flops_per_audio_second(spec, seconds: float = 10.0) -> float:
    """Model FLOPs (multiply-add = 2) to transcribe one second of audio, from a ``seconds`` clip."""
    from torch.nn.utils import parametrize
    from torch.utils.flop_counter import FlopCounterMode

    from asr.model import load_ctc_model
    model = load_ctc_model(spec).model  # a copy of its own: weight-norm parametrisations are baked
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name)
    x = torch.zeros(1, int(seconds * 16000), device=spec.device, dtype=next(model.parameters()).dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / seconds


def ops_per_call(model, device: str) -> int:
    """Operators one model call dispatches: on a GPU each is a kernel launch the host pays for,
    whatever the batch size, so small batches are bound by this rather than by FLOPs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    x = torch.zeros(1, 16000, device=device, dtype=next(model.parameters()).dtype)
    with torch.inference_mode(), Count():
        model(x)
    return Count.n


_STAGE_INPUT: dict = {}
_CALLS: list = []  # per model handler call: (start, end, AsrBatches, clips, samples)


def _stage_input(key):
    return _STAGE_INPUT[key]


class _TimedHandler(CtcModelHandler):
    """Records when each model call starts and ends (in this module's list: the class is pickled by
    reference, so the DirectRunner's in-process worker appends to the same list)."""

    def run_inference(self, batch, model, inference_args=None):
        t0 = time.perf_counter()
        out = super().run_inference(batch, model, inference_args)
        _CALLS.append((t0, time.perf_counter(), len(batch), sum(len(b) for b in batch),
                       sum(b.total_samples for b in batch)))
        return out


def steady_state(calls):
    """(seconds outside the handler's calls, seconds in all, AsrBatches, clips, audio seconds)
    after the first call, so that pipeline start-up and model loading are left out. The time
    outside is the sum of the gaps between one call's end and the next one's start: calls run one
    after another on the DirectRunner's thread, and a gap is never negative."""
    calls = sorted(calls)
    later = calls[1:]
    gaps = sum(max(0.0, nxt[0] - prev[1]) for prev, nxt in zip(calls, later))
    span = calls[-1][1] - calls[0][1]
    return (gaps, span, sum(c[2] for c in later), sum(c[3] for c in later),
            sum(c[4] for c in later) / 16000)


def beam_overhead(clips, batch_s: float, tmp: str):
    """(ms per batch the transcribe stage spends outside the model handler's calls, the stage's
    x realtime, the same ms per clip, batches timed), over about ``BEAM_BATCHES`` batches of the
    tiny model."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    # the importable module, not ``__main__``: Beam pickles its functions by reference, so the
    # pipeline carries names, not the audio, and the worker appends to this module's list
    import benchmarks.asr as here
    from asr.contract import plan_batches
    from asr.model import AsrModelSpec
    from asr.tiny import build_tiny_model
    from schemas.records import AsrBatch, Segment, Source
    from transforms.transcribe import Transcribe
    os.environ.setdefault("SPEECHMILL_PROGRESS_S", "3600")  # the stage's own progress lines mean nothing here
    spec = AsrModelSpec(model=build_tiny_model(os.path.join(tmp, "tiny")))
    groups = plan_batches([len(c) / 16000 for c in clips], batch_s, 10_000)
    copies = max(2, -(-BEAM_BATCHES // len(groups)))
    for copy in range(copies):
        src = Source(f"file:///bench-{copy}.wav", f"bench-{copy}")
        for n, g in enumerate(groups):
            here._STAGE_INPUT[(copy, n)] = AsrBatch(
                tuple(Segment(f"bench-{copy}_{i:09d}", src, 0.0, len(clips[i]) / 16000, 16000, "p", 0, 1) for i in g),
                tuple(clips[i] for i in g))

    def run(n_copies: int):
        # only keys enter the pipeline: the audio is looked up in this process (the DirectRunner's
        # in-process worker), as the segment stage makes it in the same fused stage
        here._CALLS.clear()
        opts = PipelineOptions(beam_quiet_args(["--runner=DirectRunner"]))
        with beam.Pipeline(options=opts) as p:
            out = (p | beam.Create([(c, n) for c in range(n_copies) for n in range(len(groups))], reshuffle=False)
                   | beam.Map(here._stage_input) | Transcribe(spec, handler_cls=here._TimedHandler))
            _ = out["transcripts"] | beam.combiners.Count.Globally()
        return list(here._CALLS)

    try:
        with warnings.catch_warnings():
            # BatchElements fits its batch-size model to a handful of timings and says so
            warnings.filterwarnings("ignore", message="Polyfit may be poorly conditioned")
            run(1)  # warm imports
            outside, span, batches, n_clips, audio_s = steady_state(run(copies))
    finally:
        here._STAGE_INPUT.clear()
    return 1000 * outside / batches, audio_s / span, 1000 * outside / n_clips, batches


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.asr", description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=None, choices=sorted(ARCHS),
                   help="default base on CPU; base large on CUDA")
    p.add_argument("--audio_s", type=float, default=None, help="seconds of audio per measurement "
                   "(default 60 on CPU, 1800 on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", nargs="+", default=None, help="default fp32 on CPU; bf16 fp32 on CUDA")
    p.add_argument("--batch_seconds", type=float, nargs="+", default=None,
                   help="batch sizes to sweep, in seconds of audio (default 20 40 on CPU; 80..1280 on CUDA)")
    p.add_argument("--skip_baseline", action="store_true")
    p.add_argument("--skip_beam", action="store_true", help="skip the transcribe stage's overhead measurement")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help=f"dense peak of the device to state the compute roof for (default on CUDA "
                        f"{CUDA_PEAK_TFLOPS:g}: H100/H200 bf16; on CPU no roof unless given)")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.archs = args.archs or (["base", "large"] if cuda else ["base"])
    args.audio_s = args.audio_s or (1800.0 if cuda else 60.0)
    args.dtypes = args.dtypes or (["bf16", "fp32"] if cuda else ["fp32"])
    args.batch_seconds = args.batch_seconds or ([80, 160, 320, 640, 1280] if cuda else [20, 40])
    if args.peak_tflops is None and cuda:
        args.peak_tflops = CUDA_PEAK_TFLOPS
    return args


def beam_line(clips, batch_s: float, tmp: str) -> str:
    per_batch, stage, per_clip, n = beam_overhead(clips, batch_s, tmp)
    return (f"Beam transcribe stage (tiny model, {n} batches of {batch_s:g} s): {stage:.0f}x realtime; outside "
            f"the model handler it spends {per_batch:.1f} ms per batch, {per_clip:.2f} ms per clip")


def measure(arch: str, dtype: str, path: str, clips, args):
    """Rows of the speed table and one row of the bounds table for one architecture and dtype."""
    from asr.contract import plan_batches
    from asr.model import AsrModelSpec, load_ctc_model
    from asr.transcriber import Transcriber

    total = sum(len(c) for c in clips) / 16000
    spec = AsrModelSpec(model=path, device=args.device, dtype=dtype)
    m = load_ctc_model(spec)
    Transcriber(m).many([clips[:2]])  # first-call costs (kernels, allocator) outside the timing
    rows, base_rate = [], None
    if not args.skip_baseline:
        t = Transcriber(m)
        base_rate = total / timed(t, [[c] for c in clips], args.device)
        rows.append((arch, dtype, "1 clip", base_rate, 1.0, t.stats.padding_fraction))
        print(f"  {arch} {dtype} batch of one: {base_rate:.1f}x realtime", file=sys.stderr)
    best = (0.0, None)
    for bs in args.batch_seconds:
        groups = plan_batches([len(c) / 16000 for c in clips], bs, 10_000)
        t = Transcriber(m)
        rate = total / timed(t, [[clips[i] for i in g] for g in groups], args.device)
        rows.append((arch, dtype, f"{bs:g} s", rate, rate / base_rate if base_rate else None,
                     t.stats.padding_fraction))
        print(f"  {arch} {dtype} {bs:g} s batches: {rate:.1f}x realtime", file=sys.stderr)
        best = max(best, (rate, groups), key=lambda r: r[0])
    host = host_ceiling(Transcriber(m), [[clips[i] for i in g] for g in best[1]])
    bound = (arch, dtype, flops_per_audio_second(spec), best[0], host, ops_per_call(m.model, args.device))
    del m
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows, bound


def print_tables(rows, bounds, beam: str, total: float, args) -> None:
    print(f"\nwav2vec2 CTC transcription on {args.device} ({total:.0f} s of 4-20 s clips, random weights)")
    print(f"{'arch':6s} {'dtype':5s} {'batch':>8s} {'x realtime':>11s} {'vs 1 clip':>10s} {'padding':>8s}")
    for arch, dtype, batch, rate, ratio, pad in rows:
        vs = f"{ratio:9.2f}x" if ratio is not None else f"{'n/a':>10s}"
        print(f"{arch:6s} {dtype:5s} {batch:>8s} {rate:11.1f} {vs} {pad:8.1%}")
    if beam:
        print("\n" + beam)
    roof = args.peak_tflops is not None
    print("\nwhat bounds it (best batch size" + (f"; roof at {args.peak_tflops:g} TFLOP/s)" if roof else ")"))
    print(f"{'arch':6s} {'dtype':5s} {'GFLOP/audio s':>14s} {'achieved TFLOP/s':>17s}"
          + (f" {'roof x rt':>10s}" if roof else "") + f" {'host ceiling x rt':>18s} {'ops per call':>13s}")
    for arch, dtype, flops, rate, host, ops in bounds:
        print(f"{arch:6s} {dtype:5s} {flops / 1e9:14.1f} {flops * rate / 1e12:17.3f}"
              + (f" {args.peak_tflops * 1e12 / flops:10.0f}" if roof else "") + f" {host:18.0f} {ops:13d}")


def main(argv=None) -> int:
    quiet_libraries()
    args = parse_args(argv)
    clips = make_clips(args.audio_s)
    total = sum(len(c) for c in clips) / 16000
    print(f"{len(clips)} clips, {total:.0f} s of audio, device {args.device}, torch threads "
          f"{torch.get_num_threads()}", file=sys.stderr)
    with scratch_dir("speechmill-asr-bench-") as tmp:
        # Beam's share first: before the large models and the FLOP counter have touched the process
        beam = "" if args.skip_beam else beam_line(clips, args.batch_seconds[0], tmp)
        rows, bounds = [], []
        for arch in args.archs:
            path = build(arch, os.path.join(tmp, arch))
            for dtype in args.dtypes:
                r, b = measure(arch, dtype, path, clips, args)
                rows += r
                bounds.append(b)
    print_tables(rows, bounds, beam, total, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
