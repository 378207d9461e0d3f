"""What the trainer commands print and refuse: output-directory guards, help, end lines, checkpoint size,
the tokenizer and mel norms each run carries, --init_from's layouts and errors, the loader's coverage.

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

import tts.training.loop
from audio.synth import SENTENCES
from pipelines import train_clvp, train_tortoise
from tests.test_trainers import MEL_NORMS, TOKENIZER, roomy_config
from tts.frontends.mel import SAMPLE_RATE, load_mel_norms
from tts.frontends.text import train_tokenizer
from tts.models.autoregressive import ArConfig, UnifiedVoice
from tts.models.clvp import ClvpConfig
from tts.models.dvae import DiscreteVAE, DvaeConfig
from tts.training.cli import run_cli
from tts.training.data import LoaderConfig, ShardLoader
from tts.training.loop import checkpoint_bytes, checkpoint_size_note, human_bytes


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


@pytest.mark.parametrize("leftover", ["model.pth", "model_ema.pth", "train_state.pth", "log.jsonl"])
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
    monkeypatch.setattr(tts.training.loop, "LARGE_CHECKPOINT_BYTES", 1000)
    dvae_run(corpus, tmp_path / "run", 1)
    lines = stderr_lines(capsys)
    note = [i for i, line in enumerate(lines) if line.startswith("[train] checkpoints here take about ")]
    first_step = next(i for i, line in enumerate(lines) if line.startswith("[dvae] step 1/"))
    assert len(note) == 1 and note[0] < first_step and str(tmp_path / "run") in lines[note[0]]


# --- the loader sees every usable clip; text it cannot read is skipped and counted ---------------------------

def tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def test_every_usable_clip_is_in_a_batch_each_epoch(tmp_path):
    """Six clips of distinct lengths, batches of 4 that must be full: the two longest are trained on too."""
    shard = str(tmp_path / "s.tar")
    write_shard(shard, [(f"k{i}", tone(0.8 + 0.3 * i, i), SENTENCES[i], "v0") for i in range(6)])
    loader = ShardLoader([shard], lambda t: [5], LoaderConfig(batch_size=4, drop_last=True, shuffle_buffer=8))
    it = iter(loader)
    first_epoch = [next(it) for _ in range(2)]
    assert all(len(b["keys"]) == 4 for b in first_epoch)
    assert set().union(*(b["keys"] for b in first_epoch)) == {f"k{i}" for i in range(6)}
    assert loader.counts.read == 6  # both batches came from the first pass over the shard


def test_a_group_too_small_for_a_batch_is_filled_from_the_epoch(tmp_path):
    """10 clips, groups of 2 batches of 4: the last 2 clips are trained on, with 2 clips of the group before."""
    shard = str(tmp_path / "s.tar")
    write_shard(shard, [(f"k{i}", tone(0.6 + 0.1 * i, i), SENTENCES[i], "v0") for i in range(10)])
    loader = ShardLoader([shard], lambda t: [5], LoaderConfig(batch_size=4, bucket_batches=2, drop_last=True,
                                                              shuffle_buffer=1), epochs=1)
    batches = list(loader)
    assert [len(b["keys"]) for b in batches] == [4, 4, 4]
    assert set().union(*(b["keys"] for b in batches)) == {f"k{i}" for i in range(10)}


def test_text_the_cleaner_cannot_read_is_skipped_and_counted(tmp_path):
    from tts.frontends.text import TextCleaningError
    shard = str(tmp_path / "s.tar")
    huge = "the account holds " + "7" * 101 + " coins"
    write_shard(shard, [(f"k{i}", tone(1.0, i), SENTENCES[i], "v0") for i in range(4)] +
                [("bad", tone(1.0, 9), huge, "v0")])
    tok = train_tokenizer(SENTENCES + [huge], str(tmp_path / "tokenizer.json"))  # the trainer skips it too
    loader = ShardLoader([shard], tok, LoaderConfig(batch_size=2, shuffle_buffer=1), epochs=1)
    keys = [k for b in loader for k in b["keys"]]
    assert sorted(keys) == ["k0", "k1", "k2", "k3"]
    assert dict(loader.counts.skipped) == {"uncleanable_text": 1} and loader.counts.read == 5
    with pytest.raises(TextCleaningError, match="7777"):
        tok.encode(huge)


# --- the tokenizer and mel norms travel with the checkpoints ---------------------------------------------------

@pytest.fixture(scope="module")
def own_dvae(corpus, tmp_path_factory):
    """A DVAE run that trained its own tokenizer and measured its own norms on all four shards."""
    out = tmp_path_factory.mktemp("own_dvae")
    dvae_run(corpus, out, 0, shared=False)
    return out


def first_shards(corpus, n) -> str:
    return ",".join(corpus["train"].split(",")[:n])


def test_a_stage_given_dvae_uses_its_tokenizer_and_norms(corpus, own_dvae, tmp_path, capsys):
    out = tmp_path / "ar"
    args = argv(corpus, out, 0, "--dvae", str(own_dvae / "model.pth"), shared=False)
    args[args.index("--shards") + 1] = first_shards(corpus, 2)  # other shards: a tokenizer of its own would differ
    capsys.readouterr()
    train_tortoise.main(["--stage", "ar", *args])
    err = capsys.readouterr().err
    assert "trained a" not in err and "measured mel norms" not in err
    assert "using the DVAE's tokenizer" in err and "using the DVAE's mel norms" in err
    assert (out / "tokenizer.json").read_bytes() == (own_dvae / "tokenizer.json").read_bytes()
    assert torch.equal(load_mel_norms(str(out / "mel_norms.pth")), load_mel_norms(str(own_dvae / "mel_norms.pth")))


def test_mel_norms_other_than_the_dvae_s_are_refused(corpus, own_dvae, tmp_path, capsys):
    other = tmp_path / "other_norms.pth"
    torch.save(load_mel_norms(str(own_dvae / "mel_norms.pth")) * 1.1, other)
    out = tmp_path / "ar"
    capsys.readouterr()
    code = run_cli(train_tortoise.main, ["--stage", "ar", *argv(corpus, out, 0, "--dvae", str(own_dvae / "model.pth"),
                                                                  "--mel_norms", str(other), shared=False)])
    lines = stderr_lines(capsys)
    assert code == 2 and len(lines) == 1
    assert str(other) in lines[0] and str(own_dvae / "mel_norms.pth") in lines[0] and "differ" in lines[0]
    assert not (out / "model.pth").exists()


def test_resume_with_another_tokenizer_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    dvae_run(corpus, out, 1, shared=False)
    other = tmp_path / "other.json"
    train_tokenizer(["a completely different text"] * 3, str(other))
    capsys.readouterr()
    code = run_cli(train_tortoise.main, ["--stage", "dvae", *argv(corpus, out, 2, "--resume", "--tokenizer", str(other),
                                                                  shared=False)])
    lines = stderr_lines(capsys)
    assert code == 2 and len(lines) == 1 and "--tokenizer" in lines[0] and "--output" in lines[0]
    assert logged_steps(out) == [1]


@pytest.mark.skipif(not TOKENIZER.exists(), reason="../shared/data/tortoise not present")
def test_fine_tuning_released_weights_needs_the_released_tokenizer_and_norms(corpus, own_dvae, tmp_path, capsys):
    """A checkpoint with nothing beside it is tortoise-tts's: its tokenizer and norms are the released ones."""
    released = tmp_path / "released"
    released.mkdir()
    dvae_run(corpus, tmp_path / "built", 0)
    (released / "dvae.pth").write_bytes((tmp_path / "built" / "model.pth").read_bytes())
    own = tmp_path / "own_tokenizer.json"
    train_tokenizer(SENTENCES, str(own))
    released_norms_dvae, own_norms_dvae = tmp_path / "built" / "model.pth", own_dvae / "model.pth"
    for dvae, extra, missing in ((released_norms_dvae, ["--tokenizer", str(own)], "tokenizer.json"),
                                 (own_norms_dvae, ["--tokenizer", str(TOKENIZER)], "mel_norms.pth")):
        capsys.readouterr()
        code = run_cli(train_clvp.main, ["--dvae", str(dvae), *argv(corpus, tmp_path / "ft", 0, "--init_from",
                                                                      str(released / "dvae.pth"), *extra, shared=False)])
        lines = stderr_lines(capsys)
        assert code == 2 and len(lines) == 1 and "released" in lines[0] and missing in lines[0], lines
    # with the released files it goes on (and then finds that a DVAE is not a CLVP)
    code = run_cli(train_clvp.main, ["--dvae", str(tmp_path / "built" / "model.pth"),
                                     *argv(corpus, tmp_path / "ft", 0, "--init_from", str(released / "dvae.pth"))])
    assert code == 2 and "is not a checkpoint of this CLVP" in capsys.readouterr().err


# --- --init_from: tortoise-tts's layouts load, anything else is one clear line --------------------------------

def tortoise_layouts(model) -> dict:
    """The state dicts tortoise-tts's UnifiedVoice saves: under transformers 4.31+ GPT-2's causal-mask buffers
    are not persistent; after ``post_init_gpt2_config`` its inference wrapper adds copies of other entries."""
    sd = model.state_dict()
    bare = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    wrapped = dict(bare, **{"gpt.wte.weight": sd["mel_embedding.weight"],
                            "inference_model.embeddings.weight": sd["mel_embedding.weight"],
                            "inference_model.lm_head.0.weight": sd["final_norm.weight"],
                            "inference_model.lm_head.1.weight": sd["mel_head.weight"]},
                   **{f"inference_model.transformer.{k[4:]}": v for k, v in bare.items() if k.startswith("gpt.")})
    return {"with_buffers": sd, "without_buffers": bare, "inference_wrapper": wrapped}


@pytest.mark.parametrize("layout", ["with_buffers", "without_buffers", "inference_wrapper"])
def test_init_from_accepts_tortoise_tts_layouts(corpus, built_dvae, tmp_path, layout):
    src = UnifiedVoice(ArConfig.preset("tiny", num_codes=256))
    torch.nn.init.normal_(src.text_head.weight)  # something a fresh model would not have
    sd = tortoise_layouts(src)[layout]
    assert ("gpt.h.0.attn.bias" in sd) == (layout == "with_buffers")
    ckpt = tmp_path / "theirs" / "autoregressive.pth"
    ckpt.parent.mkdir()
    torch.save(sd, ckpt)
    for f in ("tokenizer.json", "mel_norms.pth"):  # the front end the weights were trained with
        (ckpt.parent / f).write_bytes((built_dvae.parent / f).read_bytes())
    out = tmp_path / "ar"
    train_tortoise.main(["--stage", "ar", "--dvae", str(built_dvae), *argv(corpus, out, 0, "--init_from", str(ckpt))])
    got = torch.load(out / "model.pth", weights_only=True)
    assert sorted(got) == sorted(src.state_dict())
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())


def test_init_from_anything_else_is_one_line_naming_the_entry(corpus, built_dvae, tmp_path, capsys):
    def refused(ckpt, config="tiny") -> str:
        capsys.readouterr()
        code = run_cli(train_tortoise.main, ["--stage", "ar", "--dvae", str(built_dvae),
                                             *argv(corpus, tmp_path / "ar", 0, "--init_from", str(ckpt),
                                                   "--config", config)])
        lines = stderr_lines(capsys)
        assert code == 2 and len(lines) == 1, lines
        return lines[0]

    line = refused(built_dvae)  # a DVAE, not an autoregressive model
    assert str(built_dvae) in line and "'conditioning_encoder.init.weight'" in line and "'encoder.0.0.weight'" in line
    wider = tmp_path / "wider" / "model.pth"
    wider.parent.mkdir()
    torch.save(UnifiedVoice(dataclasses.replace(ArConfig.preset("tiny", num_codes=256), model_dim=96)).state_dict(),
               wider)
    for f in ("tokenizer.json", "mel_norms.pth"):
        (wider.parent / f).write_bytes((built_dvae.parent / f).read_bytes())
    line = refused(wider)
    assert "'conditioning_encoder.init.weight' is [96, 80, 1] there and [64, 80, 1] here" in line
    junk = tmp_path / "junk" / "model.pth"
    junk.parent.mkdir()
    junk.write_bytes(b"not a checkpoint at all")
    for f in ("tokenizer.json", "mel_norms.pth"):
        (junk.parent / f).write_bytes((built_dvae.parent / f).read_bytes())
    assert "is not a checkpoint this trainer can read" in refused(junk)
    assert not (tmp_path / "ar" / "model.pth").exists()


# --- presets tortoise-tts's classes can load -----------------------------------------------------------------

def test_a_config_tortoise_tts_cannot_load_is_named_before_training(corpus, built_dvae, tmp_path, capsys):
    cfg = tmp_path / "one_block.json"
    cfg.write_text(json.dumps(dataclasses.asdict(dataclasses.replace(ArConfig.preset("tiny", num_codes=256),
                                                                     cond_attn_blocks=1))))
    train_tortoise.main(["--stage", "ar", "--dvae", str(built_dvae), *argv(corpus, tmp_path / "ar", 0,
                                                                          "--config", str(cfg))])
    notes = [line for line in stderr_lines(capsys) if "cannot load this config" in line]
    assert len(notes) == 1 and "cond_attn_blocks 1" in notes[0]
    capsys.readouterr()
    train_tortoise.main(["--stage", "ar", "--dvae", str(built_dvae), *argv(corpus, tmp_path / "ar2", 0)])
    assert "cannot load this config" not in capsys.readouterr().err  # the tiny preset can


# --- DVAE codes computed once per clip, kept beside the shards, per DVAE --------------------------------------

def test_codes_are_cached_beside_the_shards_for_each_dvae(corpus, built_dvae, own_dvae, tmp_path):
    from tts.frontends.mel import MelSpectrogram
    from tts.training.tasks import ArTask, CodeCache, load_dvae
    shards = corpus["train"].split(",")
    out = tmp_path / "ar"
    train_tortoise.main(["--stage", "ar", "--dvae", str(built_dvae), *argv(corpus, out, 1)])
    norms = load_mel_norms(str(built_dvae.parent / "mel_norms.pth"))
    cache = CodeCache(str(built_dvae), norms)
    assert all(os.path.exists(cache.path(u)) for u in shards)
    assert os.path.dirname(cache.path(shards[0])) == os.path.join(os.path.dirname(shards[0]),
                                                                  f"dvae_codes-{cache.fingerprint}")
    # the cached codes are the DVAE's codes of each clip, as the loss would compute them from the batch's audio
    task = ArTask(ArConfig.preset("tiny", num_codes=256), str(built_dvae), shards, None, lambda t: [5],
                  LoaderConfig(batch_size=4), norms)
    task.code_cache = cache
    batch = next(task.train_batches(0))
    dvae, mel = load_dvae(str(built_dvae), torch.device("cpu")), MelSpectrogram(norms)
    fresh = dvae.get_codebook_indices(mel(batch["wav"]))
    for i, n in enumerate((batch["wav_lengths"] // 1024).tolist()):
        assert torch.equal(batch["codes"][i, : n - 1], fresh[i, : n - 1])  # the last codes see the zeros after
    # another DVAE, or other norms, never reads these codes
    other = CodeCache(str(own_dvae / "model.pth"), load_mel_norms(str(own_dvae / "mel_norms.pth")))
    assert other.fingerprint != cache.fingerprint and other.lookup(shards[0], batch["keys"][0]) is None
    assert CodeCache(str(built_dvae), norms * 1.01).fingerprint != cache.fingerprint


# --- weight averaging, exact resume of the DVAE's codebook state, gradient checkpointing -------------------

def test_ema_weights_are_the_average_of_the_steps(corpus, tmp_path):
    start, run = tmp_path / "start", tmp_path / "run"
    dvae_run(corpus, start, 0)  # the same seed builds the same initial weights
    dvae_run(corpus, run, 1, "--ema", "0.5")
    w0, w1 = torch.load(start / "model.pth", weights_only=True), torch.load(run / "model.pth", weights_only=True)
    ema = torch.load(run / "model_ema.pth", weights_only=True)
    params = {k for k, _ in DiscreteVAE(DvaeConfig.preset("tiny")).named_parameters()}
    assert sorted(ema) == sorted(w1) and params
    for k in w1:
        want = 0.5 * w0[k] + 0.5 * w1[k] if k in params else w1[k]  # buffers (the codebook) are copied
        assert torch.allclose(ema[k], want, atol=1e-6), k
    assert any(not torch.equal(ema[k], w1[k]) for k in params)


def test_dvae_resume_is_exact_with_its_codebook_counters(corpus, tmp_path):
    """The steps since each code was used live outside the state dict; train_state.pth keeps them."""
    cfg = tmp_path / "dvae.json"
    cfg.write_text(json.dumps(dataclasses.asdict(dataclasses.replace(DvaeConfig.preset("tiny"), dead_code_steps=2))))
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--lr_decay_steps", "6", "--ema", "0.9", "--config", str(cfg), "--lr", "3e-3")
    dvae_run(corpus, straight, 6, *common)
    dvae_run(corpus, split, 3, *common)
    dvae_run(corpus, split, 6, *common, "--resume")
    a, b = ([json.loads(line) for line in open(d / "log.jsonl")] for d in (straight, split))
    assert [x["loss"] for x in a] == pytest.approx([x["loss"] for x in b], rel=1e-5, abs=1e-6)
    assert [x["codes_used"] for x in a] == [x["codes_used"] for x in b]
    ema_a, ema_b = (torch.load(d / "model_ema.pth", weights_only=True) for d in (straight, split))
    assert all(torch.allclose(ema_a[k], ema_b[k], atol=1e-6) for k in ema_a)


def test_gradient_checkpointing_gives_the_same_gradients():
    from tts.models.autoregressive import UnifiedVoice
    from tts.models.clvp import CLVP, training_loss
    torch.manual_seed(0)
    ar = UnifiedVoice(ArConfig.preset("tiny", num_codes=256)).train()
    clvp = CLVP(ClvpConfig.preset("tiny", num_codes=256)).train()
    text, lengths = torch.randint(3, 200, (2, 9)), torch.tensor([9, 5])
    codes, wav_lengths = torch.randint(0, 256, (2, 12)), torch.tensor([11 * 1024, 7 * 1024 + 9])
    cond = torch.randn(2, 80, 60)

    def grads(on: bool) -> list:
        ar.gpt.checkpointing = on
        clvp.set_checkpointing(on)
        ar.zero_grad()
        clvp.zero_grad()
        lt, lm = ar(cond, text, lengths, codes, wav_lengths)
        (lt + lm + training_loss(clvp, text, lengths, codes, wav_lengths // 1024 + 1)).backward()
        return [p.grad.clone() for p in (*ar.parameters(), *clvp.parameters()) if p.grad is not None]

    plain, recomputed = grads(False), grads(True)
    assert len(plain) == len(recomputed) > 50
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, recomputed))
