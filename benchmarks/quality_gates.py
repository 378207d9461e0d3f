"""What the clean-clip stage costs: each score as × realtime on one core, and the whole chain.

    python -m benchmarks.quality_gates [--minutes 10] [--dnsmos_s 60]

On espeak-ng speech with pauses, looped to ``--minutes`` and encoded as a 44.1 kHz stereo MP3:

* Silero VAD as speechmill runs it (8 kHz resampling stream, 8 s chunks run 64 side by side)
  against the package's own ``get_speech_timestamps`` (one 32 ms frame a call, TorchScript, 16 kHz)
  on the same audio;
* the per-clip scores (speech ratio, bandwidth, clipping, SNR), over the clips' audio;
* DNSMOS P.835 scored in batches against ``speechmos.dnsmos.run`` one clip at a time, on
  ``--dnsmos_s`` seconds of clips;
* the whole non-ASR chain (decode → VAD → split → scores and gates → clip pack → ASR batches →
  shard) with the default gates against the same chain with energy alone and no gates, each in
  its own process pinned to one core, and its peak memory for the input and one three times as long.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks import scratch_dir
from benchmarks.segment_speed import base_recording, in_subprocess, make_input, pin_one_core


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def cpu_timed(fn, *args):
    """CPU seconds of this process (all its threads): onnxruntime may pin its own threads to other cores."""
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def decode(path: str, rate: int) -> np.ndarray:
    from audio.decoded import decode_to_scratch
    with decode_to_scratch(path, rate) as d:
        return d.read(0, d.n_samples)


def measure_scores(path: str) -> dict:
    """Per-score costs on one core (run in a pinned subprocess)."""
    import soxr

    from audio import clip_scores
    from audio.energy import frame_db
    from audio.vad import RATE, VadStream, on_grid, speech_mask
    pin_one_core()
    x = decode(path, 22050)
    audio_s = len(x) / 22050
    res = {"audio_s": audio_s}

    def vad_ours():
        rs = soxr.ResampleStream(22050, RATE, 1, dtype="float32", quality="LQ")
        v = VadStream(total_samples=int(len(x) * RATE / 22050))
        step = 22050 * 30
        for i in range(0, len(x), step):
            v.push(rs.resample_chunk(x[i:i + step].astype(np.float32) / 32768, last=i + step >= len(x)))
        return v.finish()
    vad_ours()  # session start-up is paid once per worker
    probs, t = timed(vad_ours)
    res["vad_x"] = audio_s / t
    db = frame_db(x, 220)
    mask = on_grid(speech_mask(probs), len(db), 0.01)
    clips = [(a, min(a + 22050 * 12, len(x))) for a in range(0, len(x) - 22050 * 4, 22050 * 12)]
    clip_s = sum(b - a for a, b in clips) / 22050
    for name, fn in (("speech_ratio", lambda a, b: clip_scores.speech_ratio(mask[a // 220:b // 220])),
                     ("bandwidth_hz", lambda a, b: clip_scores.bandwidth_hz(x[a:b].astype(np.float32) / 32768, 22050)),
                     ("clipping", lambda a, b: clip_scores.clipping(x[a:b])),
                     ("snr_db", lambda a, b: clip_scores.snr_db(db[a // 220:b // 220], mask[a // 220:b // 220]))):
        _, t = timed(lambda: [fn(a, b) for a, b in clips])
        res[f"{name}_x"] = clip_s / t
    res["clip_s"] = clip_s
    return res


def measure_dnsmos(path: str, seconds: float) -> dict:
    import soxr

    from audio import dnsmos
    pin_one_core()
    x = decode(path, 16000).astype(np.float32) / 32768
    clips = [x[a:a + 16000 * 10] for a in range(0, min(len(x), int(seconds * 16000)), 16000 * 10)]
    clip_s = sum(len(c) for c in clips) / 16000
    dnsmos.score(clips[:1])
    _, t_ours = cpu_timed(dnsmos.score, clips)
    _, t_batched = cpu_timed(lambda: dnsmos.score(clips, max_windows=32))
    from speechmos import dnsmos as reference
    reference.run(clips[0], 16000)
    _, t_ref = cpu_timed(lambda: [reference.run(c, 16000) for c in clips])
    del soxr
    return {"clip_s": clip_s, "ours_x": clip_s / t_ours, "batched_x": clip_s / t_batched, "reference_x": clip_s / t_ref}


def measure_packaged_vad(path: str, seconds: float) -> dict:
    """Silero's own helper (TorchScript, one frame per call), for comparison."""
    pin_one_core()
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad
    torch.set_num_threads(1)
    x = decode(path, 16000)[: int(seconds * 16000)].astype(np.float32) / 32768
    model = load_silero_vad()
    get_speech_timestamps(torch.from_numpy(x[:16000]), model)
    _, t = timed(get_speech_timestamps, torch.from_numpy(x), model)
    return {"x": len(x) / 16000 / t}


def measure_one(what: str, path: str) -> int:
    if what == "scores":
        res = measure_scores(path)
    elif what.startswith("dnsmos:"):
        res = measure_dnsmos(path, float(what.split(":")[1]))
    elif what.startswith("packaged_vad:"):
        res = measure_packaged_vad(path, float(what.split(":")[1]))
    else:
        from benchmarks.segment_speed import measure_one as chain_one
        return chain_one(what, path)
    print(json.dumps(res))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality_gates", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="input length (default 10)")
    p.add_argument("--dnsmos_s", type=float, default=60.0, help="seconds of clips DNSMOS is timed on (default 60)")
    p.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._one:
        return measure_one(*args._one)
    from run.console import quiet_libraries
    quiet_libraries()
    mod = "benchmarks.quality_gates"
    with scratch_dir("speechmill-gates-") as tmp:
        base = base_recording(os.path.join(tmp, "base.wav"))
        print("preparing inputs ...", file=sys.stderr)
        short = make_input(os.path.join(tmp, "short.mp3"), args.minutes, "mp3", base)
        long = make_input(os.path.join(tmp, "long.mp3"), args.minutes * 3, "mp3", base)
        print("timing the scores ...", file=sys.stderr)
        scores = in_subprocess("scores", short, mod)
        packaged = in_subprocess(f"packaged_vad:{min(120.0, args.minutes * 60)}", short, mod)
        dn = in_subprocess(f"dnsmos:{args.dnsmos_s}", short, mod)
        print("timing the chain ...", file=sys.stderr)
        on = in_subprocess("chain_nospeakers", short, mod)
        off = in_subprocess("chain_nogates", short, mod)
        full = in_subprocess("chain", short, mod)
        on_long = in_subprocess("chain", long, mod)

    print(f"\nclean-clip stage, one core, {args.minutes:g} min of speech (44.1 kHz stereo MP3)")
    print(f"{'what':48s} {'x realtime':>11s}")
    print(f"{'Silero VAD, speechmill (8 kHz, 64 chunks a call)':48s} {scores['vad_x']:11.0f}")
    print(f"{'Silero VAD, get_speech_timestamps (1 frame a call)':48s} {packaged['x']:11.0f}   "
          f"({scores['vad_x'] / packaged['x']:.1f}x slower than ours)")
    for name in ("speech_ratio", "bandwidth_hz", "clipping", "snr_db"):
        print(f"{'score ' + name:48s} {scores[name + '_x']:11.0f}")
    print(f"{'DNSMOS P.835, one window a call (CPU default)':48s} {dn['ours_x']:11.1f}   (per CPU second)")
    print(f"{'DNSMOS P.835, 32 windows a call (GPU default)':48s} {dn['batched_x']:11.1f}")
    print(f"{'DNSMOS P.835, speechmos.dnsmos.run per clip':48s} {dn['reference_x']:11.1f}   "
          f"(ours is {dn['ours_x'] / dn['reference_x']:.1f}x faster; it also runs P.808)")
    print("\nwhole non-ASR chain, one core")
    print(f"{'chain':34s} {'clips':>6s} {'x realtime':>11s} {'peak MB':>8s}")
    print(f"{'energy alone, no gates':34s} {off['clips']:6d} {off['x_realtime']:11.0f} {off['peak_rss_mb']:8.0f}")
    print(f"{'VAD + default gates (no DNSMOS)':34s} {on['clips']:6d} {on['x_realtime']:11.0f} {on['peak_rss_mb']:8.0f}")
    print(f"{'  + speaker turns (the default)':34s} {full['clips']:6d} {full['x_realtime']:11.0f} "
          f"{full['peak_rss_mb']:8.0f}")
    print(f"gates cost: {off['x_realtime'] / on['x_realtime']:.2f}x the time of the chain without them; "
          f"peak memory {args.minutes * 3:g} min vs {args.minutes:g} min: {on_long['peak_rss_mb'] / full['peak_rss_mb']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
