"""Dedup costs and accuracy: fingerprint CPU-seconds per hour of audio, index lookups at N clips
(synthetic fingerprints; time and memory), the bit-error rates of copies and of unrelated speech, and
precision/recall on generated duplicates of real speech.

    PYTHONPATH=$PWD python -m benchmarks.dedup [--clips 1000000] [--sources 200] [--dups 50] [--only PART]

Accuracy set (``make_set``): every real speech file under /work/realdata (tortoise voices, the
Asterisk prompts, LibriVox) once, end to end, cut into disjoint originals, so no two originals
share audio; ``--dups`` more sources are each a 70-100 % excerpt of an original at −6..+3 dB after
a 0-5 s intro of speech used nowhere else, in MP3 64k / Opus 32k / AAC 48k at another rate. The
sources are cut into 3-10 s clips and judged in a shuffled order by the dedup stage's own rule
(``dedup.decide``), and whole sources by ``dedup.decide.source_repeats``.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from dedup import fingerprint
from dedup.decide import DUPLICATE_AUDIO, DedupParams, Item, decide, source_repeats
from dedup.index import ITEM_S, FingerprintIndex, popcount

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


SR = 22050
ASTERISK = Path("/work/realdata/speech/asterisk_allison/wav16k")
CODECS = [("mp3", ["-ar", "16000", "-c:a", "libmp3lame", "-b:a", "64k"]),
          ("opus", ["-ar", "24000", "-c:a", "libopus", "-b:a", "32k"]),
          ("m4a", ["-ar", "22050", "-c:a", "aac", "-b:a", "48k"])]


def speech_pool(rng: random.Random):
    """Every real speech file once, silence trimmed from both ends, in a shuffled order, as one array
    (22.05 kHz): no stretch of it is in it twice, so disjoint excerpts share no audio."""
    files = sorted(VOICES.glob("*/*.wav")) + sorted(ASTERISK.glob("*.wav")) + sorted(LIBRIVOX.glob("*.wav"))
    rng.shuffle(files)
    trim = "silenceremove=start_periods=1:start_threshold=-45dB,areverse," \
           "silenceremove=start_periods=1:start_threshold=-45dB,areverse"
    parts, seen = [], {}
    for f in files:
        p = np.frombuffer(ff("-i", f, "-ac", "1", "-ar", SR, "-af", trim, "-f", "s16le", "-"), np.int16)
        same = seen.setdefault(len(p), [])
        if len(p) > SR // 2 and not any(np.abs(p.astype(np.int32) - q).mean() < 100 for q in same):
            parts.append(p)  # one recording stored twice (voices/pat/2.wav and 3.wav) is taken once
            same.append(p)
    return np.concatenate(parts), len(parts)


def write(path: Path, samples: np.ndarray, *codec) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ar", str(SR), "-ac", "1", "-i", "-",
                    *map(str, codec), str(path)], input=samples.tobytes(), check=True, capture_output=True)
    return path


def make_set(n_sources: int, n_dups: int, rng: random.Random, tmp: Path):
    """Originals: disjoint excerpts of the speech pool (MP3 96k); duplicates: a trimmed excerpt (70-100 %)
    of an original at −6..+3 dB after a 0-5 s intro of speech used nowhere else, in another codec
    and rate. Each source's ``spans`` map its time to the pool's: (start_s, end_s, pool_start_s)."""
    pool, n_files = speech_pool(rng)
    total_s = len(pool) / SR
    intro_s = 5.0 * n_dups * 0.6  # room for the intros at the end of the pool
    n_orig = n_sources - n_dups
    each = (total_s - intro_s) / n_orig
    sources = []
    for i in range(n_orig):
        a = int(i * each * SR)
        out = write(tmp / f"s{i:03d}.mp3", pool[a:a + int(each * SR)], "-c:a", "libmp3lame", "-b:a", "96k")
        sources.append((f"s{i:03d}", out, None, [(0.0, each, a / SR)]))
    intro_at = n_orig * each
    for d in range(n_dups):
        src_i = rng.randrange(n_orig)
        length = rng.uniform(0.7, 1.0) * each
        start = rng.uniform(0, each - length)
        intro = min(rng.uniform(0, 5), total_s - intro_at)
        gain = rng.uniform(-6, 3)
        _, src, _, spans = sources[src_i]
        ext, codec = CODECS[d % len(CODECS)]
        out = tmp / f"d{d:03d}.{ext}"
        i0 = int(intro_at * SR)
        clean = np.concatenate([pool[i0:i0 + int(intro * SR)],
                                np.clip(pool[int((spans[0][2] + start) * SR):][:int(length * SR)] * 10 ** (gain / 20),
                                        -32768, 32767).astype(np.int16)])
        write(out, clean, *codec)
        sources.append((f"d{d:03d}", out, f"s{src_i:03d}",
                        [(0.0, intro, intro_at), (intro, intro + length, spans[0][2] + start)]))
        intro_at += intro
    return sources, {"pool_s": round(total_s), "speech_files": n_files, "original_s": round(each, 1)}


def pool_overlap(a: list, b: list) -> float:
    """Seconds of the pool that two lists of pool intervals share."""
    return sum(max(0.0, min(x1, y1) - max(x0, y0)) for x0, x1 in a for y0, y1 in b)


def to_pool(spans, t0: float, t1: float) -> list:
    return [(p + max(t0, s0) - s0, p + min(t1, s1) - s0) for s0, s1, p in spans if min(t1, s1) > max(t0, s0)]


def accuracy(n_sources: int, n_dups: int, seed=0, params: DedupParams = DedupParams()):
    """Precision and recall of the dedup stage's rule on clips (each source cut into 3-10 s clips, taken
    in a shuffled source order) and on sources (``source_repeats``). A clip truly repeats when at
    least half of its length is audio of clips kept before it; a source, when an earlier source in
    order was made from the same original."""
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    sources, info = make_set(n_sources, n_dups, rng, tmp)
    items, where = cut_clips(sources, source_fingerprints(sources), rng)
    return {**info, "sources": n_sources, "duplicates": n_dups, **score(sources, items, where, params)}


def source_fingerprints(sources) -> dict:
    """Each source's (fingerprint, duration) from its decoded file."""
    out = {}
    for name, path, _, _ in sources:
        audio = decode(path, SR)
        out[name] = (fingerprint.of_samples(audio, SR), len(audio) / SR)
    return out


def cut_clips(sources, fps: dict, rng: random.Random):
    """Sources in a shuffled order, cut into 3-10 s clips: (dedup items, each clip's pool intervals)."""
    rng.shuffle(sources)
    items, where = [], {}
    for rank, (name, path, _, spans) in enumerate(sources):
        (fp, dur), t = fps[name], 0.0
        while t < dur - 1.0:
            end = t + rng.uniform(3, 10)
            end = dur if end > dur - 3 else end
            key = f"{name}_{int(t * 1000):09d}"
            items.append(Item(key, (1, f"{rank:04d}", name, t), end - t, None, "",
                              fingerprint.clip_slice(fp, t, end)))
            where[key] = to_pool(spans, t, end)
            t = end
    return items, where


def score(sources, items, where, params: DedupParams):
    verdicts = decide(items, [], params)
    kept_pool, c = [], Counter()
    for it in sorted(items, key=lambda i: (i.order, i.key)):
        repeated = pool_overlap(where[it.key], kept_pool) / it.duration_s
        v = verdicts.get(it.key)
        truth, said = repeated >= 0.5, v is not None and v.reason == DUPLICATE_AUDIO
        right_key = said and pool_overlap(where[it.key], where[v.repeats]) > 0
        c["tp" if said and truth and right_key else "fp" if said else "fn" if truth else "tn"] += 1
        if said and 0.3 < repeated < 0.7 or truth and not said and repeated < 0.7:
            c["near_half"] += 1  # an error on a clip that about half repeats
        if not said:
            kept_pool.extend(where[it.key])
    group = {name: of or name for name, _, of, _ in sources}
    rank = {name: r for r, (name, _, _, _) in enumerate(sources)}
    found = source_repeats(items, verdicts)
    s = Counter()
    for name, _, _, _ in sources:
        truth = any(group[o] == group[name] and rank[o] < rank[name] for o in group)
        hit = found.get(name)
        s["tp" if hit and truth and group[hit.repeats] == group[name] else "fp" if hit else "fn" if truth else "tn"] += 1
    pr = lambda k: {"precision": round(k["tp"] / max(k["tp"] + k["fp"], 1), 3),
                    "recall": round(k["tp"] / max(k["tp"] + k["fn"], 1), 3)}
    return {"source_level": {**dict(sorted(s.items())), **pr(s)},
            "clip_level": {"clips": len(items), **dict(sorted(c.items())), **pr(c)}}


def window_ber(n_files: int = 30):
    """The bit-error rate of 1 s windows of a copy (Opus 32 kbps at 24 kHz, −3 dB) against its original,
    and of unrelated speech at every third offset of every pair: what ``--dedup_max_ber`` separates."""
    files = sorted(VOICES.glob("*/*.wav"))[::3][:n_files]
    w = int(round(1.0 / ITEM_S))

    def windows(x, y):
        return np.convolve(popcount(x ^ y).astype(float), np.ones(w), "valid") / (32 * w)

    orig, copy = [], []
    for f in files:
        opus = ff("-i", f, "-af", "volume=-3dB", "-ar", 24000, "-c:a", "libopus", "-b:a", "32k", "-f", "ogg", "-")
        back = subprocess.run(["ffmpeg", "-v", "error", "-i", "-", "-ac", "1", "-ar", str(SR), "-f", "s16le", "-"],
                              input=opus, capture_output=True, check=True).stdout
        orig.append(fingerprint.of_samples(decode(f), SR))
        copy.append(fingerprint.of_samples(np.frombuffer(back, np.int16), SR))
    true = np.concatenate([windows(o[:min(len(o), len(c))], c[:min(len(o), len(c))]) for o, c in zip(orig, copy)])
    chance = []
    for i, x in enumerate(orig):
        for j, y in enumerate(orig):
            for off in range(-len(x) + w, len(y) - w, 3) if i != j else ():
                j0, j1 = max(0, -off), min(len(x), len(y) - off)
                if j1 - j0 >= w:  # whole windows only
                    chance.append(windows(x[j0:j1], y[j0 + off:j1 + off]))
    chance = np.concatenate(chance)
    return {"copy_windows": len(true), "copy_p50_p99_max": np.percentile(true, [50, 99, 100]).round(3).tolist(),
            "unrelated_windows": len(chance),
            **{f"unrelated_under_{t}": float(f"{(chance <= t).mean():.2e}") for t in (0.15, 0.2, 0.25)}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--sources", type=int, default=200)
    ap.add_argument("--dups", type=int, default=50)
    ap.add_argument("--only", choices=["fingerprint", "windows", "accuracy", "index"], help="run one part")
    a = ap.parse_args()
    speech = sorted(VOICES.glob("*/*.wav"))[:6] or sorted(LIBRIVOX.glob("*.wav"))
    if a.only in (None, "fingerprint"):
        print("fingerprint:", fingerprint_cost(speech), flush=True)
    if a.only in (None, "windows"):
        print("windows:", window_ber(), flush=True)
    if a.only in (None, "accuracy"):
        print("accuracy:", accuracy(a.sources, a.dups), flush=True)
    if a.only in (None, "index"):
        print("index:", index_scale(a.clips), flush=True)
    print("cpu count", os.cpu_count())


if __name__ == "__main__":
    t = time.monotonic()
    main()
