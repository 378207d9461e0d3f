import os

import numpy as np
import pytest

from asr.model import AsrModelSpec, ModelLoadError, check_available, load_ctc_model
from asr.transcriber import transcribe


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_ctc_model(AsrModelSpec(model=tiny_model))


def clips(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(16000 * s)).astype(np.float32) * 0.1 for s in rng.uniform(1, 6, n)]


def test_loads_a_local_directory_with_from_pretrained(loaded, tiny_model):
    assert loaded.label == tiny_model
    assert loaded.use_attention_mask  # layer-norm family
    assert loaded.blank_id == 0 and loaded.sample_rate == 16000


def test_batched_equals_one_at_a_time_for_layer_norm(loaded):
    audio = clips(6)
    batched = transcribe(loaded, audio)
    single = [transcribe(loaded, [a])[0] for a in audio]
    assert [b.text for b in batched] == [s.text for s in single]
    assert all(abs(b.confidence - s.confidence) < 1e-3 for b, s in zip(batched, single))
    assert all(b.text for b in batched)  # random weights still emit characters


def test_transcripts_depend_on_the_audio(loaded):
    a, b = clips(2, seed=3)
    assert transcribe(loaded, [a])[0].text != transcribe(loaded, [b])[0].text


def test_group_norm_family_gets_no_attention_mask(tmp_path):
    from asr.tiny import build_tiny_model
    d = build_tiny_model(str(tmp_path / "gn"), stable_layer_norm=False)
    m = load_ctc_model(AsrModelSpec(model=d))
    assert not m.use_attention_mask
    out = transcribe(m, clips(3))
    assert len(out) == 3 and all(0.0 <= o.confidence <= 1.0 for o in out)


def test_missing_model_is_named_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model.*HF_HUB_OFFLINE"):
        check_available(AsrModelSpec(model="no-such-org/no-such-model"))
    with pytest.raises(ModelLoadError, match="nothing-here"):
        load_ctc_model(AsrModelSpec(model=str(tmp_path / "nothing-here")))


def test_default_model_uses_the_recipe_companions():
    spec = AsrModelSpec()
    assert spec.tokenizer_id == "jbetker/tacotron-symbols"
    assert spec.feature_extractor_id == "facebook/wav2vec2-large-960h"
    assert AsrModelSpec(model="x/y").tokenizer_id == "x/y"
    assert AsrModelSpec(model="x/y", revision="abc").label == "x/y@abc"


# --- chunking, families, failures ------------------------------------------------------------

import difflib  # noqa: E402

import apache_beam as beam  # noqa: E402
import torch  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

from asr.ctc import greedy_decode, words_from_tokens  # noqa: E402
from asr.handler import CtcModelHandler  # noqa: E402
from asr.transcriber import TranscribeOptions, Transcriber  # noqa: E402
from schemas.records import AsrBatch, Segment, Source  # noqa: E402
from tests.conftest import beam_pipeline  # noqa: E402
from transforms.transcribe import Transcribe  # noqa: E402


def cer(a, b):
    return 1 - difflib.SequenceMatcher(None, a, b).ratio()


@pytest.fixture(scope="module")
def long_speech(speech):
    import soxr
    rec = speech["a"][0]
    return soxr.resample(rec.audio, rec.sample_rate, 16000).astype(np.float32)


def test_chunked_long_input_matches_unchunked(loaded, long_speech):
    full = Transcriber(loaded, TranscribeOptions(chunk_s=100))([long_speech])[0]
    t = Transcriber(loaded, TranscribeOptions(chunk_s=8, chunk_overlap_s=1.5))
    chunked = t([long_speech])[0]
    assert t.stats.batches == 1 and len(t.pieces([long_speech])) >= 4  # really windowed
    assert cer(full.text, chunked.text) < 0.01
    assert abs(full.confidence - chunked.confidence) < 0.01


def test_group_norm_padding_is_what_changes_batched_output(tmp_path, long_speech):
    from asr.tiny import build_tiny_model
    m = load_ctc_model(AsrModelSpec(model=build_tiny_model(str(tmp_path / "gn"), stable_layer_norm=False)))
    equal = [long_speech[i * 64000:(i + 1) * 64000] for i in range(5)]  # same length: no padding
    t = Transcriber(m)
    assert [o.text for o in t(equal)] == [t([c])[0].text for c in equal]
    rng = np.random.default_rng(1)
    varied = sorted((long_speech[int(s):int(s) + int(n)] for s, n in
                     zip(rng.uniform(0, 16000 * 15, 12), rng.uniform(16000 * 4, 16000 * 8, 12))), key=len)
    from asr.contract import plan_batches
    t = Transcriber(m)
    groups = plan_batches([len(c) / 16000 for c in varied], 24.0, 64)  # as the segment stage groups them
    batched = [o for g in groups for o in t([varied[i] for i in g])]
    single = [Transcriber(m)([varied[i]])[0] for g in groups for i in g]
    differ = sum(b.text != s.text for b, s in zip(batched, single)) / len(varied)
    print(f"group-norm, random weights: {differ:.0%} of batched transcripts differ from one-at-a-time "
          f"(padding {t.stats.padding_fraction:.1%})")
    assert differ > 0 and t.stats.padding_fraction < 0.1


class FlakyModel(torch.nn.Module):
    """Wraps a model: OOM on batches larger than ``max_rows``; a hard error on any row of length ``poison``."""

    def __init__(self, inner, max_rows=None, poison=None):
        super().__init__()
        self.inner, self.max_rows, self.poison = inner, max_rows, poison
        self.config = inner.config

    def _get_feat_extract_output_lengths(self, lengths):
        return self.inner._get_feat_extract_output_lengths(lengths)

    def forward(self, x, attention_mask=None):
        if self.max_rows is not None and x.shape[0] > self.max_rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        lengths = attention_mask.sum(1).tolist() if attention_mask is not None else [x.shape[1]] * x.shape[0]
        if self.poison in lengths:
            raise RuntimeError("poisoned input")
        return self.inner(x, attention_mask=attention_mask)


def wrapped(loaded, **kw):
    import dataclasses
    return dataclasses.replace(loaded, model=FlakyModel(loaded.model, **kw))


def test_out_of_memory_halves_the_batch(loaded):
    audio = clips(8, seed=4)
    expected = [o.text for o in transcribe(loaded, audio)]
    t = Transcriber(wrapped(loaded, max_rows=2))
    out = t(audio)
    assert [o.text for o in out] == expected and t.stats.oom_splits >= 3 and t.stats.failed == 0


def test_poisoned_clip_fails_alone(loaded):
    audio = clips(7, seed=5)
    t = Transcriber(wrapped(loaded, poison=len(audio[3])))
    out = t(audio)
    assert [o.error is not None for o in out] == [False, False, False, True, False, False, False]
    assert "poisoned" in out[3].error and all(o.text for i, o in enumerate(out) if i != 3)


def test_next_batch_is_queued_before_the_host_decodes_the_current_one(loaded):
    log = []

    class Recording(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def _get_feat_extract_output_lengths(self, lengths):
            return self.inner._get_feat_extract_output_lengths(lengths)

        def forward(self, x, attention_mask=None):
            log.append(("model", x.shape[0]))
            return self.inner(x, attention_mask=attention_mask)

    class Logged(Transcriber):
        def collect(self, f):
            log.append(("collect", len(f.frames)))
            return super().collect(f)

    import dataclasses
    audio = clips(6, seed=7)
    batches = [audio[:1], audio[1:3], [], audio[3:6]]
    out = Logged(dataclasses.replace(loaded, model=Recording(loaded.model))).many(batches)
    assert log == [("model", 1), ("model", 2), ("collect", 1), ("model", 3), ("collect", 2), ("collect", 3)]
    alone = [Transcriber(loaded)(b) if b else [] for b in batches]
    assert [[o.text for o in b] for b in out] == [[o.text for o in b] for b in alone]


def test_a_failing_batch_in_the_pipeline_is_isolated_without_touching_its_neighbours(loaded):
    audio = clips(9, seed=8)
    batches = [audio[:3], audio[3:7], audio[7:]]
    expected = [[o.text for o in Transcriber(loaded)(b)] for b in batches]
    t = Transcriber(wrapped(loaded, max_rows=3, poison=len(audio[5])))
    out = t.many(batches)
    assert [[o.text for o in b] for i, b in enumerate(out) if i != 1] == [expected[0], expected[2]]
    assert [o.error is not None for o in out[1]] == [False, False, True, False]
    assert [o.text for i, o in enumerate(out[1]) if i != 2] == [x for i, x in enumerate(expected[1]) if i != 2]
    assert t.stats.oom_splits == 1 and t.stats.failed == 1


def test_poisoned_clip_becomes_one_failure_row_in_the_pipeline(loaded, tiny_model):
    audio = clips(6, seed=6)
    src = Source("file:///x.wav", "file-x")
    segs = tuple(Segment(f"file-x_{i:09d}", src, i, i + 1, 22050, "p", 0, 1) for i in range(6))
    batches = [AsrBatch(segs[:3], tuple(audio[:3])), AsrBatch(segs[3:], tuple(audio[3:]))]
    poison = len(audio[4])

    class PoisonHandler(CtcModelHandler):
        def load_model(self):
            return Transcriber(wrapped(load_ctc_model(self.spec), poison=poison), self.opts)

    with beam_pipeline() as p:
        out = (p | beam.Create(batches)
               | Transcribe(AsrModelSpec(model=tiny_model), handler_cls=PoisonHandler))
        assert_that(out["failed"] | "FailKeys" >> beam.Map(lambda r: (r.key, r.stage, r.reason)),
                    equal_to([("file-x_000000004", "transcribe", "asr_error")]), label="failures")
        assert_that(out["transcripts"] | "Keys" >> beam.Map(lambda t: t.key),
                    equal_to([s.key for i, s in enumerate(segs) if i != 4]), label="transcripts")


def test_word_times_are_ordered_and_inside_the_clip(loaded, long_speech):
    clip = long_speech[: 16000 * 6]
    out = Transcriber(loaded, TranscribeOptions(keep_ctc_tokens=True))([clip])[0]
    assert out.words and "".join(w.text for w in out.words) == out.text.replace(" ", "")
    prev = 0.0
    for w in out.words:
        assert prev <= w.start_s < w.end_s <= 6.0 + 1e-6 and 0 < w.confidence <= 1
        prev = w.end_s
    assert abs(len(out.ctc_frames) * 0.02 - 6.0) < 0.05  # one label id per 20 ms frame


def test_word_confidence_singles_out_corrupted_words():
    vocab = {"_": 0, "|": 1, "a": 2, "b": 3, "c": 4, "d": 5}
    words = ["abc", "dab", "cad", "bad"]
    labels = []
    for w in words:
        for ch in w:
            labels += [vocab[ch], vocab[ch], 0]
        labels += [vocab["|"], 0]
    g = torch.Generator().manual_seed(0)
    logits = torch.full((len(labels), 6), -4.0)
    logits[torch.arange(len(labels)), torch.tensor(labels)] = 4.0
    corrupted = logits.clone()
    start = sum(len(w) * 3 + 2 for w in words[:2])  # the third word's frames
    span = len(words[2]) * 3
    corrupted[start:start + span] += torch.randn(span, 6, generator=g) * 4.0  # "cad" becomes unsure
    inv = {v: k for k, v in vocab.items()}
    for lg, bad in ((logits, None), (corrupted, 2)):
        r = greedy_decode(lg.unsqueeze(0), torch.tensor([len(labels)]), 0)[0]
        ws = words_from_tokens([inv[i] for i in r.ids], r.spans, r.logp, 0.02)
        confs = [w.confidence for w in ws]
        if bad is None:
            assert [w.text for w in ws] == words and min(confs) > 0.99
        else:
            assert len(ws) == len(words) and min(range(len(confs)), key=confs.__getitem__) == bad
            assert confs[bad] < min(c for i, c in enumerate(confs) if i != bad) - 0.03


def test_separate_tokenizer_and_feature_extractor(tmp_path, tiny_model):
    import shutil
    model_only = tmp_path / "model"
    model_only.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_model, f), model_only / f)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_ctc_model(AsrModelSpec(model=str(model_only)))
    m = load_ctc_model(AsrModelSpec(model=str(model_only), tokenizer=tiny_model, feature_extractor=tiny_model))
    assert transcribe(m, clips(1))[0].text


def test_bad_dtype_and_device_are_refused():
    with pytest.raises(ValueError, match="dtype must be one of"):
        AsrModelSpec(dtype="int8").validate()
    with pytest.raises(ValueError, match="CUDA"):
        AsrModelSpec(dtype="fp16", device="cpu").validate()


def test_bf16_path_runs_on_cpu(tiny_model):
    m = load_ctc_model(AsrModelSpec(model=tiny_model, dtype="bf16"))
    assert next(m.model.parameters()).dtype == torch.bfloat16
    out = transcribe(m, clips(3))
    assert len(out) == 3 and all(o.text and 0 < o.confidence <= 1 for o in out)
