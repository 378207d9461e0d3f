"""Whisper (the builtin tiny.en) on real speech: Debian's pocketsphinx-testdata LibriVox clips and
their reference transcripts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import webdataset as wds

from asr.builtin import OFFLINE_ALIAS, BuiltinModelError, is_whisper, resolve_builtin
from asr.model import AsrModelSpec, ModelLoadError, check_available
from asr.wer import corpus_wer, normalise
from asr.whisper import (
    RATE,
    WhisperGates,
    WhisperModelHandler,
    WhisperScores,
    WhisperTranscriber,
    judge_whisper,
    longest_repeat,
)
from pipelines.build_corpus import run
from schemas.records import AsrBatch, Segment, Source, Transcript, ends_sentence
from transforms.quality import QualityConfig, judge
from transforms.routing import MAIN
from transforms.transcribe import FAILED, to_transcripts

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
pytestmark = pytest.mark.skipif(not (LIBRIVOX / "transcription").exists(),
                                reason="needs Debian's pocketsphinx-testdata (scripts/setup.sh installs it)")


def references() -> dict:
    refs = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        text, _, ident = line.strip().rpartition(" (")
        refs[ident.rstrip(")")] = text.replace("<s>", "").replace("</s>", "").strip()
    return refs


def audio(name: str) -> np.ndarray:
    a, sr = sf.read(str(LIBRIVOX / f"{name}.wav"), dtype="float32")
    assert sr == RATE
    return a


@pytest.fixture(scope="module")
def whisper() -> WhisperTranscriber:
    return WhisperTranscriber(AsrModelSpec(model=OFFLINE_ALIAS))


def test_corpus_from_real_speech_has_low_wer(tmp_path):
    refs = references()
    sources = tmp_path / "sources.txt"
    sources.write_text("".join(f"{LIBRIVOX / k}.wav\n" for k in sorted(refs)))
    out = tmp_path / "corpus"
    report = run(["--sources", str(sources), "--output", str(out), "--asr_model", OFFLINE_ALIAS,
                  "--min_clip_s", "2", "--speakers", "off"])
    samples = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False))
    meta = [json.loads(s["json"]) for s in samples]
    heard = {}
    for m in sorted(meta, key=lambda m: (m["source_id"], m["start_s"])):
        name = Path(m["source_uri"]).stem
        heard[name] = (heard.get(name, "") + " " + m["text"]).strip()
    assert set(heard) == set(refs)  # every clip kept, read back from the shards
    wer = corpus_wer([refs[k] for k in sorted(refs)], [heard[k] for k in sorted(refs)])
    assert wer <= 0.10, (wer, heard)
    assert all(m["asr_model"] == OFFLINE_ALIAS and m["words"] and m["confidence"] >= 0.6 for m in meta)
    assert all(m["sentence_end"] is ends_sentence(m["text"]) for m in meta)
    manifest = [r for f in (out / "manifest").glob("*.parquet") for r in pq.read_table(str(f)).to_pylist()]
    share = sum(r["sentence_end"] for r in manifest) / len(manifest)
    assert report["sentence_end_share"] == pytest.approx(share, abs=1e-4) and share > 0.5


def test_normaliser_counts_words_not_punctuation():
    assert normalise("Unless to be rather cold-hearted, Mr. Smith!") == "unless to be rather cold hearted mister smith"
    assert corpus_wer(["he was not an ill disposed young man"], ["He was not an ill-disposed young man."]) == 0
    assert corpus_wer(["a b c d"], ["a x c"]) == 0.5


def test_confidence_is_lower_for_text_the_audio_does_not_support(whisper):
    """The model's own scoring: its transcript of a clip against another clip's transcript and against
    its own with every third word replaced; the default --min_confidence (0.6) lies between."""
    names = sorted(references())[::2]
    clips = [audio(n) for n in names]
    texts = [o.text for o in whisper(clips)]
    swap = "dashwood selfish amiable leisure respectable"
    min_conf = QualityConfig().min_confidence
    for i, (a, text) in enumerate(zip(clips, texts)):
        words = text.split()
        injected = " ".join(swap.split()[k % 5] if k % 3 == 2 else w for k, w in enumerate(words))
        own, other, injected = (c for c, _ in whisper.score(a, [text, texts[(i + 1) % len(texts)], injected]))
        assert own >= min_conf > max(other, injected), (text, own, other, injected)


def test_word_times_follow_a_forced_cut(whisper):
    first, second = audio("sense_and_sensibility_01_austen_64kb-0880"), audio("sense_and_sensibility_01_austen_64kb-0930")
    gap = np.zeros(RATE, np.float32)
    joined = np.concatenate([first, gap, second])
    cut = len(first) / RATE
    # batched with the second clip alone, so times must be relative to each clip's own start
    out = whisper([joined, second])
    words = [w for w in out[0].words]
    last_of_first = max(i for i, w in enumerate(words) if normalise(w.text) == "man")
    assert words[last_of_first].end_s <= cut + 0.5
    assert words[last_of_first + 1].start_s >= cut, (cut, words)
    assert normalise(words[last_of_first + 1].text) == "he"
    assert out[1].words[0].start_s < 1.0 and out[1].words[-1].end_s <= len(second) / RATE + 0.1
    assert all(a.start_s <= a.end_s <= b.start_s + 0.01 for a, b in zip(words, words[1:]))


def segments(n: int):
    src = Source("file:///x.wav", "file-x")
    return tuple(Segment(f"file-x_{i:09d}", src, i, i + 1, 22050, "p", 0, 1) for i in range(n))


def test_silence_and_noise_are_rejected_with_a_reason_not_kept_as_text():
    rng = np.random.default_rng(0)
    nonspeech = [np.zeros(4 * RATE, np.float32), (rng.standard_normal(5 * RATE) * 0.1).astype(np.float32),
                 audio("sense_and_sensibility_01_austen_64kb-0930")]
    handler = WhisperModelHandler(AsrModelSpec(model=OFFLINE_ALIAS))
    model = handler.load_model()
    [result] = handler.run_inference([AsrBatch(segments(3), tuple(nonspeech))], model)
    rows = [(tag, x) for tag, x in to_transcripts(result) if tag in (MAIN, FAILED)]
    rejected = [x for tag, x in rows if tag == FAILED]
    kept = [x for tag, x in rows if tag == MAIN]
    assert [r.key for r in rejected] == ["file-x_000000000", "file-x_000000001"]
    assert all(r.reason in ("no_speech", "low_avg_logprob") and r.detail for r in rejected), rejected
    assert [t.key for t in kept] == ["file-x_000000002"] and "amiable" in kept[0].text


def test_hallucination_loop_gates():
    assert longest_repeat("thank you thank you thank you thank you so much".split()) == (4, "thank you")
    scores = WhisperScores(no_speech_prob=0.01, avg_logprob=-0.2, compression_ratio=0.0, duration_s=10.0)
    loop = "I'm going to go. " * 12
    assert judge_whisper(loop, scores, WhisperGates())[0] == "repetitive_text"
    assert judge_whisper("no no no no no", scores, WhisperGates())[0] == "repeated_ngram"
    assert judge_whisper("No, no, no. I said so.", scores, WhisperGates()) is None
    rng = np.random.default_rng(1)
    long = " ".join("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(60))
    assert judge_whisper(long, scores, WhisperGates())[0] == "text_exceeds_audio"


def test_sentence_end_only_keeps_finished_sentences():
    [seg] = segments(1)
    seg = Segment(seg.key, seg.source, 0.0, 5.0, 22050, "p", 0, 1)
    cfg = QualityConfig(sentence_end_only=True, min_confidence=None)
    done = Transcript(seg, "He might even have been made amiable himself.", 0.9, "m")
    cut = Transcript(seg, "He might even have been made amiable and then", 0.9, "m")
    assert done.sentence_end and not cut.sentence_end
    assert judge(done, cfg) is None and judge(cut, cfg)[0] == "not_sentence_end"
    assert judge(cut, QualityConfig(min_confidence=None)) is None


def test_builtin_alias_is_checked_and_the_kinds_told_apart(tmp_path, monkeypatch):
    folder = resolve_builtin(OFFLINE_ALIAS)
    assert Path(folder, "model.bin").stat().st_size == 75_537_502
    with pytest.raises(BuiltinModelError, match="known: builtin:whisper-tiny.en"):
        resolve_builtin("builtin:whisper-large")
    assert is_whisper(OFFLINE_ALIAS) and is_whisper(folder) and is_whisper("openai/whisper-tiny.en")
    assert not is_whisper("facebook/wav2vec2-base-960h")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match=OFFLINE_ALIAS):
        check_available(AsrModelSpec())  # the recipe's wav2vec2 default, not cached: the error names the alias
    with pytest.raises(ModelLoadError, match=OFFLINE_ALIAS):
        check_available(AsrModelSpec(model="Systran/faster-whisper-nonexistent"))


def random_hf_whisper(out: Path) -> str:
    """A transformers Whisper with random weights and tiny.en's tokenizer: it loops, as Whisper can."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=51864, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80)
    WhisperForConditionalGeneration(cfg).save_pretrained(out)
    WhisperTokenizerFast(tokenizer_file=str(Path(resolve_builtin(OFFLINE_ALIAS)) / "tokenizer.json")).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return str(out)


def test_a_hugging_face_whisper_folder_is_converted_and_its_loop_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = random_hf_whisper(tmp_path / "hf-whisper")
    assert is_whisper(folder)
    spec = AsrModelSpec(model=folder)
    check_available(spec)  # converted here, once
    assert list((tmp_path / "cache").rglob("model.bin"))
    clip = audio("sense_and_sensibility_01_austen_64kb-0880")
    [(text, _, scores)] = WhisperTranscriber(spec).decode([clip])
    assert text and judge_whisper(text, scores, WhisperGates())[0] in (
        "low_avg_logprob", "repetitive_text", "repeated_ngram")
    loops_only = WhisperGates(max_no_speech_prob=None, min_avg_logprob=None)
    assert judge_whisper(text, scores, loops_only)[0] in ("repetitive_text", "repeated_ngram"), text[:200]
