"""Telling real voices apart: speech kept, clips holding two voices, speaker-id purity and ids per voice.

    python -m benchmarks.speakers_real [--voices /work/realdata/voices] [--pairs 8] [--sets single,conv,feed]

Material (``audio.joined``), from a folder of real recordings with one folder per person:
* single: each person's lines joined with natural pauses (0.35–1.2 s) into one file; all files in one
  voice group (as a folder of recordings is), so ids must also keep different people apart;
* conv: two people alternating line by line, with 0.3 s gaps, 1 s gaps, and 0.4 s overlaps, one
  voice group per conversation;
* feed: episodes sharing a host, each with its own guest, one voice group.

Each file goes through the segment stage as the pipeline runs it (decode, VAD, clips, speaker
turns, audio gates) with ``--speakers off`` and ``on``; kept clips then get ids as the speakers
stage gives them (``speakers.cluster.assign``), in one wave and in 8 waves (known speakers carried
between waves as the corpus stores them). Prints, per set: speech kept (off / on), kept clips with
over 0.25 s of another voice, id purity, ids per true voice, ids per single-voice file, whether
1 and 8 waves agree; and the speaker stage's cost (audio seconds per CPU-second of the stage).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

MIXED_S = 0.25  # a kept clip with more than this much of another voice's speech "holds both voices"


def people(root: str) -> Dict[str, List[str]]:
    out = {}
    for d in sorted(glob.glob(os.path.join(root, "*/"))):
        files = sorted(glob.glob(os.path.join(d, "*.wav")))
        if files:
            out[os.path.basename(d.rstrip("/"))] = files
    return out


def build_sets(root: str, pairs: int, seed: int = 0):
    """{set: [(name, group, Joined)]}."""
    from audio.joined import join, load
    rng = np.random.default_rng(seed)
    voices = people(root)
    lines = {v: [load(f) for f in fs] for v, fs in voices.items()}
    sets = {"single": [], "conv": [], "feed": []}
    for v, xs in lines.items():
        sets["single"].append((f"single-{v}", "folder", join([(v, x) for x in xs], list(rng.uniform(0.35, 1.2, len(xs) - 1)))))
    names = [v for v in sorted(lines) if len(lines[v]) >= 2]
    order = list(rng.permutation(names))
    for p in range(min(pairs, len(order) // 2)):
        a, b = order[2 * p], order[2 * p + 1]
        seq = []
        for i in range(max(len(lines[a]), len(lines[b]))):
            seq += [(a, lines[a][i])] if i < len(lines[a]) else []
            seq += [(b, lines[b][i])] if i < len(lines[b]) else []
        for gap in (0.3, 1.0, -0.4):
            sets["conv"].append((f"conv-{a}-{b}-{gap:+.1f}", f"conv-{a}-{b}-{gap:+.1f}",
                                 join(seq, [gap] * (len(seq) - 1))))
    host = max(lines, key=lambda v: (sum(len(x) for x in lines[v]), v))
    guests = [v for v in order if v != host][:len(lines[host])]
    for e, g in enumerate(guests):
        seq = [(host, lines[host][e]), (g, lines[g][0])] + ([(g, lines[g][1])] if len(lines[g]) > 1 else [])
        seq.append((host, lines[host][(e + 1) % len(lines[host])]))
        sets["feed"].append((f"feed-ep{e}", "feed", join(seq, list(rng.uniform(0.4, 1.0, len(seq) - 1)))))
    return sets


_stage_cpu = [0.0]


def _timed(fn):
    def wrapped(*a, **k):
        t0 = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            _stage_cpu[0] += time.process_time() - t0
    return wrapped


def segment(path: str, name: str, work: str, speakers: bool):
    """Kept segments and rejections of one file through the segment stage."""
    from schemas.keys import source_id_for_uri
    from schemas.records import Source
    from transforms.segment import SegmentConfig, segment_file
    uri = "file://" + path
    src = Source(uri=uri, source_id=source_id_for_uri(uri), origin=name)
    cfg = SegmentConfig(pack_dir=os.path.join(work, "packs"), speakers=speakers)
    kept, rejected = segment_file(src, path, cfg)
    return sorted(kept, key=lambda s: s.key), rejected


def ids_in_waves(group: str, segs, n_waves: int, shuffle: int = 0):
    """Speaker ids the speakers stage (``transforms.speakers.assign_group``) gives a group's clips when
    its sources are committed in ``n_waves`` waves, the known speakers carried as the corpus stores
    them; ``shuffle`` reorders the clips each wave's call receives."""
    from schemas.records import Transcript
    from speakers import cluster
    from speakers.turns import embedding_of
    from transforms.speakers import SPEAKERS, assign_group
    sources = sorted({s.source.source_id: cluster.listing_order(s.source.origin) for s in segs}.items(),
                     key=lambda kv: (kv[1], kv[0]))
    known, ids = {}, {}
    for w in np.array_split(np.arange(len(sources)), min(n_waves, len(sources))):
        in_wave = {sources[i][0] for i in w}
        part = [Transcript(s, "", 1.0, "none") for s in segs if s.source.source_id in in_wave]
        if shuffle:
            part = [part[i] for i in np.random.default_rng(shuffle).permutation(len(part))]
        for tag, rec in list(assign_group(group, part, list(known.values()), cluster.ClusterParams())):
            if tag == SPEAKERS:
                known[rec.speaker_id] = {"speaker_id": rec.speaker_id, "n_clips": rec.n_clips,
                                         "centroid": embedding_of(rec.centroid).tolist()}
            else:
                ids[rec.key] = rec.speaker
    return [ids[s.key] for s in segs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speakers_real", description=__doc__.split("\n\n")[0])
    p.add_argument("--voices", default="/work/realdata/voices", help="folder with one folder of wavs per person")
    p.add_argument("--pairs", type=int, default=8, help="conversations (pairs of people), each with 3 gap kinds")
    p.add_argument("--sets", default="single,conv,feed")
    p.add_argument("--verbose", action="store_true", help="a line per file: speech kept, clips, clips with two voices")
    args = p.parse_args(argv)
    from run.console import quiet_libraries
    quiet_libraries()
    import transforms.segment as seg_mod
    from audio.joined import kept_share, majority, purity
    seg_mod.one_voice_each = _timed(seg_mod.one_voice_each)

    sets = build_sets(args.voices, args.pairs)
    rows = []
    audio_total = 0.0
    with tempfile.TemporaryDirectory() as work:
        for set_name in args.sets.split(","):
            files = sets[set_name]
            kept_off, kept_on, n_clips, n_mixed, per_file_ids = [], [], 0, 0, []
            all_segs, truth_of = [], {}
            for name, group, joined in files:
                path = joined.write(os.path.join(work, name + ".wav"))
                audio_total += joined.duration_s
                off, _ = segment(path, name, work, False)
                on, _ = segment(path, name, work, True)
                kept_off.append(kept_share([(s.start_s, s.end_s) for s in off], joined.spans))
                kept_on.append(kept_share([(s.start_s, s.end_s) for s in on], joined.spans))
                file_mixed, others = 0, []
                for s in on:
                    v, other = majority(s.start_s, s.end_s, joined.spans)
                    n_clips += 1
                    file_mixed += other > MIXED_S
                    others.append(f"{s.start_s:.1f}-{s.end_s:.1f}:{other:.2f}")
                    truth_of[s.key] = v
                n_mixed += file_mixed
                if args.verbose:
                    print(f"  {name}: kept {kept_on[-1]:.1%} (off {kept_off[-1]:.1%}), {len(on)} clips, "
                          f"{file_mixed} with two voices; clip: seconds of another voice {' '.join(others)}",
                          file=sys.stderr)
                all_segs.append((group, on))
            groups: Dict[str, list] = {}
            for group, on in all_segs:
                groups.setdefault(group, []).extend(on)
            ids1, ids8, voices = {}, {}, {}
            t0 = time.process_time()
            for group, segs in groups.items():
                segs.sort(key=lambda s: s.key)
                ids1.update(zip([s.key for s in segs], ids_in_waves(group, segs, 1)))
            _stage_cpu[0] += time.process_time() - t0
            for group, segs in groups.items():
                ids8.update(zip([s.key for s in segs], ids_in_waves(group, segs, 8)))
            pur, ipv = [], []
            for group, segs in groups.items():
                keys = [s.key for s in segs if truth_of[s.key] is not None]
                if keys:
                    a, b = purity([ids1[k] for k in keys], [truth_of[k] for k in keys])
                    pur.append((a, len(keys)))
                    ipv.append(b)
                    if args.verbose and set_name != "single":
                        print(f"  {group}: purity {a:.3f}, {b:.2f} ids per voice, {len(keys)} clips", file=sys.stderr)
                    voices.update({k: truth_of[k] for k in keys})
            if set_name == "single":
                per_file_ids = [len({ids1[s.key] for s in on}) for _, on in all_segs]
                if args.verbose:
                    for (name, _, _), n in zip(files, per_file_ids):
                        if n != 1:
                            print(f"  {name}: {n} speaker ids", file=sys.stderr)
            total = sum(n for _, n in pur) or 1
            rows.append((set_name, len(files), float(np.mean(kept_off)), float(np.mean(kept_on)), min(kept_on),
                         n_mixed / max(1, n_clips), sum(a * n for a, n in pur) / total, float(np.mean(ipv)) if ipv else 0,
                         (f"{min(per_file_ids)}–{max(per_file_ids)} ({sum(n == 1 for n in per_file_ids)} one)"
                          if per_file_ids else "-"),
                         sum(ids1[k] == ids8[k] for k in ids1) / max(1, len(ids1))))
            print(f"{set_name} done", file=sys.stderr)
    print(f"{'set':8s} {'files':>5s} {'kept off':>9s} {'kept on':>8s} {'min on':>7s} {'2 voices':>9s} "
          f"{'purity':>7s} {'ids/voice':>10s} {'ids/file':>14s} {'1=8 waves':>10s}")
    for r in rows:
        print(f"{r[0]:8s} {r[1]:5d} {r[2]:9.1%} {r[3]:8.1%} {r[4]:7.1%} {r[5]:9.1%} {r[6]:7.3f} {r[7]:10.2f} "
              f"{r[8]:>14s} {r[9]:10.1%}")
    print(f"speaker stage: {audio_total:.0f} s of audio, {_stage_cpu[0]:.1f} CPU-s "
          f"({audio_total / max(_stage_cpu[0], 1e-9):.0f}× realtime per CPU-second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
