"""Whisper tiny.en (int8, CPU) against the tiny random-weight CTC model on the same real speech, and
the measurements behind Whisper's gate and confidence defaults.

    python -m benchmarks.asr_whisper [--realdata /work/realdata] [--moh DIR] [--threads 2]

* speed: seconds of audio per CPU-second of the whole process (all threads), for the builtin
  Whisper tiny.en and the tiny CTC model from ``asr.tiny``, each warmed up once and timed on the
  same clips (the LibriVox clips of pocketsphinx-testdata and the real_speech clips in
  ../shared/data), batched as the pipeline batches on CPU (about 20 s of audio per call).
* WER: corpus word error rate of both against the LibriVox references (``asr.wer``).
* gates: per clip no_speech_prob, avg_logprob, compression ratio, longest back-to-back n-gram
  repeat, characters per second and confidence, on real speech (the clips above and the voices
  under ``--realdata``) and on non-speech (digital silence, white noise, the noise recordings under
  ``--realdata`` and music: the wav files under ``--moh``, e.g. Debian's asterisk-moh-opsound-wav
  unpacked with ``dpkg-deb -x``); and the confidence Whisper gives its own transcript of a clip
  against another clip's transcript and against its own with every third word replaced.
"""
from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np

LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                      "real_speech")
RATE = 16000


def load(path: str, max_s: float = 20.0) -> np.ndarray:
    import soundfile as sf
    import soxr
    a, sr = sf.read(path, dtype="float32", always_2d=True)
    a = a.mean(axis=1)
    if sr != RATE:
        a = soxr.resample(a, sr, RATE)
    return np.ascontiguousarray(a[: int(max_s * RATE)], dtype=np.float32)


def librivox():
    refs = {}
    with open(os.path.join(LIBRIVOX, "transcription")) as f:
        for line in f:
            text, _, ident = line.strip().rpartition(" (")
            refs[ident.rstrip(")")] = text.replace("<s>", "").replace("</s>", "").strip()
    return [(load(os.path.join(LIBRIVOX, k + ".wav")), v) for k, v in sorted(refs.items())]


def batches(clips, batch_s: float = 20.0):
    out, cur, dur = [], [], 0.0
    for c in clips:
        if cur and dur + len(c) / RATE > batch_s:
            out.append(cur)
            cur, dur = [], 0.0
        cur.append(c)
        dur += len(c) / RATE
    return out + ([cur] if cur else [])


def cpu_rate(fn, groups) -> tuple:
    fn(groups[0])  # warm-up
    t0 = time.process_time()
    outs = [o for g in groups for o in fn(g)]
    cpu = time.process_time() - t0
    audio = sum(len(c) for g in groups for c in g) / RATE
    return audio / cpu, outs, cpu, audio


def pct(values, q):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def describe(name, rows):
    print(f"  {name} ({len(rows)} clips)")
    for field in ("no_speech_prob", "avg_logprob", "compression_ratio", "repeat", "chars_per_s", "confidence"):
        v = [r[field] for r in rows]
        print(f"    {field:18s} min {min(v):8.3f}  p5 {pct(v, 5):8.3f}  median {pct(v, 50):8.3f}  "
              f"p95 {pct(v, 95):8.3f}  max {max(v):8.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.asr_whisper", description=__doc__.split("\n\n")[0])
    p.add_argument("--realdata", default="/work/realdata", help="voices/ and noise/ for the gate measurements")
    p.add_argument("--moh", default=None, help="a folder of music wav files (non-speech)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both models (default 2)")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)

    from asr.model import AsrModelSpec, load_ctc_model
    from asr.tiny import build_tiny_model
    from asr.transcriber import Transcriber
    from asr.wer import corpus_wer
    from asr.whisper import WhisperTranscriber, compression_ratio, longest_repeat, words_of

    lv = librivox()
    shared = [load(f) for f in sorted(glob.glob(os.path.join(SHARED, "*"))) if not f.endswith("multilingual.mp3")]
    speech = [a for a, _ in lv] + shared
    groups = batches(speech)

    whisper = WhisperTranscriber(AsrModelSpec(model="builtin:whisper-tiny.en"), cpu_threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ctc = Transcriber(load_ctc_model(AsrModelSpec(model=build_tiny_model(os.path.join(tmp, "tiny")))))
        w_rate, w_out, w_cpu, audio = cpu_rate(whisper, groups)
        c_rate, c_out, c_cpu, _ = cpu_rate(ctc, groups)
    refs = [r for _, r in lv]
    print(f"speed on {audio:.1f} s of real speech in {len(groups)} calls, {args.threads} threads "
          f"(audio seconds per CPU-second of the process):")
    print(f"  whisper tiny.en int8   {w_rate:7.1f} x  ({w_cpu:.2f} CPU-s)")
    print(f"  tiny random CTC fp32   {c_rate:7.1f} x  ({c_cpu:.2f} CPU-s)   whisper/ctc = {w_rate / c_rate:.2f}")
    print(f"WER on the {len(lv)} LibriVox clips: whisper {corpus_wer(refs, [o.text for o in w_out[:len(lv)]]):.3f}, "
          f"tiny CTC {corpus_wer(refs, [o.text for o in c_out[:len(lv)]]):.3f}")

    def rows_of(clips):
        rows = []
        for g in batches(clips):
            for (text, words, s), a in zip(whisper.decode(g), g):
                if s is None:
                    continue
                probs = [w.confidence for w in words]
                from asr.whisper import clip_confidence
                rows.append(dict(text=text, no_speech_prob=s.no_speech_prob, avg_logprob=s.avg_logprob,
                                 compression_ratio=compression_ratio(text), repeat=longest_repeat(words_of(text))[0],
                                 chars_per_s=len(text) / (len(a) / RATE), confidence=clip_confidence(probs)))
        return rows

    voices = [load(f) for f in sorted(glob.glob(os.path.join(args.realdata, "voices", "*", "*.wav")))]
    real = rows_of(speech + voices)
    rng = np.random.default_rng(0)
    noise_files = sorted(glob.glob(os.path.join(args.realdata, "noise", "wav16k", "*", "*.wav")))
    music_files = sorted(glob.glob(os.path.join(args.moh, "**", "*.wav"), recursive=True)) if args.moh else []
    nonspeech = {
        "silence": [np.zeros(RATE * 5, np.float32)],
        "white noise": [(rng.standard_normal(RATE * 5) * a).astype(np.float32) for a in (0.01, 0.1, 0.3)],
        "noise recordings": [load(f) for f in noise_files],
        "music": [load(f, 15.0) for f in music_files],
    }
    print("gates: decoder scores per clip")
    describe("real speech", real)
    for name, clips in nonspeech.items():
        if clips:
            rows = rows_of(clips)
            describe(name, rows)
            for r in rows:
                print(f"      {r['no_speech_prob']:.3f} {r['avg_logprob']:7.3f} {r['compression_ratio']:5.2f} "
                      f"{r['repeat']:2d} {r['chars_per_s']:5.1f} {r['confidence']:.3f} {r['text'][:70]!r}")

    print("confidence of a given transcript (the model's own scoring, LibriVox clips):")
    texts = [o.text for o in w_out[:len(lv)]]
    vocab = [w for t in texts for w in t.split()]
    for i, (a, _) in enumerate(lv):
        ws = texts[i].split()
        injected = " ".join(rng.choice(vocab) if k % 3 == 2 else w for k, w in enumerate(ws))
        own, other, wrong = (c for c, _ in whisper.score(a, [texts[i], texts[(i + 1) % len(texts)], injected]))
        print(f"  clip {i}: own {own:.3f}  another clip's {other:.3f}  every 3rd word replaced {wrong:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
