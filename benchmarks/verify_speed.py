"""What proving a corpus whole costs: ``pipelines.verify`` and the checks every command makes at opening.

    python -m benchmarks.verify_speed [--samples 100000] [--per_shard 1000] [--keep DIR]

Synthesizes a corpus of ``--samples`` tiny samples (10 ms of silence as FLAC, a transcript and
the sample's JSON), ``--per_shard`` to a shard, written by the corpus's own shard writer
(``corpus.rewrite``, as compaction writes shards) and published by one journaled commit (which
records every file's sha256). Then measures, as CPU seconds of the whole process tree, each in a
fresh process:

* start-up: importing the corpus modules (Beam's file systems among them), which every command pays;
* baseline: reading every published byte once and hashing it (the floor of any checksum check);
* ``python -m pipelines.verify`` (checksums, tar members against manifest rows, unique keys ...);
* ``corpus.integrity.check_open`` (what report, compact, export, build and the trainers run first).

Prints seconds and seconds per 10,000 samples, and verify's ratio to the baseline.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks import scratch_dir

REPO = Path(__file__).resolve().parent.parent

BASELINE = """
import hashlib, os, sys
n = 0
for folder in ("shards", "manifest"):
    d = os.path.join(sys.argv[1], folder)
    for name in sorted(os.listdir(d)):
        h = hashlib.sha256()
        with open(os.path.join(d, name), "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        n += 1
print(n)
"""

CHECK_OPEN = """
import sys
from corpus.integrity import check_open
from corpus.layout import Layout
print(len(check_open(Layout(sys.argv[1])).files))
"""


def tiny_flac() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(220, dtype=np.float32), 22050, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def synthesize(root: Path, samples: int, per_shard: int) -> None:
    from corpus import commit
    from corpus.layout import Layout
    from corpus.rewrite import _write
    from corpus.shards import json_bytes, shard_name
    from schemas import tables

    layout = Layout(str(root))
    work = layout.work("bench")
    flac = tiny_flac()
    n_shards = (samples + per_shard - 1) // per_shard
    for s in range(n_shards):
        name = shard_name("shard", s)
        batch = []
        for i in range(s * per_shard, min(samples, (s + 1) * per_shard)):
            source = f"file-{i // 50:020d}"
            key = f"{source}_{(i % 50) * 1000:09d}"
            row = {c: None for c in tables.MANIFEST.names}
            row.update(key=key, shard=name, source_id=source, start_s=float(i % 50), end_s=float(i % 50) + 0.01,
                       duration_s=0.01, text="a few words", confidence=0.9)
            meta = {"key": key, "text": "a few words", "source_id": source, "duration_s": 0.01}
            batch.append((key, {"flac": flac, "txt": b"a few words", "json": json_bytes(meta)}, row))
        _write(work.shards_dir, work.manifest_dir, name, batch)
    moves = [(os.path.join(work.root, sub, n), layout.path(sub, n))
             for sub in ("shards", "manifest") for n in sorted(os.listdir(os.path.join(work.root, sub)))]
    commit.commit(layout.root, "bench", moves, {"settings": {"samples_per_shard": per_shard}, "kept": samples})
    shutil.rmtree(work.root)


def cpu_seconds(argv) -> tuple:
    """(CPU seconds of the child process tree, wall seconds, exit status) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0,):
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
    return cpu, wall, proc.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.verify_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--per_shard", type=int, default=1000)
    p.add_argument("--keep", default=None, help="write the corpus here and keep it")
    args = p.parse_args(argv)
    with scratch_dir("verify-speed-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp) / "corpus"
        started = time.monotonic()
        synthesize(root, args.samples, args.per_shard)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        print(f"corpus: {args.samples:,} samples in {len(os.listdir(root / 'shards'))} shards, "
              f"{size / 1e6:.1f} MB, synthesized in {time.monotonic() - started:.1f} s", flush=True)
        py = sys.executable
        results = {}
        for label, cmd in (("start-up (importing the corpus modules)", [py, "-c", "import corpus.integrity"]),
                           ("baseline (sha256 of every file)", [py, "-c", BASELINE, str(root)]),
                           ("pipelines.verify", [py, "-m", "pipelines.verify", str(root)]),
                           ("check_open (every command, at opening)", [py, "-c", CHECK_OPEN, str(root)])):
            cpu, wall, rc = cpu_seconds(cmd)
            if rc != 0:
                print(f"{label}: exit {rc}", flush=True)
                return 1
            results[label] = cpu
            print(f"{label}: {cpu:.2f} CPU s ({wall:.2f} s wall); {cpu / args.samples * 10_000:.3f} CPU s per "
                  f"10,000 samples", flush=True)
        base = results["baseline (sha256 of every file)"]
        startup = results["start-up (importing the corpus modules)"]
        work = results["pipelines.verify"] - startup
        print(json.dumps({"samples": args.samples, "cpu_s": {k: round(v, 3) for k, v in results.items()},
                          "verify_per_10k_samples_s": round(results["pipelines.verify"] / args.samples * 10_000, 3),
                          "verify_less_startup_per_10k_samples_s": round(work / args.samples * 10_000, 3),
                          "check_open_less_startup_per_10k_samples_s": round(
                              (results["check_open (every command, at opening)"] - startup) / args.samples * 10_000, 3),
                          "verify_less_startup_over_baseline": round(work / base, 2) if base > 0 else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
