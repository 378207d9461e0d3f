"""The audio gates on real recordings mixed at known levels: what they estimate and what they keep.

    python -m benchmarks.gates_real [--realdata /work/realdata] [--voices 8]

Real speech (several voices: each voice's clips joined with pauses of 0.4–1.2 s, and the LibriVox
lines of pocketsphinx-testdata) is mixed with real music (frozen-bubble soundtrack) and real noise
(city ambience, a machine pump, wind, rain) at 0, 10 and 20 dB, put in simulated rooms (an
exponentially decaying noise impulse response of RT60 0.3 and 0.8 s), and encoded as MP3 at
16 kbps and Opus at 8 kbps. Each file runs through the segment stage as the pipeline runs it
(``transforms.segment.segment_source``, speakers off so that the voice model is not needed), with
the default gates. Printed, as Markdown:

* per condition: clips, the share kept, the rejection reasons, and for the mixtures the error of
  ``snr_db`` against the true SNR of each clip (clean speech power over its active frames, divided
  by the noise over the clip: the added background's power plus the recording's own noise floor,
  the median power of its frames 30 dB under its speech; all known because the parts were mixed
  here);
* per mixture condition, the clip with the largest ``snr_db`` error: where it is, its estimate and
  truth, how much of its "pauses" is missed speech, and what became of it;
* quiet speech: a file whose second half is the same kind of speech 30 or 40 dB quieter; the share
  of the quiet half's speech seconds that end in a kept clip or a rejected row (``too_quiet`` among them);
* the ``snr_db`` error by how much of what the VAD calls non-speech around the clip (the clip and
  5 s either side) is in fact speech (clean speech within 20 dB of its loud level): the noise is
  measured in those frames, so words the VAD misses there read as noise;
* kept clips that overlap their neighbour, over every file;
* per condition, the range of the sources' ``rt60_s`` (one value per source: its clips' decays pooled).

The recordings are read from ``--realdata`` (see its INVENTORY.md); nothing is written outside a
temporary folder. A few minutes on one core.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np

from benchmarks import scratch_dir

RATE = 16000
HOP = 160  # 10 ms
MUSIC = ["music/wav16k/frozen_bubble/frozen-mainzik-1p.wav", "music/wav16k/frozen_bubble/frozen-mainzik-2p.wav",
         "music/wav16k/frozen_bubble/introzik.wav"]
NOISE = ["noise/wav16k/ufoai/city_abnd_ufoai_atm.wav", "noise/wav16k/ufoai/minepump03.wav",
         "noise/wav16k/lugaru/Wind.wav", "noise/wav16k/ufoai/thunder2.wav"]
MISS_BINS = (0.1, 0.2, 0.4, 1.01)
VOICES = ["angie", "daniel", "deniro", "emma", "freeman", "geralt", "halle", "jlaw", "lj", "mol", "pat", "tom",
          "weaver", "william", "train_grace", "train_dotrice"]


def read(path: str) -> np.ndarray:
    import soundfile as sf
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    assert sr == RATE, (path, sr)
    return x.mean(axis=1)


def recordings(root: str, n_voices: int, rng) -> dict:
    """Clean speech per voice: its clips joined with short pauses."""
    out = {}
    for v in VOICES[:n_voices]:
        parts = []
        for f in sorted(glob.glob(f"{root}/voices/{v}/*.wav")):
            x = read(f)
            parts += [x / (np.sqrt(np.mean(x ** 2)) + 1e-12) * 0.05, np.zeros(int(rng.uniform(0.4, 1.2) * RATE))]
        out[v] = np.concatenate(parts)
    lib = sorted(glob.glob(f"{root}/speech/pocketsphinx_testdata/wav16k/*librivox*.wav")) or \
        sorted(glob.glob(f"{root}/speech/pocketsphinx_testdata/wav16k/librivox/*.wav"))
    if lib:
        parts = []
        for f in lib:
            x = read(f)
            parts += [x / (np.sqrt(np.mean(x ** 2)) + 1e-12) * 0.05, np.zeros(int(0.8 * RATE))]
        out["librivox"] = np.concatenate(parts)
    return out


def frame_power(x: np.ndarray) -> np.ndarray:
    n = len(x) // HOP
    return np.var(x[:n * HOP].reshape(n, HOP), axis=1)  # as audio.energy: a frame's mean is not power


def active(clean: np.ndarray) -> np.ndarray:
    """Frames of clean speech within 30 dB of its loud level: where the speech is."""
    p = frame_power(clean)
    level = np.percentile(p[p > 0], 95)
    return p > level * 10 ** (-3.0)


def bed_of(root: str, path: str, n: int, rng) -> np.ndarray:
    b = read(os.path.join(root, path))
    if len(b) < n:
        b = np.tile(b, n // len(b) + 1)
    s = int(rng.integers(0, len(b) - n + 1))
    return b[s:s + n]


def room(clean: np.ndarray, rt60: float, rng) -> np.ndarray:
    """Speech in a room: convolved with exponentially decaying noise of the given RT60 (direct path first)."""
    from scipy.signal import fftconvolve
    t = np.arange(int(rt60 * 1.2 * RATE)) / RATE
    h = rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60)
    h[:int(0.002 * RATE)] = 0
    h /= np.sqrt(np.sum(h ** 2))
    h[0] = 1.0  # direct-to-reverberant ratio near 0 dB, as a speaker a few metres away
    y = fftconvolve(clean, h)[:len(clean)]
    return y / np.sqrt(np.mean(y ** 2)) * np.sqrt(np.mean(clean ** 2))


def write(path: str, x: np.ndarray) -> str:
    import soundfile as sf
    peak = np.abs(x).max()
    sf.write(path, x / peak * 0.7 if peak > 0.7 else x, RATE, subtype="PCM_16")
    return path


def encode(src: str, dst: str, *args) -> str:
    from audio.ffmpeg import ffmpeg_binary
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-i", src, *args, dst], check=True)
    return dst


def run_segment(path: str, name: str, d: str):
    """(kept segments, rejections) of one file through the segment stage with the default gates."""
    from schemas.records import Source
    from transforms.segment import SegmentConfig, segment_file
    cfg = SegmentConfig(pack_dir=os.path.join(d, "packs"), speakers=False)
    sid = name.replace(" ", "_").replace(".", "_")
    kept, rejected = segment_file(Source("file://" + path, sid), path, cfg)
    return sorted(kept, key=lambda s: s.start_s), rejected


def vad_speech(path: str) -> np.ndarray:
    """The VAD's speech frames of a file as the segment stage sees them, on the 10 ms grid."""
    from audio.decoded import decode_to_scratch
    from audio.vad import on_grid, speech_mask
    from transforms.segment import SegmentConfig
    with decode_to_scratch(path, SegmentConfig(pack_dir="").output_sample_rate, vad=True) as d:
        mask = speech_mask(on_grid(d.speech_probs, len(d.db), d.hop_s))
        t = np.arange(int(d.duration_s * 100)) / 100
        return mask[np.minimum((t / d.hop_s).astype(np.int64), len(mask) - 1)]


def missed_share(clean_pow, speech, start_s, end_s) -> float:
    """Share of the VAD's non-speech frames in and 5 s around a clip that hold clean speech within
    20 dB of its loud level: where the noise is measured, what is in fact speech."""
    a, b = max(0, int(start_s * 100) - 500), int(end_s * 100) + 500
    n = min(len(clean_pow), len(speech))
    loud = clean_pow[:n][a:b] > np.percentile(clean_pow[clean_pow > 0], 95) * 0.01
    quiet = ~speech[:n][a:b]
    return float(np.count_nonzero(loud & quiet) / max(1, np.count_nonzero(quiet)))


def own_floor(clean_pow: np.ndarray, act: np.ndarray) -> float:
    """The recording's own noise: the median power of its frames 30 dB under its speech (a bed
    mixed far under it does not make the clip cleaner than the recording is)."""
    quiet = clean_pow[~act]
    return float(np.median(quiet)) if len(quiet) else 0.0


def true_snr(clean_pow, bed_pow, act, gain, floor, start_s, end_s):
    a, b = int(start_s * 100), int(end_s * 100)
    sp = clean_pow[a:b][act[a:b]]
    if not len(sp):
        return None
    return 10 * np.log10(np.mean(sp) / (np.mean(bed_pow[a:b]) * gain ** 2 + floor + 1e-30))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--realdata", default="/work/realdata")
    ap.add_argument("--voices", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    recs = recordings(args.realdata, args.voices, rng)
    rows = defaultdict(lambda: {"n": 0, "kept": 0, "why": Counter(), "err": [], "worst": None})
    overlaps = [0, 0]  # overlapping neighbour pairs, kept clips
    source_rt60 = defaultdict(list)  # the source's rt60_s, which every clip of it carries
    quiet = {}
    by_miss = defaultdict(list)  # snr_db error by the share of the noise frames that are missed speech
    with scratch_dir("gates-real-") as d:
        for v, clean in recs.items():
            act = active(clean)
            cp = frame_power(clean)
            speech_pow = np.mean(cp[act])
            files = {"clean": (write(f"{d}/{v}_clean.wav", clean), None)}
            for kind, beds in (("music", MUSIC), ("noise", NOISE)):
                bed = bed_of(args.realdata, beds[int(rng.integers(len(beds)))], len(clean), rng)
                bp = frame_power(bed)
                for snr in (0, 10, 20):
                    gain = np.sqrt(speech_pow / (np.mean(bp) + 1e-30) / 10 ** (snr / 10))
                    files[f"{kind} {snr} dB"] = (write(f"{d}/{v}_{kind}{snr}.wav", clean + gain * bed),
                                                 (cp, bp, act, gain, own_floor(cp, act)))
            for rt in (0.3, 0.8):
                files[f"reverb RT60 {rt} s"] = (write(f"{d}/{v}_rt{rt}.wav", room(clean, rt, rng)), None)
            files["MP3 16 kbps"] = (encode(files["clean"][0], f"{d}/{v}.mp3", "-c:a", "libmp3lame", "-b:a", "16k"), None)
            files["Opus 8 kbps"] = (encode(files["clean"][0], f"{d}/{v}.opus", "-c:a", "libopus", "-b:a", "8k"), None)
            for cond, (path, parts) in files.items():
                kept, rejected = run_segment(path, f"{v}_{cond}", d)
                clips = [(s, None) for s in kept] + [(r.segment, r.reason) for r in rejected if r.segment is not None]
                row = rows[cond]
                row["n"] += len(clips)
                row["kept"] += len(kept)
                row["why"].update(r.reason for r in rejected if r.key)
                source_rt60[cond] += sorted({s.scores.rt60_s for s, _ in clips if s.scores.rt60_s is not None})[:1]
                if parts is not None:
                    speech = vad_speech(path)
                    for seg, why in clips:
                        t = true_snr(*parts, seg.start_s, seg.end_s)
                        if t is not None and seg.scores.snr_db is not None:
                            row["err"].append(seg.scores.snr_db - t)
                            miss = missed_share(parts[0], speech, seg.start_s, seg.end_s)
                            if row["worst"] is None or abs(row["err"][-1]) > abs(row["worst"][0]):
                                row["worst"] = (row["err"][-1], f"{v} {seg.start_s:.1f}–{seg.end_s:.1f} s: "
                                                f"{seg.scores.snr_db:.1f} dB, true {t:.1f}, "
                                                f"{100 * miss:.0f} % of its pauses speech, {why or 'kept'}")
                            by_miss[next(k for k in MISS_BINS if miss < k)].append(seg.scores.snr_db - t)
                        if t is not None:
                            band = rows["mixtures, true SNR < 15 dB" if t < 15 else "mixtures, true SNR ≥ 15 dB"]
                            band["n"] += 1
                            band["kept"] += why is None
                            band["why"].update([why] if why else [])
                for a, b in zip(kept, kept[1:]):
                    overlaps[0] += b.start_s < a.end_s - 1e-6
                overlaps[1] += len(kept)
            for drop in (30, 40):
                other = recs[next(k for k in recs if k != v)]
                x = np.concatenate([other, clean * 10 ** (-drop / 20)])
                path = write(f"{d}/{v}_quiet{drop}.wav", x)
                kept, rejected = run_segment(path, f"{v}_quiet{drop}", d)
                q_act = np.concatenate([np.zeros(len(other) // HOP, bool), act])
                covered = np.zeros(len(q_act), bool)
                spans = [(s.start_s, s.end_s) for s in kept] + \
                        [(int(r.key.rsplit("_", 1)[1]) / 1000, int(r.key.rsplit("_", 1)[1]) / 1000 + r.duration_s)
                         for r in rejected if r.key]
                for s, e in spans:
                    covered[int(s * 100):int(e * 100)] = True
                q = quiet.setdefault(drop, [0, 0, Counter()])
                q[0] += int(np.count_nonzero(q_act & covered))
                q[1] += int(np.count_nonzero(q_act))
                q[2].update(r.reason for r in rejected)
            print(f"# {v} done", file=sys.stderr, flush=True)

    print(f"{len(recs)} recordings ({', '.join(recs)}), 16 kHz, default gates\n")
    print("| condition | clips | kept | rejected (reason: clips) | snr_db − true: median | 90th pct abs | max abs |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for cond, r in rows.items():
        err = np.asarray(r["err"])
        med = f"{np.median(err):+.1f}" if len(err) else ""
        mx = f"{np.max(np.abs(err)):.1f}" if len(err) else ""
        p90 = f"{np.percentile(np.abs(err), 90):.1f}" if len(err) else ""
        why = ", ".join(f"{k}: {n}" for k, n in r["why"].most_common())
        print(f"| {cond} | {r['n']} | {100 * r['kept'] / max(1, r['n']):.0f} % | {why} | {med} | {p90} | {mx} |")
    print("\nthe largest error of each condition:")
    for cond, r in rows.items():
        if r["worst"]:
            print(f"* {cond}: {r['worst'][1]}")
    print("\n| VAD non-speech around the clip that is speech | clips | snr_db − true: median | 90th pct abs "
          "| max abs |\n|---|---:|---:|---:|---:|")
    lo = 0.0
    for hi in MISS_BINS:
        err = np.asarray(by_miss[hi])
        if len(err):
            print(f"| {100 * lo:.0f}–{min(100, 100 * hi):.0f} % | {len(err)} | {np.median(err):+.1f} | "
                  f"{np.percentile(np.abs(err), 90):.1f} | {np.max(np.abs(err)):.1f} |")
        lo = hi
    rts = {c: v for c, v in source_rt60.items() if v}
    print("\n| condition | rt60_s per source (min–max) |\n|---|---|")
    for cond, v in rts.items():
        print(f"| {cond} | {min(v):.2f}–{max(v):.2f} |")
    print("\n| quiet second half | its speech seconds in a kept clip or a rejected row | rejected rows |")
    print("|---|---:|---|")
    for drop, (got, total, why) in quiet.items():
        print(f"| −{drop} dB | {100 * got / max(1, total):.0f} % | "
              f"{', '.join(f'{k}: {n}' for k, n in why.most_common())} |")
    print(f"\nkept clips overlapping the next kept clip: {overlaps[0]} of {overlaps[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
