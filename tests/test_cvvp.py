"""CVVP: released names and shapes, the same-voice-aware contrastive loss, learning two voices apart, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audio.synth import SENTENCES
from pipelines import train_cvvp, train_tortoise
from tests.test_synthesize import run_args
from tests.test_trainer_cli import write_shard
from tests.test_trainers import MEL_NORMS, TOKENIZER
from tts.frontends.mel import SAMPLE_RATE, load_mel_norms
from tts.models.cvvp import CVVP, CvvpConfig
from tts.training.data import LoaderConfig, ShardLoader, collate, expand_urls
from tts.training.decoder_tasks import CvvpTask, tile_padding
from tts.training.loop import load_state_dict

DATA = Path(__file__).parent / "data"


def test_released_config_has_the_reference_names_and_shapes():
    expected = json.loads((DATA / "cvvp_released_shapes.json").read_text())
    with torch.device("meta"):
        got = {k: list(v.shape) for k, v in CVVP(CvvpConfig.preset("released")).state_dict().items()}
    assert sorted(got) == sorted(expected)
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def test_same_voice_pairs_are_not_negatives():
    torch.manual_seed(0)
    model = CVVP(CvvpConfig.preset("tiny", num_codes=64)).eval()
    mel, codes = torch.randn(4, 80, 120), torch.randint(0, 64, (4, 30))
    same = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    cond, speech = model.latents(mel, codes)
    sim = cond @ speech.t() * model.temperature.exp()
    sim_masked = sim.masked_fill(same & ~torch.eye(4, dtype=torch.bool), float("-inf"))
    labels = torch.arange(4)
    expected = (F.cross_entropy(sim_masked, labels) + F.cross_entropy(sim_masked.t(), labels)) / 2
    plain = (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2
    got = model(mel, codes, return_loss=True, same_voice=same)
    assert torch.allclose(got, expected) and not torch.allclose(got, plain)
    assert torch.allclose(model(mel, codes, return_loss=True), plain)
    assert model(mel, codes).shape == (4,)  # each pair's score, as tortoise-tts ranks candidates


def two_voices(d) -> str:
    """Clips of 1.5–3 s in two synthetic voices (a low and a high voice, each with its own harmonics), 4 shards."""
    rng = np.random.default_rng(0)
    shards = []
    for i in range(4):
        samples = []
        for j in range(4):
            voice = j % 2
            n = int(SAMPLE_RATE * rng.uniform(1.5, 3.0))
            t = np.arange(n) / SAMPLE_RATE
            f0 = rng.uniform(110, 140) if voice == 0 else rng.uniform(260, 320)
            harmonics = [1, 0.5, 0.25] if voice == 0 else [1, 0.1, 0.6]
            audio = 0.2 * sum(h * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, h in enumerate(harmonics))
            audio += 0.01 * rng.standard_normal(n)
            samples.append((f"v{i}_{j:03d}", audio.astype(np.float32), SENTENCES[j], f"voice{voice}"))
        shards.append(str(d / f"voices-{i:06d}.tar"))
        write_shard(shards[-1], samples)
    return ",".join(shards)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Two-voice shards and a DVAE trained 3 steps on them (enough for codes that tell the voices apart)."""
    if not TOKENIZER.exists():
        pytest.skip("../shared/data not present")
    d = tmp_path_factory.mktemp("cvvp")
    shards = two_voices(d)
    train_tortoise.main(["--stage", "dvae", *run_args(shards, d / "dvae", 3, "--tokenizer", str(TOKENIZER),
                                                      "--mel_norms", str(MEL_NORMS))])
    return {"dir": d, "shards": shards, "dvae": str(d / "dvae" / "model.pth")}


def fixed_batch(shards: str) -> dict:
    """Two clips of each voice, each conditioned on another clip of its voice."""
    by_speaker = {}
    for s in ShardLoader(expand_urls(shards), lambda t: [2], LoaderConfig(shuffle_buffer=1), epochs=1).samples():
        if s is not None:
            by_speaker.setdefault(s.speaker, []).append(s)
    picked = []
    for clips in by_speaker.values():
        for i in range(2):
            clips[i].tokens, clips[i].cond = [2], clips[i + 2].audio
            picked.append(clips[i])
    return collate(picked, 132300)


def test_cvvp_learns_to_match_voices(speech, tmp_path):
    norms = ["--mel_norms", str(MEL_NORMS)]
    train_cvvp.main(["--dvae", speech["dvae"], "--config", "tiny", *run_args(speech["shards"], tmp_path / "init", 0, *norms)])
    train_cvvp.main(["--dvae", speech["dvae"], "--config", "tiny",
                     *run_args(speech["shards"], tmp_path / "trained", 15, "--lr", "1e-3", *norms)])
    cfg = CvvpConfig(**json.loads((tmp_path / "trained" / "config.json").read_text()))
    task = CvvpTask(cfg, speech["dvae"], [], None, None, LoaderConfig(), load_mel_norms(str(MEL_NORMS)))
    batch = fixed_batch(speech["shards"])
    assert sorted(batch["speakers"]) == ["voice0", "voice0", "voice1", "voice1"]
    held = {}
    for name in ("init", "trained"):
        model = CVVP(cfg).eval()
        model.load_state_dict(load_state_dict(str(tmp_path / name / "model.pth")), strict=True)
        with torch.no_grad():
            held[name] = task.loss(model, batch, torch.device("cpu"))[0].item()
    assert held["trained"] < 0.3 * held["init"], held  # a held batch: each clip picks its own voice
    logged = [json.loads(line) for line in open(tmp_path / "trained" / "log.jsonl")]
    assert len(logged) == 15 and np.mean([r["loss"] for r in logged[-3:]]) < 0.5 * logged[0]["loss"]


def test_short_conditioning_clips_are_repeated_not_padded_with_silence():
    cond = torch.tensor([[1.0, 2, 3, 0, 0, 0, 0], [1, 0, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0]])
    assert tile_padding(cond).tolist() == [[1, 2, 3, 1, 2, 3, 1], [1, 0, 2, 3, 4, 5, 6], [0] * 7, [5] * 7]


def test_cvvp_cli_help_and_clean_errors(speech, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_cvvp.main(["--help"])
    assert e.value.code == 0 and "same speaker" in " ".join(capsys.readouterr().out.split())
    import shutil

    from tts.training.cli import run_cli
    bare = tmp_path / "bare_dvae"  # a DVAE with no mel_norms.pth beside it
    bare.mkdir()
    for name in ("model.pth", "config.json"):
        shutil.copy(Path(speech["dvae"]).parent / name, bare / name)
    base = run_args(speech["shards"], tmp_path / "o", 1)
    for argv, message in [
        (["--dvae", speech["dvae"], "--tokenizer", str(TOKENIZER), *base], "--tokenizer: CVVP reads no text"),
        (["--dvae", str(tmp_path / "none.pth"), *base], "no DVAE at"),
        (["--dvae", str(bare / "model.pth"), *base], "pass --mel_norms"),
    ]:
        capsys.readouterr()
        assert run_cli(train_cvvp.main, argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "o").exists()
