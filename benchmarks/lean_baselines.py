"""The baselines of ``benchmarks.lean``, run as a script (``python lean_baselines.py pydub|naive IN OUTDIR``)
so that their processes import only their own libraries, not speechmill's."""
import json
import os
import resource
import sys

import soundfile as sf

RATE = 16000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_pydub(path: str, work: str) -> dict:
    from pydub import AudioSegment
    from pydub.silence import split_on_silence
    started = _cpu()
    audio = AudioSegment.from_file(path)
    chunks = split_on_silence(audio, min_silence_len=600, silence_thresh=-40)
    for i, chunk in enumerate(chunks):
        chunk.export(os.path.join(work, f"{i:06d}.wav"), format="wav")
    return {"audio_s": len(audio) / 1000, "clips": len(chunks), "steady_cpu_s": _cpu() - started}


def one_naive(path: str, work: str) -> dict:
    import torch
    from resemblyzer import VoiceEncoder, preprocess_wav
    from silero_vad import get_speech_timestamps, load_silero_vad
    vad, encoder = load_silero_vad(), VoiceEncoder("cpu", verbose=False)
    started = _cpu()
    wav = torch.from_numpy(sf.read(path, dtype="float32")[0])
    stamps = get_speech_timestamps(wav, vad, sampling_rate=RATE)
    audio = wav.numpy()
    for i, s in enumerate(stamps):
        seg = audio[s["start"]:s["end"]]
        encoder.embed_utterance(preprocess_wav(seg, source_sr=RATE))
        sf.write(os.path.join(work, f"{i:06d}.wav"), seg, RATE)
    return {"audio_s": len(audio) / RATE, "clips": len(stamps), "steady_cpu_s": _cpu() - started}



if __name__ == "__main__":
    what, path, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    print(json.dumps((one_pydub if what == "pydub" else one_naive)(path, work)))
