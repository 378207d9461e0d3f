"""Whisper through faster-whisper (CTranslate2): batched transcripts, word timings, gates, confidence.

* Loading: ``locate`` turns ``--asr_model`` into a CTranslate2 folder (a builtin alias, a folder, a
  faster-whisper size name or CT2 hub id, or a Hugging Face Whisper id or folder converted once
  into a local cache). Weights run int8 on CPU, fp16 on CUDA (bf16 with ``--asr_dtype bf16``).
* Batching: one ``AsrBatch`` is one call of faster-whisper's ``BatchedInferencePipeline``: its
  clips are laid end to end and named by ``clip_timestamps``, so every clip (a clip over 30 s in
  30 s pieces) is one row of one encoder and decoder batch, decoded with beam search and no
  conditioning on other clips. Segments come back with their chunk's offset and are mapped back
  to their clips; word times are made relative to the clip's start.
* Confidence: a word's is the model's word probability (the mean probability of the word's
  tokens, from the alignment pass that gives the word timings); a clip's is the geometric mean of
  its words' probabilities, ``exp(mean(log p_word))``, 0 for an empty transcript, so one very
  unsure word weighs more than in an arithmetic mean (as with the CTC confidence in ``asr.ctc``).
* Gates (``WhisperGates``): Whisper's own failure modes, judged per clip from the decoder's
  scores, each a rejection reason with the value and threshold (see ``judge_whisper``).
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult

from asr.builtin import ModelNotFound, locate
from asr.ctc import Word
from asr.handler import AsrCall, AsrHandler
from asr.model import AsrModelSpec, ModelLoadError
from asr.spec import WhisperGates
from asr.transcriber import AsrOutput, TranscribeOptions
from schemas.records import AsrBatch

RATE = 16000
CHUNK_S = 30.0  # Whisper's window


@dataclass(frozen=True)
class WhisperScores:
    """A clip's decoder scores: the worst of its chunks (a clip up to 30 s is one chunk)."""

    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float
    duration_s: float


_WORD = re.compile(r"[\w']+")


def words_of(text: str) -> List[str]:
    return [w.lower() for w in _WORD.findall(text)]


def longest_repeat(words: Sequence[str], max_n: int = 4) -> Tuple[int, str]:
    """The most times any n-gram (n = 1..max_n words) occurs back to back, and that n-gram."""
    best, gram = (1, words[0]) if words else (0, "")
    for n in range(1, max_n + 1):
        for start in range(n):  # every phase of the n-gram grid
            run, prev = 1, None
            for i in range(start, len(words) - n + 1, n):
                g = tuple(words[i:i + n])
                run = run + 1 if g == prev else 1
                prev = g
                if run > best:
                    best, gram = run, " ".join(g)
    return best, gram


def compression_ratio(text: str) -> float:
    from faster_whisper.transcribe import get_compression_ratio
    return float(get_compression_ratio(text)) if text else 0.0


def judge_whisper(text: str, s: WhisperScores, g: WhisperGates) -> Optional[Tuple[str, str]]:
    """None to keep, else (reason, detail): silence or noise heard as words (``no_speech``), an unsure
    decode (``low_avg_logprob``), a hallucination loop (``repetitive_text`` by gzip compression ratio,
    ``repeated_ngram`` by words), or more text than the audio can hold (``text_exceeds_audio``)."""
    if g.max_no_speech_prob is not None and s.no_speech_prob > g.max_no_speech_prob:
        return "no_speech", f"no_speech_prob {s.no_speech_prob:.3f} > {g.max_no_speech_prob:g}"
    if g.min_avg_logprob is not None and s.avg_logprob < g.min_avg_logprob:
        return "low_avg_logprob", f"avg_logprob {s.avg_logprob:.3f} < {g.min_avg_logprob:g}"
    cr = compression_ratio(text)
    if g.max_compression_ratio is not None and cr > g.max_compression_ratio:
        return "repetitive_text", f"compression_ratio {cr:.2f} > {g.max_compression_ratio:g}"
    if g.max_ngram_repeats is not None:
        n, gram = longest_repeat(words_of(text))
        if n > g.max_ngram_repeats:
            return "repeated_ngram", f"{gram!r} {n} times in a row > {g.max_ngram_repeats}"
    if g.max_chars_per_s is not None and s.duration_s > 0 and len(text) / s.duration_s > g.max_chars_per_s:
        return ("text_exceeds_audio",
                f"{len(text)} chars in {s.duration_s:.2f} s = {len(text) / s.duration_s:.1f}/s > {g.max_chars_per_s:g}")
    return None


def clip_confidence(probs: Sequence[float]) -> float:
    """exp(mean(log p_word)); 0 without words."""
    if not len(probs):
        return 0.0
    return float(math.exp(np.mean(np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-6, 1.0)))))


def compute_type(spec: AsrModelSpec) -> str:
    """int8 on CPU; on CUDA fp16, or bf16 when asked for."""
    if not spec.device.startswith("cuda"):
        return "int8"
    return "bfloat16" if spec.dtype == "bf16" else "float16"


class WhisperTranscriber:
    """A loaded Whisper model; ``__call__`` transcribes one batch of clips at 16 kHz."""

    def __init__(self, spec: AsrModelSpec, gates: WhisperGates = WhisperGates(), beam_size: int = 5,
                 cpu_threads: Optional[int] = None):
        from faster_whisper import WhisperModel
        try:
            folder = locate(spec.model, spec.revision)
        except ModelNotFound as e:
            raise ModelLoadError(str(e)) from e
        device, _, index = spec.device.partition(":")
        if cpu_threads is None:  # the worker's share of the machine's cores (run.engine), else CTranslate2's default
            cpu_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
        self.model = WhisperModel(folder, device=device, device_index=int(index or 0),
                                  compute_type=compute_type(spec), cpu_threads=cpu_threads)
        self.label, self.gates, self.beam_size = spec.label, gates.validate(), beam_size
        self.language = None if self.model.model.is_multilingual else "en"

    def chunks(self, audio: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[dict], List[int], List[int]]:
        """Clips end to end, their ≤ 30 s chunks (seconds), each chunk's clip, each clip's first sample."""
        offsets, stamps, owner, at = [], [], [], 0
        step = int(CHUNK_S * RATE)
        for i, a in enumerate(audio):
            offsets.append(at)
            for s in range(0, len(a), step):
                e = min(len(a), s + step)
                stamps.append({"start": (at + s) / RATE, "end": (at + e) / RATE})
                owner.append(i)
            at += len(a)
        joined = np.concatenate([np.asarray(a, dtype=np.float32) for a in audio]) if audio else np.zeros(0, np.float32)
        return joined, stamps, owner, offsets

    def decode(self, audio: Sequence[np.ndarray]) -> List[Tuple[str, Tuple[Word, ...], Optional[WhisperScores]]]:
        """Per clip: its text, its words (times from the clip's start) and its decoder scores
        (None for a clip under 0.1 s, which is not given to the model)."""
        from faster_whisper import BatchedInferencePipeline
        keep = [i for i, a in enumerate(audio) if len(a) >= RATE // 10]  # < 0.1 s: nothing to hear
        out: List[Tuple[str, Tuple[Word, ...], Optional[WhisperScores]]] = [("", (), None) for _ in audio]
        if not keep:
            return out
        clips = [audio[i] for i in keep]
        joined, stamps, owner, offsets = self.chunks(clips)
        starts = np.array([round(s["start"] * self.model.frames_per_second) for s in stamps])
        pipe = BatchedInferencePipeline(self.model)
        segments, _ = pipe.transcribe(joined, language=self.language, clip_timestamps=stamps,
                                      batch_size=len(stamps), beam_size=self.beam_size, word_timestamps=True,
                                      vad_filter=False, log_progress=False)
        texts: List[List[str]] = [[] for _ in clips]
        words: List[List[Word]] = [[] for _ in clips]
        worst = [[0.0, 0.0] for _ in clips]  # max no_speech_prob, min avg_logprob
        for seg in segments:
            c = owner[int(np.argmin(np.abs(starts - seg.seek)))]
            t0 = offsets[c] / RATE
            texts[c].append(seg.text.strip())
            worst[c][0] = max(worst[c][0], float(seg.no_speech_prob))
            worst[c][1] = min(worst[c][1], float(seg.avg_logprob))
            for w in seg.words or ():
                if w.word.strip():
                    words[c].append(Word(w.word.strip(), round(max(0.0, float(w.start) - t0), 3),
                                         round(max(0.0, float(w.end) - t0), 3), round(float(w.probability), 4)))
        for j, i in enumerate(keep):
            text = " ".join(t for t in texts[j] if t)
            out[i] = (text, tuple(words[j]),
                      WhisperScores(worst[j][0], worst[j][1], compression_ratio(text), len(clips[j]) / RATE))
        return out

    def __call__(self, audio: Sequence[np.ndarray]) -> List[AsrOutput]:
        """Transcripts of clips at 16 kHz; a clip the gates refuse carries ``rejected``."""
        out = []
        for text, words, scores in self.decode(audio):
            verdict = judge_whisper(text, scores, self.gates) if text and scores is not None else None
            out.append(AsrOutput(text, round(clip_confidence([w.confidence for w in words]), 4), words,
                                 rejected=verdict))
        return out

    def score(self, audio: np.ndarray, texts: Sequence[str]) -> List[Tuple[float, List[Tuple[str, float]]]]:
        """The model's own scoring of given transcripts of one clip (≤ 30 s), encoded once: per text the
        clip confidence and each word's probability, from the alignment pass that gives word timings."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        m = self.model
        tok = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language=self.language or "en")
        feats = m.feature_extractor(np.asarray(audio, dtype=np.float32))
        n_frames = min(feats.shape[-1], m.feature_extractor.nb_max_frames)
        enc = m.encode(pad_or_trim(feats[:, :n_frames]))
        out = []
        for text in texts:
            tokens = [t for t in tok.encode(" " + text.strip()) if t < tok.eot]
            aligned = m.find_alignment(tok, [tokens], enc, n_frames)[0]
            probs = [(w["word"].strip(), float(w["probability"])) for w in aligned if w["word"].strip()]
            out.append((clip_confidence([p for _, p in probs]), probs))
        return out


class WhisperModelHandler(AsrHandler):
    """Beam RunInference handler for Whisper, the counterpart of ``asr.handler.CtcModelHandler``:
    one ``AsrBatch`` per call, the model loaded once per worker process, a call that raises
    becomes an error for each of its clips."""

    def __init__(self, spec: AsrModelSpec, opts: TranscribeOptions = TranscribeOptions(),
                 gates: WhisperGates = WhisperGates()):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self.spec, self.opts, self.gates = spec, opts, gates.validate()
        self._samples = Metrics.counter("speechmill_asr", "audio_samples")
        self._padded = Metrics.counter("speechmill_asr", "padding_samples")

    def load_model(self) -> WhisperTranscriber:
        return WhisperTranscriber(self.spec, self.gates)

    def run_inference(self, batch: Sequence[AsrBatch], model: WhisperTranscriber,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        results = []
        for b in batch:
            started = time.perf_counter()
            try:
                if b.sample_rate != RATE:
                    raise ValueError(f"Whisper needs {RATE} Hz audio, the batch is at {b.sample_rate} Hz")
                outputs = tuple(model(list(b.audio)))
            except Exception as e:  # noqa: BLE001 - reported per clip, the run goes on
                detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                results.append(PredictionResult(b, AsrCall(tuple(AsrOutput("", 0.0, error=detail)
                                                                 for _ in b.segments)), model.label))
                continue
            samples = b.total_samples
            window = int(CHUNK_S * RATE)
            padded = sum(-(-len(a) // window) * window for a in b.audio) - samples  # every chunk is padded to 30 s
            self._samples.inc(samples)
            self._padded.inc(padded)
            results.append(PredictionResult(b, AsrCall(outputs, samples, padded, time.perf_counter() - started),
                                            model.label))
        return results

