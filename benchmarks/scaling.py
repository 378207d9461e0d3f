"""End-to-end throughput of one input on each engine: more workers must mean more hours per hour.

    python -m benchmarks.scaling [--minutes 3.4] [--files 4] [--engines direct,multi2,dask1,dask2] [--short_minutes 0.25]

Builds the same corpus (``--files`` espeak-ng MP3s of ``--minutes`` each, the tiny CTC model, the
default gates, VAD and speakers) once per engine, each in a fresh ``build_corpus`` process:

  direct   the DirectRunner in memory (one process)
  multiN   the DirectRunner with ``--direct_running_mode multi_processing --direct_num_workers N``
  daskN    the DaskRunner on a dask.distributed cluster of N single-threaded worker processes on
           127.0.0.1, started before the timing (as a cluster is, before a job is sent to it)
  multiN-oversubscribed   multiN with every worker given a thread per core (OMP_NUM_THREADS set to
           the core count), as before the run split the cores between its worker processes

It prints, per engine: wall seconds, CPU seconds of the whole process tree (driver and workers),
× realtime (audio seconds per wall second), the scaling ratio against ``direct``, and the ASR
model's busy seconds (summed over workers, from the run record), so the model's share stands apart
from the rest of the chain. Every engine must build byte-identical shards; the check is printed.

With ``--short_minutes`` (default 0.25) each engine also builds a short input of the same files,
which splits its wall time into a fixed start-up (processes, imports, model loading, two pipelines:
listing and one wave) and a steady rate: (long - short audio) / (long - short wall), the hours per
hour a long run approaches.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import scratch_dir

REPO = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, files: int, minutes: float) -> Path:
    """``files`` different speech recordings, each looped to ``minutes`` and encoded as MP3."""
    from audio.ffmpeg import ffmpeg_binary
    from audio.synth import SENTENCES, build_recording
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(files):
        texts = [SENTENCES[(i * 7 + j) % len(SENTENCES)] for j in range(10)]
        pauses = [0.3, 0.9, 0.25, 1.2, 0.4, 0.8, 1.5, 0.35, 0.7][: len(texts) - 1]
        base = folder / f"base{i}.wav"
        build_recording(texts, pauses, seed=100 + i, voices=[["en-us"], ["en-gb"]][i % 2]).write(str(base))
        mp3 = folder / f"talk{i}.mp3"
        subprocess.run([ffmpeg_binary(), "-nostdin", "-y", "-loglevel", "error", "-stream_loop", "-1", "-i",
                        str(base), "-t", str(minutes * 60), "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame",
                        "-b:a", "128k", str(mp3)], check=True)
        lines.append(str(mp3))
    sources = folder / "sources.txt"
    sources.write_text("\n".join(lines) + "\n")
    return sources


def tree_cpu_s(pids) -> float:
    import psutil
    total = 0.0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs = [p] + p.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for q in procs:
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def shard_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((out / "shards").glob("*.tar")) + sorted((out / "manifest").glob("*.parquet")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def run_engine(name: str, sources: Path, model: str, work: Path) -> dict:
    out = work / f"corpus-{name}"
    args = [sys.executable, "-m", "pipelines.build_corpus", "--sources", str(sources), "--output", str(out),
            "--asr_model", model, "--min_confidence", "0", "--min_chars_per_s", "0", "--max_chars_per_s", "1000",
            "--commit_every_hours", "100"]
    cluster, env = None, dict(os.environ)
    if name.endswith("-oversubscribed"):
        env["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    if name.startswith("multi"):
        args += ["--direct_running_mode", "multi_processing", "--direct_num_workers",
                 name[len("multi"):].split("-")[0]]
    elif name.startswith("dask"):
        from distributed import LocalCluster
        cluster = LocalCluster(n_workers=int(name[len("dask"):]), threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        args += ["--runner", "DaskRunner", "--dask_client_address", cluster.scheduler_address]
    try:
        worker_pids = [w.process.process.pid for w in cluster.workers.values()] if cluster else []
        before_workers = tree_cpu_s(worker_pids)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(args, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: build_corpus failed:\n{proc.stderr[-3000:]}")
        # the build process and every process it waited for (multi-processing workers, ffmpeg), plus
        # the cluster's worker processes, which are not its children
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        cpu += tree_cpu_s(worker_pids) - before_workers
    finally:
        if cluster is not None:
            cluster.close()
    record = json.loads(next((out / "runs").glob("*.json")).read_text())
    return {"engine": name, "wall_s": wall, "cpu_s": cpu, "audio_s": record["hours_in"] * 3600,
            "asr_busy_s": record.get("asr_busy_s") or 0.0, "kept": record["kept"], "digest": shard_digest(out)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.4, help="length of each input file (default 3.4)")
    ap.add_argument("--files", type=int, default=4, help="number of input files (default 4)")
    ap.add_argument("--engines", default="direct,multi2,dask1,dask2", help="comma-separated, in order")
    ap.add_argument("--short_minutes", type=float, default=0.25,
                    help="also build inputs this long, to split start-up from the steady rate (0: skip)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from asr.tiny import build_tiny_model
    with scratch_dir("speechmill-scaling-") as tmp:
        work = Path(tmp)
        print(f"[scaling] making {args.files} inputs of {args.minutes:g} min", file=sys.stderr, flush=True)
        sources = make_inputs(work, args.files, args.minutes)
        short = make_inputs(work / "short", args.files, args.short_minutes) if args.short_minutes > 0 else None
        model = build_tiny_model(str(work / "tiny-wav2vec2"))
        rows, shorts = [], {}
        for name in args.engines.split(","):
            print(f"[scaling] {name} ...", file=sys.stderr, flush=True)
            rows.append(run_engine(name, sources, model, work))
            r = rows[-1]
            print(f"[scaling] {name}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} CPU-s", file=sys.stderr, flush=True)
            if short is not None:
                shorts[name] = run_engine(name, short, model, work / "short")
    base = next((r for r in rows if r["engine"] == "direct"), rows[0])
    print(f"\nsame input on every engine: {base['audio_s'] / 60:.1f} min of audio, {base['kept']} clips kept; "
          f"{os.cpu_count()} cores")
    print(f"{'engine':24s} {'wall s':>8s} {'CPU s':>8s} {'× realtime':>11s} {'vs direct':>10s} "
          f"{'ASR busy s':>11s} {'ASR share':>10s} {'rest (wall-ASR/w)':>18s}  shards")
    for r in rows:
        workers = int("".join(c for c in r["engine"].split("-")[0] if c.isdigit()) or 1)
        share = r["asr_busy_s"] / (r["wall_s"] * workers)
        print(f"{r['engine']:24s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['audio_s'] / r['wall_s']:10.1f}x "
              f"{base['wall_s'] / r['wall_s']:9.2f}x {r['asr_busy_s']:11.1f} {share:9.0%} "
              f"{r['wall_s'] - r['asr_busy_s'] / workers:18.1f}  "
              f"{'same' if r['digest'] == base['digest'] else 'DIFFERENT ' + r['digest']}")
    if shorts:
        print(f"\nstart-up and steady rate (short input: {shorts[base['engine']]['audio_s'] / 60:.1f} min)")
        print(f"{'engine':24s} {'short wall s':>12s} {'start-up s':>11s} {'steady × realtime':>18s} {'vs direct':>10s}")
        steady = {}
        for r in rows:
            s_ = shorts[r["engine"]]
            rate = (r["audio_s"] - s_["audio_s"]) / max(1e-6, r["wall_s"] - s_["wall_s"])
            steady[r["engine"]] = rate
            fixed = s_["wall_s"] - s_["audio_s"] / rate
            print(f"{r['engine']:24s} {s_['wall_s']:12.1f} {fixed:11.1f} {rate:17.1f}x "
                  f"{rate / steady[base['engine']]:9.2f}x")
    return 0 if all(r["digest"] == base["digest"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
