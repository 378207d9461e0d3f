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
