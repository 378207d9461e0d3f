"""What each audio gate's default keeps and drops: the measurements the defaults were chosen from.

    python -m benchmarks.gate_defaults

Builds one corpus with every gate off (and DNSMOS on) from espeak-ng speech — clean, under music
and in noise at several SNRs, telephone-band and 16 kHz audio upsampled to 44.1 kHz, clipped
speech — and the real recordings in ../shared/data/real_speech, then prints each input's median
scores and what the default gates would do with its clips, as a Markdown table. About a minute.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks import scratch_dir

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real_speech"


def inputs(d: str) -> dict:
    import soundfile as sf

    from audio.ffmpeg import ffmpeg_binary
    from audio.synth import SENTENCES, build_recording, mix, music, pink_noise

    def ff(*a):
        subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", *a], check=True)
    rec = build_recording(SENTENCES[:5], [0.8, 0.9, 0.8, 1.0], seed=11)
    files = {"espeak clean": rec.write(f"{d}/clean.wav")}
    for snr in (0, 10):
        files[f"espeak under music {snr} dB"] = mix(rec, music(40, seed=8), snr).write(f"{d}/music{snr}.wav")
    for snr in (0, 10, 20):
        files[f"espeak in noise {snr} dB"] = mix(rec, pink_noise(40, seed=9), snr).write(f"{d}/noise{snr}.wav")
    ff("-i", files["espeak clean"], "-af", "highpass=f=300,lowpass=f=3400", "-ar", "8000", f"{d}/t8.wav")
    ff("-i", f"{d}/t8.wav", "-ar", "44100", f"{d}/tel.wav")
    files["telephone band -> 44.1 kHz"] = f"{d}/tel.wav"
    ff("-i", files["espeak clean"], "-ar", "16000", f"{d}/s16.wav")
    ff("-i", f"{d}/s16.wav", "-ar", "44100", f"{d}/up16.wav")
    files["16 kHz -> 44.1 kHz"] = f"{d}/up16.wav"
    x = rec.audio / np.abs(rec.audio).max()
    for g in (0.4, 0.7):
        sf.write(f"{d}/clip{g}.wav", np.clip(x, -g, g) / g * 0.9, 22050)
        files[f"clipped at {int(g * 100)} % of peak, x0.9"] = f"{d}/clip{g}.wav"
    for f in sorted(glob.glob(str(REAL / "*"))):
        files["real: " + os.path.basename(f)] = f
    return files


def verdict(clips, gates) -> str:
    from schemas.records import SCORE_FIELDS, ClipScores
    from transforms.quality import judge_audio
    verdicts = [judge_audio(ClipScores(**{k: r[k] for k in SCORE_FIELDS}), gates) for r in clips]
    kept = sum(v is None for v in verdicts)
    why = sorted({v[0] for v in verdicts if v})
    return f"{kept} kept" + (f", {len(clips) - kept} {'/'.join(why)}" if why else "")


def main() -> int:
    from run.console import quiet_libraries
    quiet_libraries()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pyarrow.parquet as pq

    from asr.tiny import build_tiny_model
    from pipelines.build_corpus import run
    from schemas.records import SCORE_FIELDS
    from transforms.quality import AudioGates

    with scratch_dir("speechmill-gates-") as d:
        files = inputs(d)
        Path(f"{d}/s.txt").write_text("\n".join(files.values()) + "\n")
        off = ["none"]
        run(["--sources", f"{d}/s.txt", "--output", f"{d}/c", "--asr_model", build_tiny_model(f"{d}/m"),
             "--min_confidence", *off, "--min_chars_per_s", *off, "--max_chars_per_s", *off, "--rate_outlier_iqr", *off,
             "--min_speech_ratio", *off, "--min_bandwidth_hz", *off, "--max_clipping", *off, "--min_snr_db", *off,
             "--dnsmos", "on", "--min_dnsmos_ovrl", *off])
        rows = [r for f in glob.glob(f"{d}/c/manifest/*.parquet") for r in pq.read_table(f).to_pylist()]
        sources = [r for f in glob.glob(f"{d}/c/sources/*.parquet") for r in pq.read_table(f).to_pylist()]
    print("| audio | clips | speech_ratio | bandwidth_hz | clipping | snr_db | dnsmos_ovrl | default gates (CPU) "
          "| + DNSMOS ≥ 2.5 (GPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, path in files.items():
        uri = "file://" + os.path.abspath(path)
        clips = [r for r in rows if r["source_uri"] == uri]
        if not clips:
            st = next((s for s in sources if s["uri"] == uri), {})
            print(f"| {name} | 0 | | | | | | {st.get('status')} {st.get('reason')} |")
            continue
        med = {k: float(np.median([r[k] for r in clips])) for k in SCORE_FIELDS if clips[0][k] is not None}
        print(f"| {name} | {len(clips)} | {med['speech_ratio']:.2f} | {med['bandwidth_hz']:.0f} | "
              f"{med['clipping']:.4f} | {med['snr_db']:.1f} | {med.get('dnsmos_ovrl', float('nan')):.2f} | "
              f"{verdict(clips, AudioGates())} | {verdict(clips, AudioGates(min_dnsmos_ovrl=2.5))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
