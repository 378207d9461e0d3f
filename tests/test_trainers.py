"""Downstream trainers on shards the pipeline builds from synthesised speech (tiny configs, CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audio.synth import SENTENCES, build_recording
from pipelines.build_corpus import run
from tests.conftest import REPO, SHARED_SPEECH, permissive
from tts.frontends.mel import MelSpectrogram, load_mel_norms
from tts.frontends.text import TextTokenizer, clean_text, train_tokenizer
from tts.models.autoregressive import ArConfig, UnifiedVoice
from tts.models.clvp import CLVP, ClvpConfig
from tts.models.dvae import DiscreteVAE, DvaeConfig
from tts.training.data import LoaderConfig, ShardLoader, expand_urls
from tts.training.loop import atomic_save, load_state_dict

DATA = Path(__file__).parent / "data"
TOKENIZER = SHARED_SPEECH.parent / "tortoise" / "tokenizer.json"
MEL_NORMS = SHARED_SPEECH.parent / "tortoise" / "mel_norms.pth"
needs_shared = pytest.mark.skipif(not TOKENIZER.exists(), reason="../shared/data/tortoise not present")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model):
    """About 16 clips from 8 recordings in 2 voices, in shards of 3; the last shard held out."""
    d = tmp_path_factory.mktemp("train_corpus")
    lines = []
    for i in range(8):
        order = np.random.default_rng(i).permutation(len(SENTENCES))  # no two recordings say the same
        texts = [SENTENCES[k] for k in order[:6]]
        rec = build_recording(texts, [0.8, 0.9, 1.0, 0.8, 0.9], seed=i, voices=[["en-us"], ["en-gb"]][i % 2])
        lines.append(rec.write(str(d / f"r{i}.wav")))
    (d / "s.csv").write_text("uri,speaker\n" + "".join(f"{p},voice{i % 2}\n" for i, p in enumerate(lines)))
    out = d / "corpus"
    run(["--sources", str(d / "s.csv"), "--output", str(out), *permissive(tiny_model), "--samples_per_shard", "3"])
    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    assert len(shards) >= 4
    return {"dir": d, "train": ",".join(shards[:-1]), "eval": shards[-1]}


def shapes(model) -> dict:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("build,table", [
    (lambda: DiscreteVAE(DvaeConfig.preset("released")), "dvae_released_shapes.json"),
    (lambda: CLVP(ClvpConfig.preset("released")), "clvp_released_shapes.json"),
    (lambda: UnifiedVoice(ArConfig.preset("released")), "unified_voice_released_shapes.json"),
])
def test_released_configs_have_the_reference_names_and_shapes(build, table):
    expected = json.loads((DATA / table).read_text())
    got = shapes(build())
    assert sorted(got) == sorted(expected)  # every name, no more, no fewer
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


@pytest.mark.parametrize("build", [lambda: DiscreteVAE(DvaeConfig.preset("tiny")),
                                   lambda: CLVP(ClvpConfig.preset("tiny", num_codes=256)),
                                   lambda: UnifiedVoice(ArConfig.preset("tiny", num_codes=256))])
def test_state_dict_round_trip(build, tmp_path):
    a, b = build(), build()
    atomic_save(a.state_dict(), str(tmp_path / "m.pth"))
    b.load_state_dict(load_state_dict(str(tmp_path / "m.pth")), strict=True)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@needs_shared
def test_tokenizer_matches_the_released_ids():
    tok = TextTokenizer(str(TOKENIZER))
    cases = json.loads((DATA / "tortoise_tokenizer_cases.json").read_text())
    for c in cases:
        assert clean_text(c["text"]) == c["cleaned"]
        assert tok.encode(c["text"]) == c["ids"], c["text"]
    assert tok.decode(cases[0]["ids"]) == "hello, world! this is a test."
    assert clean_text("Dr. Who paid $3.50 in 1999.") == "doctor who paid three dollars, fifty cents in nineteen ninety-nine."


def test_new_tokenizer_has_the_released_format(tmp_path):
    tok = train_tokenizer(SENTENCES * 5, str(tmp_path / "t.json"))
    vocab = tok.tokenizer.get_vocab()
    assert (vocab["[STOP]"], vocab["[UNK]"], vocab["[SPACE]"]) == (0, 1, 2) and len(tok) <= 255
    assert tok.decode(tok.encode("the quick brown fox")) == "the quick brown fox"


@needs_shared
def test_mel_matches_librosa_and_uses_the_released_norms():
    import librosa
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(22050) * 0.1).astype(np.float32)
    norms = load_mel_norms(str(MEL_NORMS))
    ours = MelSpectrogram(norms)(torch.from_numpy(wav)[None])[0].numpy()
    ref = librosa.feature.melspectrogram(y=wav, sr=22050, n_fft=1024, hop_length=256, win_length=1024, center=True,
                                         pad_mode="reflect", power=2.0, n_mels=80, fmin=0, fmax=8000, htk=True,
                                         norm="slaney")
    ref = np.log(np.clip(ref, 1e-5, None)) / norms.numpy()[:, None]
    assert ours.shape == (80, 22050 // 256 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)


def test_loader_conditions_on_another_clip_of_the_same_speaker(corpus):
    tok = lambda t: [5] * 3
    loader = ShardLoader(expand_urls(corpus["train"]), tok, LoaderConfig(batch_size=4, shuffle_buffer=4), epochs=2)
    audio_of, checked = {}, 0
    for s in loader.samples():
        if s is None:
            continue
        audio_of[s.key] = (s.speaker, s.audio)
        if s.cond is not s.audio:
            owner = [k for k, (spk, a) in audio_of.items() if a is s.cond or np.array_equal(a, s.cond)]
            assert owner and all(audio_of[k][0] == s.speaker and k != s.key for k in owner)
            checked += 1
    assert checked > 5 and loader.counts.cond_from_self <= 2
    # most conditioning clips come from the sample's similar_keys (the same voice, picked by the corpus)
    c = loader.counts
    assert c.cond_from_similar > c.cond_from_speaker and c.cond_from_similar + c.cond_from_speaker + c.cond_from_self == (
        c.read - sum(c.skipped.values()))


def test_loader_skips_and_counts_over_limit_samples(corpus):
    loader = ShardLoader(expand_urls(corpus["train"]), lambda t: [5] * 50, LoaderConfig(batch_size=2, max_text_tokens=10),
                         epochs=1)
    assert list(loader) == [] and loader.counts.skipped["too_many_text_tokens"] == loader.counts.read > 0
    all_lengths = [len(s.audio) for s in ShardLoader(expand_urls(corpus["train"]), lambda t: [5], LoaderConfig(),
                                                     epochs=1).samples() if s is not None]
    limit = int(np.median(all_lengths)) // 1024
    loader = ShardLoader(expand_urls(corpus["train"]), lambda t: [5], LoaderConfig(batch_size=2, max_codes=limit),
                         epochs=1)
    batches = list(loader)
    assert loader.counts.skipped["too_many_codes"] > 0 and batches
    assert all(b["wav"].shape[1] % 1024 == 0 and b["wav"].shape[1] // 1024 <= limit + 1 for b in batches)


def test_loader_skips_text_with_unknown_characters(corpus):
    loader = ShardLoader(expand_urls(corpus["train"]), lambda t: [5, 1, 6], LoaderConfig(batch_size=2), epochs=1)
    assert list(loader) == [] and loader.counts.skipped["unknown_characters"] == loader.counts.read > 0


def test_conditioning_clips_are_cut_at_varying_places():
    import random

    from tts.training.data import Sample, collate
    long = np.arange(50_000, dtype=np.float32)
    batch = [Sample(f"k{i}", np.zeros(2048, np.float32), "", "s", tokens=[5], cond=long) for i in range(8)]
    cond = collate(batch, 10_000, random.Random(0))["cond"]
    starts = {int(row[0]) for row in cond}
    assert cond.shape == (8, 10_000) and len(starts) > 1
    assert all(torch.equal(row, torch.arange(int(row[0]), int(row[0]) + 10_000, dtype=torch.float32)) for row in cond)


def test_shards_split_by_node(corpus, monkeypatch):
    urls = expand_urls(corpus["train"])
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = ShardLoader(urls, lambda t: [5], LoaderConfig(batch_size=1, shuffle_buffer=1), epochs=1)
        seen.append({s.key for s in loader.samples() if s is not None})
    assert seen[0] and seen[1] and not (seen[0] & seen[1])


def test_endless_loader_fails_clearly_when_nothing_is_usable(corpus):
    loader = ShardLoader(expand_urls(corpus["train"]), lambda t: [5] * 50, LoaderConfig(max_text_tokens=10))
    with pytest.raises(ValueError, match="skipped"):
        next(iter(loader))
    loader = ShardLoader(expand_urls(corpus["train"]), lambda t: [5], LoaderConfig(batch_size=1000, drop_last=True))
    with pytest.raises(ValueError, match="no full batch"):
        next(iter(loader))


def roomy_config(tmp_path, cls, preset, **changes) -> str:
    """A tiny config with room for the test model's long (random-weight ASR) transcripts."""
    import dataclasses
    path = tmp_path / f"{cls.__name__}.json"
    path.write_text(json.dumps(dataclasses.asdict(dataclasses.replace(cls.preset(preset, num_codes=256), **changes))))
    return str(path)


def losses(out_dir) -> list:
    return [json.loads(l)["loss"] for l in open(os.path.join(out_dir, "log.jsonl"))]


def common(corpus, out, steps, **kw):
    args = ["--shards", corpus["train"], "--eval_shards", corpus["eval"], "--output", str(out),
            "--max_steps", str(steps), "--batch_size", "4", "--lr", "2e-3", "--warmup_steps", "5",
            "--log_every", "1", "--eval_every", str(max(1, steps // 2)), "--ckpt_every", str(steps)]
    if TOKENIZER.exists():
        args += ["--tokenizer", str(TOKENIZER), "--mel_norms", str(MEL_NORMS)]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    return args


@pytest.fixture(scope="module")
def dvae(corpus):
    from pipelines import train_tortoise
    out = corpus["dir"] / "dvae"
    train_tortoise.main(["--stage", "dvae", *common(corpus, out, 80)])
    return out


def test_dvae_loss_falls(dvae):
    l = losses(dvae)
    assert len(l) == 80 and np.mean(l[-5:]) < 0.6 * l[0]
    assert (dvae / "loss.png").read_bytes()[:4] == b"\x89PNG"
    state = torch.load(dvae / "train_state.pth", weights_only=True)
    assert state["step"] == 80 and state["history"]["eval"]


def test_autoregressive_loss_falls(corpus, dvae):
    from pipelines import train_tortoise
    out = corpus["dir"] / "ar"
    cfg = roomy_config(corpus["dir"], ArConfig, "tiny", max_text_tokens=2000, cond_attn_blocks=1)  # quicker
    train_tortoise.main(["--stage", "ar", "--dvae", str(dvae / "model.pth"), *common(corpus, out, 40),
                         "--config", cfg])
    l = losses(out)
    assert np.mean(l[-5:]) < 0.6 * l[0]  # the DVAE uses many codes: ~5.8 (ln 258) to ~3 in 40 steps
    assert json.loads((out / "config.json").read_text())["number_mel_codes"] == 258


def test_clvp_loss_falls(corpus, dvae):
    from pipelines import train_clvp
    out = corpus["dir"] / "clvp"
    cfg = roomy_config(corpus["dir"], ClvpConfig, "tiny", text_seq_len=2000)
    train_clvp.main(["--dvae", str(dvae / "model.pth"), *common(corpus, out, 50), "--config", cfg,
                     "--score_length", "0"])  # the padded half of the loss has its own test (tortoise scoring)
    l = losses(out)
    assert np.mean(l[-5:]) < 0.5 * np.mean(l[:3])


def test_resume_reproduces_the_uninterrupted_run(corpus, dvae, tmp_path):
    from pipelines import train_tortoise
    base = ["--stage", "ar", "--dvae", str(dvae / "model.pth"),
            "--config", roomy_config(tmp_path, ArConfig, "tiny", max_text_tokens=2000, cond_attn_blocks=1)]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_tortoise.main([*base, *common(corpus, straight, 6, lr_decay_steps=6)])
    train_tortoise.main([*base, *common(corpus, split, 3, lr_decay_steps=6)])
    train_tortoise.main([*base, *common(corpus, split, 6, lr_decay_steps=6), "--resume"])
    a, b = losses(straight), losses(split)
    assert len(a) == len(b) == 6
    assert a[3:] == pytest.approx(b[3:], rel=1e-5, abs=1e-6)  # the same next losses after the resume


def test_max_steps_zero_builds_saves_and_exits(corpus, tmp_path):
    from pipelines import train_clvp, train_tortoise
    out = tmp_path / "m0"
    train_tortoise.main(["--stage", "dvae", *common(corpus, out, 0)])
    model = DiscreteVAE(DvaeConfig.preset("tiny"))
    model.load_state_dict(load_state_dict(str(out / "model.pth")), strict=True)
    assert not (out / "train_state.pth").exists()
    with pytest.raises(SystemExit):
        train_clvp.main(["--help"])


def test_init_from_checkpoint(corpus, dvae, tmp_path):
    from pipelines import train_tortoise
    out = tmp_path / "ft"
    train_tortoise.main(["--stage", "dvae", *common(corpus, out, 2), "--init_from", str(dvae / "model.pth")])
    first = losses(out)[0]
    assert first < 0.8 * losses(dvae)[0]  # starts from the trained weights, not from scratch


def test_torchrun_two_processes_gloo(corpus, tmp_path):
    """Two ranks train together (gradients synchronised once per accumulated step); the tokenizer and mel norms
    are built once, by rank 0, from every shard."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [a for a in common(corpus, out, 3) if a not in (str(TOKENIZER), str(MEL_NORMS), "--tokenizer", "--mel_norms")]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "pipelines.train_tortoise", "--stage", "dvae", *args, "--grad_accum", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(losses(out)) == 3 and (out / "model.pth").exists()
    assert r.stderr.count("trained a ") == 1 and r.stderr.count("measured mel norms") == 1
    from tts.training.cli import measure_mel_norms
    train_tokenizer((s.text for s in ShardLoader(expand_urls(corpus["train"]), lambda t: [2],
                                                 LoaderConfig(shuffle_buffer=1), epochs=1).samples()
                     if s is not None), str(tmp_path / "single.json"))  # one process, every shard
    assert (out / "tokenizer.json").read_text() == (tmp_path / "single.json").read_text()
    assert torch.equal(load_mel_norms(str(out / "mel_norms.pth")), measure_mel_norms(expand_urls(corpus["train"])))


def test_dvae_codebook_stays_in_use(dvae, corpus):
    """A short run keeps many codes alive (without reviving dead codes early, 150 steps end on a handful)."""
    model = DiscreteVAE(DvaeConfig.preset("tiny"))
    model.load_state_dict(load_state_dict(str(dvae / "model.pth")), strict=True)
    model.eval()
    mel = MelSpectrogram(load_mel_norms(str(dvae / "mel_norms.pth")))
    used = set()
    for batch in ShardLoader(expand_urls(corpus["eval"]), lambda t: [5], LoaderConfig(batch_size=4), epochs=1):
        used |= set(model.get_codebook_indices(mel(batch["wav"])).flatten().tolist())
    assert len(used) >= 40, len(used)
    last = json.loads(open(dvae / "log.jsonl").readlines()[-1])
    assert last["codes_used"] >= 20 and last["code_perplexity"] >= 20


def test_dvae_revives_codes_unused_for_a_few_steps():
    """The encoder's outputs move away from every code: codes left unused come back onto the new outputs
    after ``dead_code_steps``, instead of one code taking everything until the counts decay (~690 steps)."""
    from tts.models.dvae import Quantize

    def distinct_codes_after_a_shift(dead_code_steps: int) -> int:
        torch.manual_seed(0)
        q = Quantize(4, 16, dead_code_steps=dead_code_steps).train()
        q(torch.randn(1, 64, 4))  # a fresh codebook is set from the data
        far = torch.randn(1, 64, 4) + 50.0
        for _ in range(10):
            q(far)
        assert "unused_steps" not in q.state_dict()  # the released layout has no room for it
        return q.codes(far).unique().numel()

    assert distinct_codes_after_a_shift(0) <= 2
    assert distinct_codes_after_a_shift(3) >= 8


def test_autoregressive_codes_stop_where_tortoise_s_do():
    """tortoise-tts / DL-Art-School cut the codes at the longest clip's wav_length // 1024 and keep one code
    past each shorter clip's end before the stop codes."""
    model = UnifiedVoice(ArConfig.preset("tiny", num_codes=256)).eval()
    codes = torch.randint(0, 256, (2, 7))  # codes of 6 × 1024 padded samples
    wav_lengths = torch.tensor([3 * 1024 + 100, 5 * 1024 + 10])
    widths = []
    model.mel_head.register_forward_hook(lambda m, i, o: widths.append(o.shape[1]))
    with torch.no_grad():
        model(torch.zeros(2, 80, 100), torch.tensor([[5, 6, 0], [7, 8, 9]]), torch.tensor([2, 3]), codes, wav_lengths)
    assert widths == [7]  # start + 5 codes + stop
    from tts.models.autoregressive import mel_codes_and_targets
    inputs, targets = mel_codes_and_targets(codes, wav_lengths, 256, 257)
    c = codes.tolist()
    assert targets.tolist() == [c[0][:4] + [257, 257, 257], c[1][:5] + [257, 257]]
    assert inputs.tolist() == [[256] + c[0][:4] + [257, 257], [256] + c[1][:5] + [257]]


def test_tiny_presets_build_what_tortoise_tts_classes_build():
    """tortoise-tts's UnifiedVoice always has 6 conditioning attention blocks, GroupNorm groups set by width, and
    its CLVP 64-wide attention heads: the tiny presets load into those classes and compute the same."""
    import dataclasses

    from tts.models.autoregressive import AttentionBlock
    ar = UnifiedVoice(ArConfig.preset("tiny", num_codes=256))
    assert len(ar.conditioning_encoder.attn) == 6
    assert {w: AttentionBlock(w, 4).norm.num_groups for w in (16, 48, 64, 96, 1024)} == \
        {16: 8, 48: 16, 64: 16, 96: 32, 1024: 32}  # tortoise-tts's normalization()
    clvp = CLVP(ClvpConfig.preset("tiny", num_codes=256))
    assert clvp.state_dict()["text_transformer.transformer.attn_layers.layers.0.1.wrap.to_q.weight"].shape == (2 * 64, 64)
    from tts.models.autoregressive import tortoise_mismatches as ar_mismatches
    from tts.models.clvp import tortoise_mismatches as clvp_mismatches
    for preset in ("tiny", "released"):
        assert ar_mismatches(ArConfig.preset(preset)) == [] and clvp_mismatches(ClvpConfig.preset(preset)) == []
    assert "cond_attn_blocks 1" in ar_mismatches(dataclasses.replace(ArConfig.preset("tiny"), cond_attn_blocks=1))[0]
    assert "dim_head 32" in clvp_mismatches(dataclasses.replace(ClvpConfig.preset("tiny"), dim_head=32))[0]


def test_candidates_are_padded_as_tortoise_tts_pads_them():
    """api.py: pad with the stop code to max_mel_tokens, then fix_autoregressive_output: from the first stop code
    on the calm code 83, the last three 45, 45, 248; a candidate that never stopped is left alone."""
    from tts.models.clvp import clip_candidates, pad_candidates
    stop = 8193
    got = pad_candidates(torch.tensor([[5, 6, 7, stop, stop], [1, 2, 3, 4, 8], [9, stop, 10, stop, stop]]), stop)
    assert got.shape == (3, 500)
    assert got[0].tolist() == [5, 6, 7] + [83] * 494 + [45, 45, 248]
    assert got[1].tolist() == [1, 2, 3, 4, 8] + [83] * 492 + [45, 45, 248]  # padded with stops, so it stopped
    assert got[2].tolist() == [9] + [83] * 496 + [45, 45, 248]
    never = torch.arange(600)[None] % 256
    assert torch.equal(pad_candidates(never, stop), never[:, :500])
    late = torch.cat([torch.arange(498)[None] % 256, torch.tensor([[stop, stop]])], 1)
    assert pad_candidates(late, stop)[0, 495:].tolist() == [495 % 256, 496 % 256, 45, 45, 248]
    # a training clip's own codes, read as if the autoregressive model had emitted them and stopped
    codes = torch.tensor([[11, 12, 13, 14], [21, 22, 23, 24]])
    assert torch.equal(clip_candidates(codes, torch.tensor([2, 4])),
                       pad_candidates(torch.tensor([[11, 12, stop, stop, stop], [21, 22, 23, 24, stop]]), stop))


def spoken_pairs(n: int, g: torch.Generator, table: torch.Tensor) -> tuple:
    """Texts of 6–12 tokens, each token "spoken" as 3 fixed codes with 30% of the codes replaced at random,
    as a batch the CLVP task trains on (codes of padded audio, 7 standing for silence) and each clip's length."""
    lengths = torch.randint(6, 13, (n,), generator=g)
    text, codes = torch.zeros(n, 12, dtype=torch.long), torch.full((n, 40), 7)
    for i, k in enumerate(lengths.tolist()):
        tokens = torch.randint(3, 60, (k,), generator=g)
        spoken = table[tokens].flatten()
        noise = torch.rand(spoken.shape, generator=g) < 0.3
        spoken[noise] = torch.randint(0, 256, (int(noise.sum()),), generator=g)
        text[i, :k], codes[i, : len(spoken)] = tokens, spoken
    n_codes = 3 * lengths  # the autoregressive model's codes for a clip: wav_length // 1024 + 1
    return {"text": text, "text_lengths": lengths, "codes": codes, "wav_lengths": (n_codes - 1) * 1024 + 512}, n_codes


def test_clvp_ranks_true_pairs_first_under_tortoise_scoring_as_on_clean_clips():
    """A tiny CLVP trained briefly by the trainer's task ranks each text's own speech first among 128 candidates
    about as often when they are padded as tortoise-tts pads them (calm code, no mask) as when they are read alone,
    and keeps its true-pair scores. (tortoise-tts's max_mel_tokens is 500; 128 here keeps the test short. A model
    trained on masked clips alone loses a third of its top-1 here and its true-pair scores fall from ~2.5 to ~0.2.)"""
    import torch.nn.functional as F

    from tts.models.clvp import CandidatePadding, clvp_scores, pad_candidates
    from tts.training.tasks import ClvpTask
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    table = torch.randint(0, 256, (256, 3), generator=g)
    padding = CandidatePadding(length=128)
    task = ClvpTask(ClvpConfig.preset("tiny", num_codes=256), None, [], None, None, LoaderConfig(), None)
    task.padding = padding
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(150):
        loss, _ = task.loss(model, spoken_pairs(16, g, table)[0], torch.device("cpu"))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    batch, n_codes = spoken_pairs(128, g, table)
    stop = 257
    emitted = torch.where(torch.arange(40)[None] < n_codes[:, None], batch["codes"], torch.tensor(stop))
    with torch.no_grad():
        text = F.pad(batch["text"], (0, 1))
        text_mask = torch.arange(13)[None] < (batch["text_lengths"] + 1)[:, None]
        t, clean = model.latents(text, text_mask, batch["codes"], torch.arange(40)[None] < n_codes[:, None])
        scored = model.speech_latent(pad_candidates(emitted, stop, padding), None)
    scale = model.temperature.exp().item()
    tortoise = t @ scored.t() * scale
    for i in (0, 5, 77):  # the scoring helper, one text at a time as tortoise-tts calls it, gives the same scores
        tokens = batch["text"][i, : int(batch["text_lengths"][i])].tolist()
        assert torch.allclose(clvp_scores(model, tokens, emitted, stop, padding), tortoise[i], atol=1e-4)
    top1_clean = ((t @ clean.t()).argmax(1) == torch.arange(128)).float().mean().item()
    top1_tortoise = (tortoise.argmax(1) == torch.arange(128)).float().mean().item()
    assert top1_clean >= 0.6 and top1_tortoise >= top1_clean - 0.1, (top1_clean, top1_tortoise)
    true_clean, true_tortoise = (t * clean).sum(-1).mean().item() * scale, tortoise.diagonal().mean().item()
    assert true_tortoise >= 0.8 * true_clean, (true_clean, true_tortoise)
