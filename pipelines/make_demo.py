"""Make the demo input from real speech: LibriVox recordings joined by known pauses, and a sources list.

``python -m pipelines.make_demo DIR`` writes ``DIR/audio/*`` (clips of a public-domain LibriVox
reading of *Sense and Sensibility*, shipped with Debian's pocketsphinx-testdata, joined by pauses;
one recording as a stereo 48 kHz MP3 to show decoding), ``DIR/sources.txt`` and
``DIR/references.txt`` (what is said in each recording). The demo transcribes them with the
bundled Whisper model (``--asr_model builtin:whisper-tiny.en``): nothing is downloaded.
``DIR/tiny-wav2vec2`` is a tiny random-weight CTC model for runs that test the plumbing alone.
``python -m pipelines.make_demo --sample CORPUS`` prints one transcript of a built corpus.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np

from asr.tiny import build_tiny_model
from audio.ffmpeg import ffmpeg_binary
from run.console import quiet_libraries

LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
RATE = 16000
ORDERS = [(0, 1, 2), (3, 4, 1), (2, 4, 0)]  # clips of each recording, by index in the sorted list
PAUSES = [(0.9, 1.2), (1.1, 0.8), (1.3, 1.0)]


def librivox_clips(folder: str = LIBRIVOX):
    """(audio at 16 kHz, reference text) of each LibriVox clip, in file order."""
    import soundfile as sf
    path = os.path.join(folder, "transcription")
    if not os.path.exists(path):
        raise SystemExit(f"[demo] {path} is missing: install Debian's pocketsphinx-testdata "
                         "(scripts/setup.sh does)")
    refs = {}
    with open(path) as f:
        for line in f:
            text, _, ident = line.strip().rpartition(" (")
            refs[ident.rstrip(")")] = text.replace("<s>", "").replace("</s>", "").strip()
    out = []
    for wav in sorted(glob.glob(os.path.join(folder, "*.wav"))):
        a, sr = sf.read(wav, dtype="float32")
        if sr != RATE or a.ndim != 1:
            raise SystemExit(f"[demo] {wav}: expected 16 kHz mono, got {sr} Hz, shape {a.shape}")
        out.append((a, refs[os.path.basename(wav)[:-4].removeprefix("librivox_")]))
    return out


def make_demo(out_dir: str, n_recordings: int = 3) -> str:
    import soundfile as sf
    clips = librivox_clips()
    audio_dir = os.path.join(out_dir, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    lines, refs = [], {}
    for i in range(n_recordings):
        order, pauses = ORDERS[i % len(ORDERS)], PAUSES[i % len(PAUSES)]
        parts = [np.zeros(int(0.4 * RATE), np.float32)]
        for k, c in enumerate(order):
            parts.append(clips[c][0])
            parts.append(np.zeros(int((pauses[k] if k < len(pauses) else 0.4) * RATE), np.float32))
        rec = np.concatenate(parts)
        wav = os.path.join(audio_dir, f"reading{i}.wav")
        sf.write(wav, rec, RATE, subtype="PCM_16")
        if i == n_recordings - 1:  # one source as a stereo 48 kHz MP3, as downloads often are
            mp3 = wav[:-4] + ".mp3"
            subprocess.run([ffmpeg_binary(), "-nostdin", "-y", "-loglevel", "error", "-i", wav, "-ac", "2",
                            "-ar", "48000", mp3], check=True)
            os.unlink(wav)
            wav = mp3
        rel = os.path.relpath(wav, out_dir)
        lines.append(rel)
        refs[rel] = " ".join(clips[c][1] for c in order)
        print(f"[demo] {wav}: {len(rec) / RATE:.1f} s, {len(order)} LibriVox sentences", file=sys.stderr)
    with open(os.path.join(out_dir, "sources.txt"), "w") as f:
        f.write("# demo sources: paths are relative to this file\n" + "\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "references.txt"), "w") as f:
        f.write("".join(f"{k}\t{v}\n" for k, v in refs.items()))
    build_tiny_model(os.path.join(out_dir, "tiny-wav2vec2"))
    return out_dir


def sample_line(corpus: str) -> str:
    """One kept clip's transcript, its source and times, from the corpus manifest."""
    import pyarrow.parquet as pq
    rows = [r for p in sorted(glob.glob(os.path.join(corpus, "manifest", "*.parquet")))
            for r in pq.read_table(p, columns=["key", "text", "duration_s", "confidence"]).to_pylist()]
    if not rows:
        return f"[demo] no clip was kept in {corpus} (see {corpus}/rejected/*.parquet)"
    r = sorted(rows, key=lambda r: r["key"])[0]
    return (f"[demo] sample transcript ({r['key']}, {r['duration_s']:.1f} s, confidence {r['confidence']:.2f}): "
            f"{json.dumps(r['text'], ensure_ascii=False)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.make_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", nargs="?", help="where to write the demo input (e.g. demo)")
    p.add_argument("--recordings", type=int, default=3, help="how many recordings to make (default 3)")
    p.add_argument("--sample", metavar="CORPUS", help="print one transcript of a built corpus instead")
    args = p.parse_args(argv)
    if args.sample:
        print(sample_line(args.sample))
        return 0
    if not args.out_dir:
        p.error("give out_dir (or --sample CORPUS)")
    quiet_libraries()
    make_demo(args.out_dir, args.recordings)
    print(f"[demo] wrote {args.out_dir}/sources.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
