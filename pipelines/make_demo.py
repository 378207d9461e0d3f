"""Make the demo input: synthesised speech, a sources list and a tiny random-weight CTC model.

``python -m pipelines.make_demo DIR`` writes ``DIR/audio/*.wav`` (espeak-ng sentences joined by
known pauses, one recording as a stereo 48 kHz MP3 to show decoding), ``DIR/sources.txt`` and
``DIR/tiny-wav2vec2``. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from asr.tiny import build_tiny_model
from audio.ffmpeg import ffmpeg_binary
from audio.synth import SENTENCES, build_recording
from run.console import quiet_libraries

VOICES = [["en-us"], ["en-gb"], ["en-us", "en-gb"]]


def make_demo(out_dir: str, n_recordings: int = 3) -> str:
    audio_dir = os.path.join(out_dir, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    lines = []
    for i in range(n_recordings):
        texts = [SENTENCES[(i * 5 + j) % len(SENTENCES)] for j in range(8)]
        pauses = [0.3, 0.9, 0.25, 1.2, 0.4, 0.8, 1.5][: len(texts) - 1]
        rec = build_recording(texts, pauses, seed=i, voices=VOICES[i % len(VOICES)])
        wav = os.path.join(audio_dir, f"talk{i}.wav")
        rec.write(wav)
        if i == n_recordings - 1:  # one source as a stereo 48 kHz MP3, as downloads often are
            mp3 = wav[:-4] + ".mp3"
            subprocess.run([ffmpeg_binary(), "-nostdin", "-y", "-loglevel", "error", "-i", wav, "-ac", "2",
                            "-ar", "48000", mp3], check=True)
            os.unlink(wav)
            wav = mp3
        lines.append(os.path.relpath(wav, out_dir))
        print(f"[demo] {wav}: {rec.duration_s:.1f} s, {len(texts)} sentences", file=sys.stderr)
    with open(os.path.join(out_dir, "sources.txt"), "w") as f:
        f.write("# demo sources: paths are relative to this file\n" + "\n".join(lines) + "\n")
    build_tiny_model(os.path.join(out_dir, "tiny-wav2vec2"))
    return out_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.make_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="where to write the demo input (e.g. demo)")
    p.add_argument("--recordings", type=int, default=3, help="how many recordings to synthesise (default 3)")
    args = p.parse_args(argv)
    quiet_libraries()
    make_demo(args.out_dir, args.recordings)
    print(f"[demo] wrote {args.out_dir}/sources.txt and {args.out_dir}/tiny-wav2vec2", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
