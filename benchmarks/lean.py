"""The non-ASR chain against the recipe's splitter and a naive stack, measured as whole processes.

    python -m benchmarks.lean [--speech DIR] [--minutes 10] [--repeats 2] [--no_load] [--rss]

Every measurement is a fresh ``python`` process (imports and model loads included) whose CPU-seconds
(user + system, from ``wait4``: the process and every child it waited for) and peak RSS the parent
reads; the runs of one round are paired (one after the other, same input, same machine state).

  defaults       speechmill's segment stage with its defaults (Silero VAD + energy, audio gates,
                 speaker turns) and the shard writer (FLAC clips in WebDataset tars + Parquet rows)
  defaults-float32
                 the defaults with ``--speaker_precision float32`` (what the defaults are on a CPU
                 without native bfloat16)
  speakers-off   the same with ``--speakers off``
  energy-only    ``--vad energy``, no gates, no speakers
  pydub          the recipe: ``split_on_silence(min_silence_len=600, silence_thresh=-40)``, WAV export
  naive          Silero's ``get_speech_timestamps`` + Resemblyzer's ``embed_utterance`` per segment +
                 ``soundfile`` writes

Start-up is everything before the first audio is read: imports and model loads (the VAD's session
and the voice encoder for speechmill, Silero and Resemblyzer for the naive stack).

Each runs with one compute thread (``OMP_NUM_THREADS=1``, as every speechmill runner does), idle and
then under a parallel CPU load (one busy process per core). The input is real speech: every clip
under ``--speech`` (default /work/realdata/voices) joined with 0.8 s pauses and looped to
``--minutes``. With ``--rss`` it also builds a whole corpus (``pipelines.build_corpus``, in-memory
DirectRunner, a tiny random CTC model on the ASR step) from a ``--minutes`` and a
``--long_minutes`` source and prints the peak RSS ratio; with ``--threads`` it builds the
``--minutes`` file with one compute thread a process and with a thread per core, idle and loaded.
It also times ``--help`` and an option error.
"""
from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
import soundfile as sf

from benchmarks import scratch_dir

CONFIGS = ("defaults", "defaults-float32", "speakers-off", "energy-only", "pydub", "naive")
RATE = 16000
# run as a script, so that the baselines import only their own libraries
BASELINES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lean_baselines.py")


def join_speech(speech_dir: str, minutes: float, path: str) -> str:
    """Every wav under ``speech_dir`` (16 kHz mono), 0.8 s apart, looped to ``minutes``."""
    clips = [sf.read(p, dtype="int16")[0] for p in sorted(glob.glob(os.path.join(speech_dir, "*", "*.wav")))]
    clips = [c if c.ndim == 1 else c[:, 0] for c in clips]
    if not clips:
        raise SystemExit(f"no .wav files under {speech_dir}/*/")
    pause = np.zeros(int(0.8 * RATE), dtype=np.int16)
    one = np.concatenate([x for c in clips for x in (c, pause)])
    need = int(minutes * 60 * RATE)
    sf.write(path, np.resize(one, need), RATE, subtype="PCM_16")
    return path


# ---- the measured processes ----------------------------------------------------------------------

def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_speechmill(config: str, path: str, work: str) -> dict:
    from audio import vad
    from benchmarks.segment_speed import run_chain
    from corpus.shards import write_shard  # noqa: F401  (start-up: imported before the clock starts)
    from run.engine import thread_budget
    from speakers import encoder
    from transforms.segment import segment_source  # noqa: F401
    with thread_budget():  # model loads are start-up, as the baselines count theirs
        if config != "energy-only":
            vad.session()
        if config.startswith("defaults"):
            encoder.model()
    started = _cpu()
    with thread_budget():
        res = run_chain(path, work, gates=config != "energy-only", speakers=config.startswith("defaults"),
                        precision="float32" if config == "defaults-float32" else "auto")
    return {"audio_s": res["audio_s"], "clips": res["clips"], "steady_cpu_s": _cpu() - started}


def measure_one(config: str, path: str, work: str) -> int:
    os.makedirs(work, exist_ok=True)
    res = one_speechmill(config, path, work)
    print(json.dumps(res))
    return 0


# ---- the parent --------------------------------------------------------------------------------

def run_waited(cmd: List[str], env: Dict[str, str]):
    """Run ``cmd``: exit code, stdout, stderr, wall seconds and the ``wait4`` usage of its process tree
    (CPU summed over the process and the children it waited for; peak RSS of the largest one)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), wall, usage


def measure(config: str, path: str, work: str, env: Dict[str, str]) -> dict:
    """One whole-process measurement; peak RSS from ``wait4`` of that process alone."""
    cmd = ([sys.executable, BASELINES, config, path, work] if config in ("pydub", "naive")
           else [sys.executable, "-m", "benchmarks.lean", "--_one", config, path, work])
    rc, out, err, wall, usage = run_waited(cmd, env)
    cpu = usage.ru_utime + usage.ru_stime
    if rc != 0:
        raise RuntimeError(f"{config} failed:\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(cpu_s=cpu, wall_s=wall, peak_mb=usage.ru_maxrss / 1024, startup_cpu_s=cpu - res["steady_cpu_s"])
    return res


def _burn(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100000):
            x += 1


def under_load(cores: int):
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True) for _ in range(cores)]
    for p in procs:
        p.start()
    return stop, procs


def round_table(path: str, tmp: str, repeats: int, configs, env) -> Dict[str, dict]:
    runs: Dict[str, List[dict]] = {c: [] for c in configs}
    for r in range(repeats):
        for c in configs:
            res = measure(c, path, os.path.join(tmp, f"{c}-{r}"), env)
            print(f"  {c:16s} cpu {res['cpu_s']:6.1f} s  wall {res['wall_s']:6.1f} s", file=sys.stderr)
            runs[c].append(res)
    return {c: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for c, rs in runs.items()}


def print_table(title: str, table: Dict[str, dict]) -> None:
    base_pydub, base_naive = table.get("pydub"), table.get("naive")
    print(f"\n{title}")
    print(f"{'what':16s} {'clips':>6s} {'CPU s':>7s} {'start-up':>9s} {'x RT/CPU-s':>11s} {'steady xRT':>11s} "
          f"{'vs pydub':>9s} {'vs naive':>9s} {'peak MB':>8s}")
    for name, r in table.items():
        ratio = (lambda b: f"{r['cpu_s'] / b['cpu_s']:8.2f}x" if b else f"{'-':>9s}")
        print(f"{name:16s} {int(r['clips']):6d} {r['cpu_s']:7.1f} {r['startup_cpu_s']:9.1f} "
              f"{r['audio_s'] / r['cpu_s']:11.0f} {r['audio_s'] / max(r['steady_cpu_s'], 1e-9):11.0f} "
              f"{ratio(base_pydub)} {ratio(base_naive)} {r['peak_mb']:8.0f}")


def time_cli(env) -> Dict[str, float]:
    out = {}
    for name, args in (("--help", ["--help"]),
                       ("option error", ["--sources", "x", "--output", "y", "--min_snr_db", "loud"])):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipelines.build_corpus", *args], env=env, capture_output=True)
        out[name] = time.perf_counter() - t0
    return out


def build_rss(path: str, tmp: str, env, tag: str) -> dict:
    from asr.tiny import build_tiny_model
    model = os.path.join(tmp, "tiny")
    if not os.path.isdir(model):
        build_tiny_model(model)
    sources = os.path.join(tmp, f"sources-{tag}.txt")
    with open(sources, "w") as f:
        f.write(path + "\n")
    cmd = [sys.executable, "-m", "pipelines.build_corpus", "--sources", sources, "--output",
           os.path.join(tmp, f"corpus-{tag}"), "--asr_model", model, "--min_confidence", "0",
           "--min_chars_per_s", "0", "--max_chars_per_s", "1000"]
    rc, _, err, wall, usage = run_waited(cmd, env)
    if rc != 0:
        raise RuntimeError(f"the build failed:\n{err[-3000:]}")
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def threads_table(path: str, tmp: str, env: Dict[str, str], cores: int) -> None:
    """A whole build (tiny CTC model, in memory) with the run's own budget (one compute thread) and
    with a thread per core, idle and under load."""
    plain = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"\nwhole build of the same file, thread budgets ({cores} cores)")
    print(f"{'budget':28s} {'load':>6s} {'CPU s':>7s} {'wall s':>7s}")
    for load in (False, True):
        stop, procs = under_load(cores) if load else (None, [])
        try:
            for name, e in (("one thread a process", plain), (f"a thread per core ({cores})",
                                                             dict(plain, OMP_NUM_THREADS=str(cores)))):
                r = build_rss(path, tmp, e, f"threads-{len(name)}-{load}")
                print(f"{name:28s} {'yes' if load else 'no':>6s} {r['cpu_s']:7.1f} {r['wall_s']:7.1f}")
        finally:
            if stop is not None:
                stop.set()
                for proc in procs:
                    proc.join()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lean", description=__doc__.split("\n\n")[0])
    p.add_argument("--speech", default="/work/realdata/voices", help="folder of <voice>/<n>.wav 16 kHz clips")
    p.add_argument("--minutes", type=float, default=10.0, help="input length (default 10)")
    p.add_argument("--long_minutes", type=float, default=120.0, help="long input for --rss (default 120)")
    p.add_argument("--repeats", type=int, default=2, help="paired rounds; medians are printed (default 2)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    p.add_argument("--no_load", action="store_true", help="skip the run under a parallel CPU load")
    p.add_argument("--rss", action="store_true", help="also build corpora from a short and a long source")
    p.add_argument("--threads", action="store_true", help="also compare thread budgets on a whole build")
    p.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._one:
        return measure_one(*args._one)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    configs = [c for c in args.configs.split(",") if c]
    with scratch_dir("speechmill-lean-") as tmp:
        path = join_speech(args.speech, args.minutes, os.path.join(tmp, f"speech-{args.minutes:g}m.wav"))
        cli = time_cli(env)
        print(f"pipelines.build_corpus --help: {cli['--help']:.2f} s wall; an option error: "
              f"{cli['option error']:.2f} s wall")
        print(f"{args.minutes:g} min of real speech ({args.speech}), 16 kHz mono WAV; "
              f"medians of {args.repeats} paired rounds", file=sys.stderr)
        idle = round_table(path, tmp, args.repeats, configs, env)
        print_table(f"idle, {args.minutes:g} min of real speech, one compute thread a process", idle)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if not args.no_load:
            stop, procs = under_load(cores)
            try:
                loaded = round_table(path, tmp, args.repeats, configs, env)
            finally:
                stop.set()
                for proc in procs:
                    proc.join()
            print_table(f"under load ({cores} busy processes beside it)", loaded)
        if args.threads:
            threads_table(path, tmp, env, cores)
        if args.rss:
            long = join_speech(args.speech, args.long_minutes,
                               os.path.join(tmp, f"speech-{args.long_minutes:g}m.wav"))
            short_rss = build_rss(path, tmp, env, "short")
            long_rss = build_rss(long, tmp, env, "long")
            print(f"\nwhole build (tiny CTC model), peak RSS: {args.minutes:g} min {short_rss['peak_mb']:.0f} MB, "
                  f"{args.long_minutes:g} min {long_rss['peak_mb']:.0f} MB: "
                  f"{long_rss['peak_mb'] / short_rss['peak_mb']:.2f}x "
                  f"(wall {short_rss['wall_s']:.0f} s / {long_rss['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
