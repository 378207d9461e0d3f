"""Speed and memory of the non-ASR stages (decode, split, clip packs, ASR-rate audio, shard write).

    python -m benchmarks.segment_speed [--minutes 10] [--long_minutes 120] [--format mp3] [--cache DIR]

Each measurement runs in its own process pinned to one CPU core (ffmpeg included); it prints:
  * speechmill's non-ASR chain (with its defaults: VAD and the audio gates) on a long recording, as
    seconds of audio per second of wall time;
  * pydub's ``split_on_silence`` (the recipe's splitter) on the same file, and the ratio;
  * peak memory (RSS) of the chain for the long input against the short one.
The inputs are espeak-ng speech with pauses, looped and encoded like a podcast download (about
125 MB for the defaults), in a temporary directory removed afterwards unless ``--cache`` names one
to keep them in. Defaults take about two minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from audio.ffmpeg import ffmpeg_binary
from audio.silence import SplitParams
from audio.synth import SENTENCES, build_recording
from benchmarks import scratch_dir
from run.console import quiet_libraries


def make_input(path: str, minutes: float, fmt: str, base_wav: str) -> str:
    """Loop ``base_wav`` to ``minutes`` and encode it (44.1 kHz stereo, like a typical download)."""
    if os.path.exists(path):
        return path
    codec = {"mp3": ["-c:a", "libmp3lame", "-b:a", "128k"], "flac": ["-c:a", "flac"],
             "wav": ["-c:a", "pcm_s16le"], "m4a": ["-c:a", "aac", "-b:a", "128k"]}[fmt]
    subprocess.run([ffmpeg_binary(), "-nostdin", "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", base_wav,
                    "-t", str(minutes * 60), "-ac", "2", "-ar", "44100", *codec, path], check=True)
    return path


def base_recording(path: str) -> str:
    if not os.path.exists(path):
        texts = SENTENCES * 2
        pauses = [0.25, 0.8, 0.3, 1.2, 0.2, 0.7, 0.4, 2.0, 0.3, 0.9, 0.25] * 3
        build_recording(texts, pauses[: len(texts) - 1], seed=7).write(path)
    return path


def pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def chain_config(work: str, gates: bool = True, speakers: bool = True, precision: str = "auto"):
    """The segment stage's settings: the defaults (VAD, audio gates, speaker turns, the voice encoder
    at ``precision``), the same without speaker turns, or energy alone with no gates and no speakers."""
    from speakers.turns import TurnParams
    from transforms.quality import AudioGates
    from transforms.segment import SegmentConfig
    if gates:
        return SegmentConfig(pack_dir=os.path.join(work, "packs"), split=SplitParams(), speakers=speakers,
                             turns=TurnParams(precision=precision))
    return SegmentConfig(pack_dir=os.path.join(work, "packs"), split=SplitParams(), vad=False,
                         gates=AudioGates(None, None, None, None, None), speakers=False)


def run_chain(path: str, work: str, gates: bool = True, speakers: bool = True, precision: str = "auto") -> dict:
    """The segment stage (decode → split → clip pack → ASR-rate batches) and the shard writer."""
    from corpus.shards import write_shard
    from schemas.keys import source_id_for_uri
    from schemas.records import AsrBatch, AudioFile, Source, SourceResult, Transcript
    from transforms.segment import segment_source

    uri = "file://" + os.path.abspath(path)
    src = Source(uri, source_id_for_uri(uri))
    cfg = chain_config(work, gates, speakers, precision)
    t0 = time.perf_counter()
    segments, duration = [], 0.0
    for out in segment_source(AudioFile(src, path, os.path.getsize(path)), cfg):
        if isinstance(out, AsrBatch):
            segments += out.segments
        elif isinstance(out, SourceResult):
            duration = out.duration_s
    t_segment = time.perf_counter() - t0
    transcripts = [Transcript(s, "text", 1.0, "none") for s in segments]
    for i in range(0, len(transcripts), 1000):
        write_shard(os.path.join(work, "shards"), os.path.join(work, "manifest"), f"b-{i // 1000:06d}",
                    transcripts[i:i + 1000])
    t_total = time.perf_counter() - t0
    return {"audio_s": duration, "clips": len(segments), "segment_s": t_segment, "total_s": t_total,
            "x_realtime": duration / t_total, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_pydub(path: str) -> dict:
    from pydub import AudioSegment
    from pydub.silence import split_on_silence
    t0 = time.perf_counter()
    audio = AudioSegment.from_file(path)
    chunks = split_on_silence(audio, min_silence_len=600, silence_thresh=-40, keep_silence=200)
    wall = time.perf_counter() - t0
    return {"audio_s": len(audio) / 1000, "clips": len(chunks), "total_s": wall, "x_realtime": len(audio) / 1000 / wall}


def in_subprocess(what: str, path: str, module: str = "benchmarks.segment_speed") -> dict:
    """Run one measurement in a fresh process so its peak RSS is its own."""
    out = subprocess.run([sys.executable, "-m", module, "--_one", what, path],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the {what} measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.segment_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="short input length (default 10)")
    p.add_argument("--long_minutes", type=float, default=120.0, help="long input length (default 120)")
    p.add_argument("--format", default="mp3", choices=["mp3", "flac", "wav", "m4a"], help="input encoding")
    p.add_argument("--cache", default=None, help="keep the generated inputs here between runs "
                   "(default: a temporary directory, removed afterwards)")
    p.add_argument("--skip_pydub", action="store_true", help="skip the pydub baseline")
    p.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._one:
        return measure_one(*args._one)
    with scratch_dir("speechmill-bench-") as tmp:
        cache = args.cache or tmp
        os.makedirs(cache, exist_ok=True)
        return compare(args, cache)


def measure_one(what: str, path: str) -> int:
    """One measurement on one core, printed as a JSON line for the parent."""
    pin_one_core()
    with tempfile.TemporaryDirectory() as work:
        if what.startswith("chain"):  # warm up once (library init, first-call costs), as a worker would
            import torch
            torch.set_num_threads(1)
            opts = dict(gates=what != "chain_nogates", speakers=what == "chain")
            run_chain(os.path.join(os.path.dirname(path), "base.wav"), os.path.join(work, "warm"), **opts)
            res = run_chain(path, work, **opts)
        else:
            res = run_pydub(path)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))
    return 0


def compare(args, cache: str) -> int:
    # here, not in the measured processes: it imports transformers, which their peak memory would count
    quiet_libraries()
    base = base_recording(os.path.join(cache, "base.wav"))
    print(f"preparing inputs in {cache} ...", file=sys.stderr)
    short = make_input(os.path.join(cache, f"short-{args.minutes:g}m.{args.format}"), args.minutes, args.format, base)
    long = make_input(os.path.join(cache, f"long-{args.long_minutes:g}m.{args.format}"), args.long_minutes,
                      args.format, base)

    rows = []
    s = in_subprocess("chain", short)
    rows.append(("speechmill chain", f"{args.minutes:g} min", s))
    if not args.skip_pydub:
        b = in_subprocess("pydub", short)
        rows.append(("pydub split_on_silence", f"{args.minutes:g} min", b))
    l = in_subprocess("chain", long)
    rows.append(("speechmill chain", f"{args.long_minutes:g} min", l))

    print(f"\nnon-ASR stages, one core, {args.format} 44.1 kHz stereo input")
    print(f"{'what':26s} {'input':>8s} {'clips':>6s} {'wall s':>8s} {'x realtime':>11s} {'peak MB':>8s}")
    for name, size, r in rows:
        print(f"{name:26s} {size:>8s} {r['clips']:6d} {r['total_s']:8.2f} {r['x_realtime']:11.0f} {r['peak_rss_mb']:8.0f}")
    if not args.skip_pydub:
        print(f"\nspeed vs pydub on the same {args.minutes:g} min file: {s['x_realtime'] / b['x_realtime']:.1f}x")
    print(f"peak memory {args.long_minutes:g} min vs {args.minutes:g} min: {l['peak_rss_mb'] / s['peak_rss_mb']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
