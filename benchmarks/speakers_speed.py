"""What telling voices apart costs: embeddings, speaker-change detection and clustering.

    python -m benchmarks.speakers_speed [--minutes 5] [--clips 100000]

On one CPU core (torch and onnxruntime limited to one thread):
* the voice encoder on 1.6 s partials of speech, batched, as × realtime (mel spectrogram included);
* speaker-change detection (``speakers.turns.split_turns``) over an interview of two espeak-ng voices
  with short pauses: utterances, embeddings, source-level voice clustering and cuts, × realtime;
* clustering and conditioning candidates for ``--clips`` clips of one channel (synthetic voice
  embeddings: 40 voices across 500 episodes), in seconds.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks.segment_speed import pin_one_core
from speakers.params import PRECISIONS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speakers_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="minutes of interview audio (default 5)")
    p.add_argument("--clips", type=int, default=100_000, help="clips of one channel to cluster (default 100000)")
    p.add_argument("--speaker_precision", default="auto", choices=PRECISIONS,
                   help="the voice encoder's arithmetic, as build_corpus's option (default auto)")
    args = p.parse_args(argv)
    from run.console import quiet_libraries
    quiet_libraries()
    pin_one_core()
    import torch
    torch.set_num_threads(1)
    import soxr

    from audio.synth import SENTENCES, build_recording
    from speakers import cluster, encoder
    from speakers.turns import TurnParams, split_turns

    print("building the interview ...", file=sys.stderr)
    voices = ["en-us", "en-us", "en-us+f3", "en-us+f3"]
    texts = SENTENCES * 2
    pauses = ([0.3, 0.35, 0.8, 0.3, 0.25, 0.9] * len(texts))[: len(texts) - 1]
    base = build_recording(texts, pauses, seed=3, voices=voices)
    x16 = soxr.resample(base.audio, base.sample_rate, 16000).astype(np.float32)
    reps = max(1, int(args.minutes * 60 / (len(x16) / 16000)))
    x16 = np.tile(x16, reps)
    audio_s = len(x16) / 16000

    pieces = encoder.partials(x16)
    precision = encoder.resolve_precision(args.speaker_precision)
    print(f"voice encoder in {precision}", file=sys.stderr)
    encoder.embed_partials(pieces[:8], precision=precision)
    t0 = time.perf_counter()
    encoder.embed_partials(pieces, precision=precision)
    t_embed = time.perf_counter() - t0

    # change detection over the whole interview, as the segment stage runs it on a source's clips
    hop_s = 0.01
    n = int(audio_s / hop_s)
    frame_energy = np.array([float(np.mean(x16[i * 160:(i + 1) * 160] ** 2)) for i in range(n)])
    pause = frame_energy < 1e-6
    clip_len = 2000  # 20 s clips
    clips = [(a, min(n, a + clip_len)) for a in range(0, n, clip_len)]
    t0 = time.perf_counter()
    turns, _ = split_turns(clips, pause, hop_s, lambda s, e: x16[s * 160:e * 160], TurnParams(precision=precision))
    t_turns = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    centres = cluster.normalise(rng.standard_normal((40, 256)))
    per_source = args.clips // 500
    keys, sources, rows, truth = [], [], [], []
    for src in range(500):
        cast = rng.choice(40, 3, replace=False)
        cast[0] = 0  # the host of every episode
        for j in range(per_source):
            v = cast[0] if j % 2 == 0 else cast[1 + (j // 2) % 2]
            truth.append(int(v))
            keys.append(f"ep{src:04d}_{j:09d}")
            sources.append(f"ep{src:04d}")
            rows.append(centres[v] + rng.standard_normal(256) * 0.025)
    emb = cluster.normalise(np.array(rows, dtype=np.float32))
    t0 = time.perf_counter()
    ids, speakers = cluster.assign("channel", keys, sources, emb, [])
    t_cluster = time.perf_counter() - t0
    t0 = time.perf_counter()
    cluster.similar_keys(keys, ids, emb, 3)
    t_similar = time.perf_counter() - t0

    print(f"\nspeakers, one core ({audio_s / 60:.1f} min of a two-voice interview)")
    print(f"{'what':50s} {'x realtime':>11s}")
    print(f"{'voice encoder (1.6 s partials, 64 a batch)':50s} {audio_s / t_embed:11.0f}")
    print(f"{'speaker-change detection (embeddings included)':50s} {audio_s / t_turns:11.0f}"
          f"   ({sum(len(t) for t in turns)} turns in {len(clips)} clips)")
    print(f"\nclustering {len(keys):,} clips of one channel (500 episodes, 40 voices, a host in every episode)")
    print(f"  speaker ids: {t_cluster:.1f} s ({len(speakers)} speakers found); similar keys: {t_similar:.1f} s")
    from collections import Counter
    host_ids = Counter(i for i, v in zip(ids, truth) if v == 0)
    host = host_ids.most_common(1)[0][0]
    under = [v for i, v in zip(ids, truth) if i == host]
    purity = sum(Counter(v for i, v in zip(ids, truth) if i == sid).most_common(1)[0][1] for sid in set(ids)) / len(ids)
    print(f"  the host's clips under its id: {host_ids[host] / sum(host_ids.values()):.3f} "
          f"(that id is the host for {under.count(0) / len(under):.3f} of its clips); speaker-id purity {purity:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
