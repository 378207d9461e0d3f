"""Sung vocals: what the segment stage makes of real songs with a singer.

    python -m benchmarks.singing_real [--songs /usr/share/games/fretsonfire/data/songs]

The songs are Debian's Frets on Fire song packages (``fretsonfire-songs-muldjord``, CC-BY-SA-3.0:
four metal songs, sung and growled lyrics that Whisper transcribes, a short spoken intro in
"Chaos God"; ``fretsonfire-songs-sectoid``, where installed, is instrumental: Whisper finds no
lyrics in it). Each ``song.ogg`` (the band's mix
without the lead guitar) runs through the segment stage as the pipeline runs it (speakers off),
once with the default gates and once with every audio gate off. Printed, as Markdown, per song:
its length, the seconds Silero VAD calls speech, the clips scored, and what each run keeps and
rejects; with the gates off, the kept clips' medians of ``speech_ratio`` and ``snr_db``.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import Counter

import numpy as np

from benchmarks import scratch_dir


def run(path: str, name: str, d: str, gates):
    from schemas.records import Source
    from transforms.segment import SegmentConfig, segment_file
    cfg = SegmentConfig(pack_dir=os.path.join(d, "packs"), speakers=False, gates=gates)
    return segment_file(Source("file://" + path, name), path, cfg)


def speech_seconds(path: str) -> tuple:
    from audio.decoded import decode_to_scratch
    from audio.vad import on_grid, speech_mask
    with decode_to_scratch(path, 22050, vad=True) as d:
        mask = speech_mask(on_grid(d.speech_probs, len(d.db), d.hop_s))
        return d.duration_s, float(np.count_nonzero(mask) * d.hop_s)


def main(argv=None) -> int:
    from transforms.quality import AudioGates
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--songs", default="/usr/share/games/fretsonfire/data/songs")
    args = ap.parse_args(argv)
    songs = sorted(glob.glob(os.path.join(args.songs, "*", "*", "song.ogg")))
    if not songs:
        print(f"no */*/song.ogg under {args.songs}: apt-get install fretsonfire-songs-muldjord", file=sys.stderr)
        return 2
    off = AudioGates(min_speech_ratio=None, min_bandwidth_hz=None, max_clipping=None, min_snr_db=None,
                     max_rt60_s=None).validate()
    print("| song | length | VAD speech | default gates: kept / rejected | gates off: kept "
          "| kept: speech_ratio, snr_db (median) |\n|---|---:|---:|---|---:|---|")
    with scratch_dir("singing-real-") as d:
        for path in songs:
            name = os.path.basename(os.path.dirname(path)).replace(" ", "_")
            length, speech = speech_seconds(path)
            kept, rejected = run(path, name, d, AudioGates().validate())
            why = Counter(r.reason for r in rejected)
            kept_off, _ = run(path, name + "_off", d, off)
            med = ""
            if kept_off:
                med = (f"{np.median([s.scores.speech_ratio for s in kept_off]):.2f}, "
                       f"{np.median([s.scores.snr_db for s in kept_off]):.1f}")
            print(f"| {name} | {length:.0f} s | {speech:.1f} s | {len(kept)} / "
                  f"{', '.join(f'{k}: {n}' for k, n in why.most_common()) or '–'} | {len(kept_off)} | {med} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
