"""What the trainer commands print and refuse: output-directory guards, help, end lines, checkpoint size.

The shards here are written directly (tones and noise with real sentences), so these tests need neither
the corpus pipeline nor its ASR model and stay a few seconds each.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

import trainers.loop
from audio.synth import SENTENCES
from pipelines import train_clvp, train_tortoise
from tests.test_trainers import MEL_NORMS, TOKENIZER, roomy_config
from trainers.autoregressive import ArConfig
from trainers.cli import run_cli
from trainers.clvp import ClvpConfig
from trainers.dvae import DiscreteVAE, DvaeConfig
from trainers.loop import checkpoint_bytes, checkpoint_size_note, human_bytes
from trainers.mel import SAMPLE_RATE


def write_shard(path, samples) -> None:
    """A WebDataset tar of (key, audio, text, speaker) in the layout the corpus pipeline writes."""
    with tarfile.open(path, "w") as tar:
        for key, audio, text, speaker in samples:
            flac = io.BytesIO()
            sf.write(flac, audio, SAMPLE_RATE, format="FLAC")
            for ext, data in (("flac", flac.getvalue()), ("txt", text.encode()),
                              ("json", json.dumps({"speaker": speaker, "text": text}).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 clips of 1–2 s in two voices, in 4 training shards of 4."""
    d = tmp_path_factory.mktemp("cli_corpus")
    rng = np.random.default_rng(0)
    shards = []
    for i in range(4):
        samples = []
        for j in range(4):
            n = int(SAMPLE_RATE * rng.uniform(1.0, 2.0))
            t = np.arange(n) / SAMPLE_RATE
            audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(n)
            samples.append((f"c{i}_{j:03d}", audio.astype(np.float32), SENTENCES[(4 * i + j) % len(SENTENCES)],
                            f"voice{j % 2}"))
        shards.append(str(d / f"shard-{i:06d}.tar"))
        write_shard(shards[-1], samples)
    return {"dir": d, "train": ",".join(shards)}


def argv(corpus, out, steps, *extra, shared=True) -> list:
    """A tiny run's options; ``shared=False`` leaves the tokenizer and mel norms to the trainer."""
    args = ["--shards", corpus["train"], "--output", str(out), "--max_steps", str(steps), "--batch_size", "4",
            "--warmup_steps", "1", "--log_every", "1", "--eval_every", "0", "--ckpt_every", str(max(1, steps))]
    if shared and TOKENIZER.exists():
        args += ["--tokenizer", str(TOKENIZER), "--mel_norms", str(MEL_NORMS)]
    return args + list(extra)


def dvae_run(corpus, out, steps, *extra, **kw):
    return train_tortoise.main(["--stage", "dvae", *argv(corpus, out, steps, *extra, **kw)])


def logged_steps(out) -> list:
    return [json.loads(line)["step"] for line in open(os.path.join(out, "log.jsonl"))]


def stderr_lines(capsys) -> list:
    return capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def built_dvae(corpus, tmp_path_factory):
    """An untrained DVAE's model.pth and config.json: enough for the later stages to read codes from."""
    out = tmp_path_factory.mktemp("cli_dvae")
    dvae_run(corpus, out, 0)
    return out / "model.pth"


def test_rerun_into_a_trained_output_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    dvae_run(corpus, out, 1)
    before = {f: (out / f).read_bytes() for f in ("model.pth", "train_state.pth", "log.jsonl")}
    capsys.readouterr()
    assert run_cli(train_tortoise.main, ["--stage", "dvae", *argv(corpus, out, 2)]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and str(out) in lines[0] and "--resume" in lines[0] and "--overwrite" in lines[0]
    assert {f: (out / f).read_bytes() for f in before} == before


@pytest.mark.parametrize("leftover", ["model.pth", "train_state.pth", "log.jsonl"])
def test_any_trained_file_alone_triggers_the_refusal(corpus, tmp_path, leftover):
    out = tmp_path / "run"
    out.mkdir()
    (out / leftover).write_bytes(b"x")
    with pytest.raises(ValueError, match="already holds a trained model"):
        dvae_run(corpus, out, 1)


def test_files_the_user_put_there_do_not_trigger_the_refusal(corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(DvaeConfig.preset("tiny"))))
    if TOKENIZER.exists():
        (out / "tokenizer.json").write_bytes(TOKENIZER.read_bytes())
        (out / "mel_norms.pth").write_bytes(MEL_NORMS.read_bytes())
    mine = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "config.json"}
    assert run_cli(train_tortoise.main, ["--stage", "dvae", *argv(corpus, out, 1, shared=False)]) == 0
    assert logged_steps(out) == [1]
    assert {name: (out / name).read_bytes() for name in mine} == mine  # used as they are, not replaced


def test_overwrite_starts_a_fresh_log_and_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    dvae_run(corpus, out, 3)
    dvae_run(corpus, out, 2, "--overwrite")
    state = torch.load(out / "train_state.pth", weights_only=True)
    assert logged_steps(out) == [1, 2]
    assert state["step"] == 2 and [s for s, _ in state["history"]["train"]] == [1, 2]


def test_resume_without_a_checkpoint_is_an_error(corpus, tmp_path, capsys):
    out = tmp_path / "empty"
    assert run_cli(train_tortoise.main, ["--stage", "dvae", *argv(corpus, out, 1), "--resume"]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and "--resume" in lines[0] and "train_state.pth" in lines[0] and str(out) in lines[0]
    assert not (out / "model.pth").exists()


def test_resume_drops_log_lines_past_the_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    dvae_run(corpus, out, 2)
    with open(out / "log.jsonl", "a") as f:  # a run that logged steps 3 and 4, then died writing step 5
        f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + json.dumps({"step": 4, "loss": 1.0}) + '\n{"step": 5, "lo')
    dvae_run(corpus, out, 4, "--resume")
    assert logged_steps(out) == [1, 2, 3, 4]


TRAINERS = [(train_tortoise.main, ["--stage", "dvae"]), (train_clvp.main, [])]


@pytest.mark.parametrize("main,stage", TRAINERS, ids=["train_tortoise", "train_clvp"])
def test_resume_and_overwrite_together_are_refused(main, stage, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(main, [*stage, "--dvae", "x.pth", "--shards", "s.tar", "--output", str(tmp_path),
                       "--resume", "--overwrite"])
    assert e.value.code == 2 and "argument --overwrite: not allowed with argument --resume" in capsys.readouterr().err


@pytest.mark.parametrize("main,stage", TRAINERS, ids=["train_tortoise", "train_clvp"])
def test_an_abbreviated_option_is_refused(main, stage, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(main, [*stage, "--dvae", "x.pth", "--shards", "s.tar", "--output", str(tmp_path), "--max_step", "3"])
    assert e.value.code == 2 and "unrecognized arguments: --max_step 3" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("main,stage", TRAINERS, ids=["train_tortoise", "train_clvp"])
def test_help_shows_the_defaults(main, stage, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert e.value.code == 0
    for default in ("clips per micro-batch, per process (default 8)", "after the warmup (default 0.0003)",
                    "(default 1000)", "(default tiny)", "--overwrite"):
        assert default in text


def test_no_blank_lines_before_the_trainer_speaks(corpus, tmp_path, capfd):
    dvae_run(corpus, tmp_path / "run", 1, shared=False)  # trains a tokenizer, whose library prints progress
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].strip() and all(line.strip() for line in lines)
    assert any("trained a" in line and "tokenizer" in line for line in lines)


def test_dvae_end_lines_say_where_the_model_is_and_what_comes_next(corpus, tmp_path, capsys):
    out = tmp_path / "dvae"
    dvae_run(corpus, out, 2)
    *_, summary, last = stderr_lines(capsys)
    model = str(out / "model.pth")
    assert summary.startswith("[train] DVAE: trained to step 2, final loss ") and "samples read " in summary
    assert "conditioning" not in summary
    assert last.startswith(f"[train] model: {model}") and f"next: train the autoregressive model with --stage ar " \
        f"--dvae {model}" in last


def test_autoregressive_end_lines(corpus, built_dvae, tmp_path, capsys):
    out = tmp_path / "ar"
    cfg = roomy_config(tmp_path, ArConfig, "tiny", max_text_tokens=2000)
    train_tortoise.main(["--stage", "ar", "--dvae", str(built_dvae), *argv(corpus, out, 2), "--config", cfg])
    lines = stderr_lines(capsys)
    *_, summary, last = lines
    assert summary.startswith("[train] autoregressive model: trained to step 2, final loss ")
    assert "samples read " in summary and "conditioning from a similar clip " in summary and "from the same clip " in summary
    assert last.startswith(f"[train] model: {out / 'model.pth'}") and "autoregressive.pth" in last
    assert not any("checkpoints here take" in line for line in lines)  # a tiny model is far below the threshold


def test_clvp_end_lines(corpus, built_dvae, tmp_path, capsys):
    out = tmp_path / "clvp"
    cfg = roomy_config(tmp_path, ClvpConfig, "tiny", text_seq_len=2000)
    train_clvp.main(["--dvae", str(built_dvae), *argv(corpus, out, 2), "--config", cfg])
    *_, summary, last = stderr_lines(capsys)
    assert summary.startswith("[train] CLVP: trained to step 2, final loss ") and "samples read " in summary
    assert last.startswith(f"[train] model: {out / 'model.pth'}") and "clvp2.pth" in last


def test_checkpoint_bytes_are_the_weights_and_two_adamw_moments():
    model = DiscreteVAE(DvaeConfig.preset("tiny"))
    n_params = sum(p.numel() for p in model.parameters())
    n_state = sum(t.numel() for t in model.state_dict().values())
    assert checkpoint_bytes(model) == (4 * n_state, 2 * 4 * n_params)
    model.requires_grad_(False)
    assert checkpoint_bytes(model.to(torch.bfloat16)) == (2 * n_state, 0)  # frozen: no optimizer state


def test_checkpoint_estimate_matches_the_files_written(corpus, tmp_path):
    out = tmp_path / "run"
    dvae_run(corpus, out, 1)
    weights, moments = checkpoint_bytes(DiscreteVAE(DvaeConfig.preset("tiny")))
    assert weights == pytest.approx(os.path.getsize(out / "model.pth"), rel=0.1)
    assert moments == pytest.approx(os.path.getsize(out / "train_state.pth"), rel=0.1)


def test_size_note_only_above_the_threshold():
    model = DiscreteVAE(DvaeConfig.preset("tiny"))
    weights, moments = checkpoint_bytes(model)
    assert checkpoint_size_note(model, "runs/x") is None  # a tiny model is far below the default
    assert checkpoint_size_note(model, "runs/x", threshold=weights + moments) is None
    note = checkpoint_size_note(model, "runs/x", threshold=weights + moments - 1)
    assert note == (f"checkpoints here take about {human_bytes(weights + moments)} ({human_bytes(weights)} weights "
                    f"+ {human_bytes(moments)} optimizer state) in runs/x")
    assert (human_bytes(5.09e9), human_bytes(454_592), human_bytes(999)) == ("5.1 GB", "454.6 kB", "999 B")


def test_size_line_is_printed_before_training(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainers.loop, "LARGE_CHECKPOINT_BYTES", 1000)
    dvae_run(corpus, tmp_path / "run", 1)
    lines = stderr_lines(capsys)
    note = [i for i, line in enumerate(lines) if line.startswith("[train] checkpoints here take about ")]
    first_step = next(i for i, line in enumerate(lines) if line.startswith("[dvae] step 1/"))
    assert len(note) == 1 and note[0] < first_step and str(tmp_path / "run") in lines[note[0]]
