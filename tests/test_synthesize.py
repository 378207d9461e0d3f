"""A whole stack, tiny and briefly trained (DVAE → autoregressive model → diffusion decoder), speaking a text.

The shards hold real speech (LJ Speech and the JFK excerpt from ../shared/data, cut into 1.5 s clips
of two voices) in the layout the corpus pipeline writes; the transcripts are sentences that do not
match the audio, which is enough to exercise every stage and the synthesis path end to end.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audio.synth import SENTENCES
from pipelines import synthesize as synth_cli
from pipelines import train_clvp, train_tortoise
from tests.conftest import SHARED_SPEECH
from tests.test_trainer_cli import write_shard
from tests.test_trainers import MEL_NORMS, TOKENIZER, roomy_config
from tts.inference.synthesis import SynthesisConfig, first_calm_run, load_stack, read_voice, synthesize
from tts.models.autoregressive import ArConfig
from tts.models.clvp import ClvpConfig
from tts.models.vocoder import UnivNetGenerator
from tts.training.cli import run_cli

needs_speech = pytest.mark.skipif(not (SHARED_SPEECH / "lj_1.wav").exists() or not TOKENIZER.exists(),
                                  reason="../shared/data not present")


def speech_shards(d, seconds: float = 1.5, per_shard: int = 7) -> str:
    """Real speech cut into clips, two speakers ("lj", "jfk"), written as shards; a comma-separated list."""
    import librosa
    clips = []
    for name, speaker in (("lj_1.wav", "lj"), ("lj_2.wav", "lj"), ("jfk.flac", "jfk")):
        audio, _ = librosa.load(str(SHARED_SPEECH / name), sr=22050, mono=True)
        n = int(22050 * seconds)
        clips += [(speaker, audio[i:i + n]) for i in range(0, len(audio) - n + 1, n)]
    shards = []
    for s in range(0, len(clips), per_shard):
        path = d / f"speech-{s // per_shard:06d}.tar"
        write_shard(str(path), [(f"{spk}{s + j:03d}", a, SENTENCES[(s + j) % len(SENTENCES)], spk)
                                for j, (spk, a) in enumerate(clips[s:s + per_shard])])
        shards.append(str(path))
    return ",".join(shards)


def run_args(shards, out, steps, *extra) -> list:
    return ["--shards", shards, "--output", str(out), "--max_steps", str(steps), "--batch_size", "4", "--lr", "2e-3",
            "--warmup_steps", "1", "--log_every", "1", "--eval_every", "0", "--ckpt_every", str(max(1, steps)),
            *extra]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Tiny DVAE, autoregressive model and decoder, a few steps each; the tokenizer and norms are TorToiSe's."""
    if not (SHARED_SPEECH / "lj_1.wav").exists() or not TOKENIZER.exists():
        pytest.skip("../shared/data not present")
    d = tmp_path_factory.mktemp("stack")
    shards = speech_shards(d)
    front = ["--tokenizer", str(TOKENIZER), "--mel_norms", str(MEL_NORMS)]
    train_tortoise.main(["--stage", "dvae", *run_args(shards, d / "dvae", 3, *front)])
    dvae = str(d / "dvae" / "model.pth")
    ar_cfg = roomy_config(d, ArConfig, "tiny", max_text_tokens=2000)
    train_tortoise.main(["--stage", "ar", "--dvae", dvae, "--config", ar_cfg, *run_args(shards, d / "ar", 3, *front)])
    ar = str(d / "ar" / "model.pth")
    *train, held = shards.split(",")
    train_tortoise.main(["--stage", "diffusion", "--dvae", dvae, "--ar", ar,
                         *run_args(",".join(train), d / "diffusion", 3, *front, "--eval_shards", held,
                                   "--eval_every", "3")])
    return {"dir": d, "shards": shards, "dvae": dvae, "ar": ar, "diffusion": str(d / "diffusion" / "model.pth"),
            "front": front}


def losses(out) -> list:
    return [json.loads(line)["loss"] for line in open(out / "log.jsonl")]


def test_diffusion_stage_trains_and_says_what_comes_next(stack, capsys):
    out = stack["dir"] / "diffusion"
    logged = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and {"mse", "vb", "guess_mse"} <= set(r) for r in logged)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["in_latent_channels"] == 64 and cfg["in_tokens"] == 257  # sized to the tiny AR and DVAE
    state = torch.load(out / "train_state.pth", weights_only=True)
    assert state["step"] == 3 and len(state["history"]["eval"]) == 1  # an eval loss on the held-out shard
    assert np.isfinite(state["history"]["eval"][0][1])


def synth_argv(stack, out, *extra) -> list:
    return ["--text", "Hello there, how are you?", "--dvae", stack["dvae"], "--ar", stack["ar"],
            "--diffusion", stack["diffusion"], "--output", str(out), *stack["front"], "--candidates", "2",
            "--max_codes", "24", "--min_codes", "4", "--diffusion_steps", "4", *extra]


def test_synthesize_writes_a_wav_and_its_mel_plot(stack, tmp_path, capsys):
    voice = str(SHARED_SPEECH / "lj_2.wav")
    paths = synth_cli.main(synth_argv(stack, tmp_path / "out", "--voice", voice))
    wav, png = tmp_path / "out" / "sample_0.wav", tmp_path / "out" / "sample_0.png"
    assert paths == [str(wav), str(png)]
    info = sf.info(str(wav))
    assert info.samplerate == 24000 and info.channels == 1 and info.subtype == "PCM_16"
    audio, _ = sf.read(str(wav))
    # at least min_codes codes: 4 × 1024 / 22050 s of speech, and silence allowed after it
    assert info.frames >= 4 * 1024 * 24000 // 22050 - 256 and np.abs(audio).max() > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "ranked by the autoregressive model's mean log-probability" in err and "Griffin-Lim" in err


def test_synthesize_ranks_with_clvp_and_vocodes_with_univnet(stack, tmp_path, capsys):
    clvp_dir = tmp_path / "clvp"
    clvp_cfg = roomy_config(tmp_path, ClvpConfig, "tiny", text_seq_len=2000)
    train_clvp.main(["--dvae", stack["dvae"], "--config", clvp_cfg, *run_args(stack["shards"], clvp_dir, 0,
                                                                               *stack["front"])])
    torch.manual_seed(0)
    vocoder = tmp_path / "vocoder.pth"
    torch.save({"model_g": UnivNetGenerator(channels=8).state_dict()}, vocoder)  # tortoise-tts's vocoder.pth layout
    synth_cli.main(synth_argv(stack, tmp_path / "out", "--clvp", str(clvp_dir / "model.pth"), "--vocoder",
                              str(vocoder), "--keep", "2"))
    for k in (0, 1):
        info = sf.info(str(tmp_path / "out" / f"sample_{k}.wav"))
        assert info.samplerate == 24000 and info.frames > 0 and info.frames % 256 == 0  # 256 samples per mel frame
    err = capsys.readouterr().err
    assert "ranked by CLVP" in err and "UnivNet" in err


def test_synthesis_is_repeatable_with_a_seed(stack):
    loaded = load_stack(stack["ar"], stack["diffusion"], stack["dvae"], str(TOKENIZER), str(MEL_NORMS))
    clip = read_voice(str(SHARED_SPEECH / "jfk.flac"))  # 44.1 kHz stereo, read as 22 050 Hz mono
    assert clip.ndim == 1 and abs(len(clip) - 11.0 * 22050) < 2
    runs = [synthesize(loaded, "Good morning.", [clip], SynthesisConfig(candidates=1, max_codes=8, min_codes=4,
                                                                          diffusion_steps=3, sampler=sampler, seed=seed))
            for sampler, seed in (("ddim", 3), ("ddim", 3), ("ddim", 4), ("p", 3))]
    audio = [r[0].audio for r in runs]
    assert np.array_equal(audio[0], audio[1]) and np.array_equal(runs[0][0].codes, runs[1][0].codes)
    assert not np.array_equal(audio[0], audio[2]) and not np.array_equal(audio[0], audio[3])


def test_synthesize_help_and_clean_errors(stack, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        synth_cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "--diffusion" in text and "(default 30)" in text and "Griffin-Lim" in text
    import shutil
    bare = tmp_path / "bare_ar"  # an autoregressive model with no tokenizer.json beside it
    bare.mkdir()
    for name in ("model.pth", "config.json"):
        shutil.copy(stack["dir"] / "ar" / name, bare / name)
    cases = [
        (synth_argv(stack, tmp_path / "o", "--keep", "3"), "--keep"),
        (["--text", "Hi.", "--dvae", stack["dvae"], "--ar", str(bare / "model.pth"), "--diffusion", stack["diffusion"],
          "--output", str(tmp_path / "o"), "--mel_norms", str(MEL_NORMS)], "pass --tokenizer"),
        (synth_argv(stack, tmp_path / "o", "--voice", str(tmp_path / "missing.wav")), "cannot read voice clip"),
        (synth_argv(stack, tmp_path / "o")[:7] + [str(tmp_path / "nothing.pth")] + synth_argv(stack, tmp_path / "o")[8:],
         "no diffusion model at"),
        (synth_argv(stack, tmp_path / "o")[:7] + [stack["ar"]] + synth_argv(stack, tmp_path / "o")[8:], "not a diffusion model"),
        (["--text", "a # b", *synth_argv(stack, tmp_path / "o")[2:]], "has no '#'"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert synth_cli.run(argv) == 2, message
        lines = capsys.readouterr().err.strip().splitlines()
        assert message in lines[-1] and lines[-1].startswith("[synthesize] error:"), lines
    assert not (tmp_path / "o").exists()


def test_diffusion_stage_needs_its_inputs(stack, tmp_path, capsys):
    import shutil
    base = run_args(stack["shards"], tmp_path / "d", 1)
    assert run_cli(train_tortoise.main, ["--stage", "diffusion", "--dvae", stack["dvae"], *base]) == 2
    assert "--stage diffusion needs --dvae PATH/model.pth and --ar PATH/model.pth" in capsys.readouterr().err
    bare = tmp_path / "bare_ar"  # an autoregressive model with no tokenizer.json beside it
    bare.mkdir()
    for name in ("model.pth", "config.json"):
        shutil.copy(stack["dir"] / "ar" / name, bare / name)
    assert run_cli(train_tortoise.main, ["--stage", "diffusion", "--dvae", stack["dvae"], "--ar",
                                         str(bare / "model.pth"), *base]) == 2
    assert "pass --tokenizer, the one the autoregressive model was trained with" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_first_calm_run_and_config_checks():
    calm = 7
    codes = torch.tensor([1, 7, 7, 2] + [7] * 9 + [3])
    assert first_calm_run(codes, calm) == 4 + 8  # keeps 8 calm codes after the speech
    assert first_calm_run(torch.tensor([1, 2, 3]), calm) == 3
    with pytest.raises(ValueError, match="--sampler"):
        SynthesisConfig(sampler="euler").validate()
    with pytest.raises(ValueError, match="--diffusion_steps"):
        SynthesisConfig(diffusion_steps=0).validate()
