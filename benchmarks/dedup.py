"""Dedup costs and accuracy: fingerprint CPU-seconds per hour of audio, index lookups at N clips
(synthetic fingerprints; time and memory), and precision/recall on generated duplicates of real speech.

    PYTHONPATH=$PWD python -m benchmarks.dedup [--clips 1000000] [--sources 200] [--dups 50]

Accuracy set: ``--sources`` sources, each a concatenation of 2-4 real speech clips (tortoise voices
under /work/realdata/voices, else LibriVox); ``--dups`` of them are re-made from another source by
trimming, a gain of −6..+3 dB, a new intro from an unrelated clip, and a codec (MP3 64k, Opus 32k,
AAC 48k) at another rate. Every source is fingerprinted, indexed in order, and each queried for an
earlier one it repeats (more than half of it, as the dedup stage judges a clip).
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from dedup import fingerprint
from dedup.index import FingerprintIndex

VOICES = Path("/work/realdata/voices")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def cpu_s() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ff(*args, out=None):
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)] + ([] if out is None else [out]),
                       capture_output=True, check=True)
    return r.stdout


def decode(path, rate=22050) -> np.ndarray:
    return np.frombuffer(ff("-i", path, "-ac", "1", "-ar", rate, "-f", "s16le", "-"), np.int16)


def fingerprint_cost(clips):
    audio = np.concatenate([decode(c) for c in clips])
    reps = max(1, int(600 * 22050 / len(audio)))  # about 10 minutes of audio
    long = np.tile(audio, reps)
    c0 = cpu_s()
    fp = fingerprint.of_samples(long, 22050)
    c1 = cpu_s()
    hours = len(long) / 22050 / 3600
    return {"audio_h": round(hours, 3), "cpu_s_per_hour": round((c1 - c0) / hours, 2),
            "realtime_per_core": round(hours * 3600 / max(c1 - c0, 1e-9)), "items_per_s": round(len(fp) / hours / 3600, 2)}


def index_scale(n_clips: int, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(24, 97, n_clips)  # 3-12 s clips
    flat = rng.integers(0, 2 ** 32, int(lengths.sum()), dtype=np.uint64).astype(np.uint32)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    fps = [flat[bounds[i]:bounds[i + 1]] for i in range(n_clips)]
    keys = [f"k{i:08d}" for i in range(n_clips)]
    m0, c0 = rss_mb(), cpu_s()
    index = FingerprintIndex.build(keys, fps)
    build_s, m1 = cpu_s() - c0, rss_mb()
    queries = []
    for i in rng.integers(0, n_clips, 200):
        q = fps[i].copy()
        flips = rng.random((len(q), 32)) < 0.08  # 8 % bit errors, like a re-encoded copy
        q ^= (flips * (1 << np.arange(32, dtype=np.uint64))).sum(1).astype(np.uint32)
        queries.append((keys[i], q))
    misses = [rng.integers(0, 2 ** 32, 64, dtype=np.uint64).astype(np.uint32) for _ in range(200)]
    c0 = cpu_s()
    found = sum(1 for k, q in queries if (m := index.query(q)) is not None and m.key == k)
    false = sum(1 for q in misses if index.query(q) is not None)
    per_query = (cpu_s() - c0) / 400
    return {"clips": n_clips, "items": int(lengths.sum()), "build_cpu_s": round(build_s, 1),
            "index_mb": round(m1 - m0), "query_ms": round(per_query * 1000, 2), "recall_8pct_bits": found / 200,
            "false_hits_on_random": false}


def accuracy(n_sources: int, n_dups: int, seed=0):
    rng = random.Random(seed)
    speech = sorted(VOICES.glob("*/*.wav")) or sorted(LIBRIVOX.glob("*.wav"))
    tmp = Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    originals, made = [], []
    for i in range(n_sources - n_dups):
        parts = rng.sample(speech, rng.randint(2, 4))
        out = tmp / f"s{i:03d}.mp3"
        filt = "".join(f"[{j}]aresample=22050,aformat=channel_layouts=mono[a{j}];" for j in range(len(parts)))
        ff(*[x for p in parts for x in ("-i", p)], "-filter_complex",
           filt + "".join(f"[a{j}]" for j in range(len(parts))) + f"concat=n={len(parts)}:v=0:a=1",
           "-c:a", "libmp3lame", "-b:a", "96k", out=str(out))
        originals.append((out, set(parts)))
        made.append((f"s{i:03d}", out, None))
    codecs = [("mp3", ["-ar", "16000", "-c:a", "libmp3lame", "-b:a", "64k"]),
              ("opus", ["-ar", "24000", "-c:a", "libopus", "-b:a", "32k"]),
              ("m4a", ["-ar", "22050", "-c:a", "aac", "-b:a", "48k"])]
    for d in range(n_dups):
        src_i = rng.randrange(len(originals))
        src, used = originals[src_i]
        dur = len(decode(src, 8000)) / 8000
        start = rng.uniform(0, max(0.0, dur * 0.3))
        length = rng.uniform(max(4.0, dur * 0.6), dur - start) if dur - start > 4.0 else dur - start
        intro = rng.choice([p for p in speech if p not in used])
        gain = rng.uniform(-6, 3)
        ext, codec = codecs[d % len(codecs)]
        out = tmp / f"d{d:03d}.{ext}"
        ff("-t", rng.uniform(0, 7), "-i", intro, "-ss", start, "-t", length, "-i", src, "-filter_complex",
           f"[0]aresample=22050,aformat=channel_layouts=mono[i];[1]aresample=22050,volume={gain:.1f}dB[a];"
           "[i][a]concat=n=2:v=0:a=1", *codec, out=str(out))
        made.append((f"d{d:03d}", out, f"s{src_i:03d}"))
    order = sorted(made, key=lambda m: m[0][0] == "d")  # originals first, then duplicates
    rng.shuffle(order)  # the originals are not always first: a duplicate then names the copy it was made from
    fps = {name: fingerprint.of_samples(decode(path), 22050) for name, path, _ in order}
    group = {name: of or name for name, _, of in made}  # a duplicate belongs with its original
    index = FingerprintIndex()
    tp = fp_ = fn = 0
    for name, _, _ in order:
        m = index.query(fps[name])
        hit = m is not None and m.fraction >= 0.5
        expected = any(group[k] == group[name] for k in index.keys)
        if hit and group[m.key] == group[name]:
            tp += 1
        elif hit:
            fp_ += 1
        elif expected:
            fn += 1
        if not hit:
            index.add(name, fps[name])
    return {"sources": n_sources, "duplicates": n_dups, "true_positives": tp, "false_positives": fp_,
            "false_negatives": fn, "precision": round(tp / max(tp + fp_, 1), 3), "recall": round(tp / max(tp + fn, 1), 3),
            "voices": str(VOICES if VOICES.exists() else LIBRIVOX)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--sources", type=int, default=200)
    ap.add_argument("--dups", type=int, default=50)
    a = ap.parse_args()
    speech = sorted(VOICES.glob("*/*.wav"))[:6] or sorted(LIBRIVOX.glob("*.wav"))
    print("fingerprint:", fingerprint_cost(speech), flush=True)
    print("accuracy:", accuracy(a.sources, a.dups), flush=True)
    print("index:", index_scale(a.clips), flush=True)
    print("cpu count", os.cpu_count())


if __name__ == "__main__":
    t = time.monotonic()
    main()
