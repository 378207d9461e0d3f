"""Clean clips: speech found by Silero VAD, cuts between sentences, and audio gates with reasons."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from audio import clip_scores, dnsmos
from audio.decoded import decode_to_scratch
from audio.silence import SplitParams, split_on_silence
from audio.synth import SENTENCES, build_recording, mix, music, pink_noise
from audio.vad import on_grid, speech_mask
from pipelines.build_corpus import run
from schemas.records import ClipScores, Segment, Source, Transcript
from tests.conftest import copy_shared, ffmpeg, have_shared_speech, permissive
from tests.test_build_corpus import table, write_sources
from transforms.quality import AudioGates, QualityConfig, judge_audio, rate_outliers

FAST_PAUSES = [0.3, 0.25, 0.35, 0.3, 0.4, 0.25, 0.3]  # all under --min_silence_ms: a fast monologue


@pytest.fixture(scope="module")
def monologue():
    return build_recording(SENTENCES[:8], FAST_PAUSES, seed=7)


def clips_of(rec, tmp_path, name, vad=True):
    path = rec.write(str(tmp_path / f"{name}.wav"))
    with decode_to_scratch(path, 22050, vad=vad) as d:
        prob = on_grid(d.speech_probs, len(d.db), d.hop_s) if vad else None
        result = split_on_silence(d.db, d.hop_s, SplitParams(), prob)
    return [(c.start * d.hop_s, c.end * d.hop_s) for c in result.clips], result


def inside_a_sentence(t, spans, margin=0.0):
    return any(s + margin < t < e - margin for s, e in spans)


@pytest.mark.parametrize("bed,snr_db", [(None, None), ("music", 10.0), ("noise", 10.0), ("music", 0.0)])
def test_a_fast_monologue_is_cut_between_sentences(monologue, tmp_path, bed, snr_db):
    rec = monologue if bed is None else mix(monologue, music(40, seed=1) if bed == "music" else
                                            pink_noise(40, seed=2), snr_db)
    clips, result = clips_of(rec, tmp_path, f"{bed}{snr_db}")
    assert len(clips) >= 2 and all(e - s <= 20.0 + 1e-6 for s, e in clips)  # 27 s of speech, no long pause
    for s, e in clips:
        assert not inside_a_sentence(s, rec.spans) and not inside_a_sentence(e, rec.spans), (s, e, rec.spans)
    covered = [sum(1 for a, b in clips if a <= s and e <= b) for s, e in rec.spans]
    assert covered == [1] * len(rec.spans)  # every sentence whole, in exactly one clip


@pytest.mark.parametrize("bed", ["music", "noise"])
def test_music_or_noise_alone_has_no_speech(tmp_path, bed):
    audio = music(25, seed=3) if bed == "music" else pink_noise(25, seed=4)
    path = str(tmp_path / f"{bed}.wav")
    sf.write(path, audio, 22050)
    with decode_to_scratch(path, 22050, vad=True) as d:
        assert speech_mask(d.speech_probs).mean() < 0.02
        result = split_on_silence(d.db, d.hop_s, SplitParams(), on_grid(d.speech_probs, len(d.db), d.hop_s))
    assert result.file_reason == "no_speech" and result.clips == ()


def test_vad_is_chunking_invariant(monologue):
    import soxr

    from audio.vad import RATE, VadStream
    x = np.tile(soxr.resample(monologue.audio, 22050, RATE), 3)  # long enough for several batches
    s = VadStream(batch=4)
    for i in range(0, len(x), 7777):
        s.push(x[i:i + 7777])
    whole = VadStream(batch=4)
    whole.push(x)
    got, want = s.finish(), whole.finish()
    assert len(got) == int(np.ceil(len(x) / 256)) and len(got) > 4 * 250  # several batches, every frame
    np.testing.assert_array_equal(got, want)


LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"


@pytest.mark.skipif(not os.path.isdir(LIBRIVOX), reason="needs pocketsphinx-testdata (scripts/setup.sh)")
def test_the_gpu_vad_engine_gives_the_cpu_engines_probabilities():
    """On a GPU the VAD runs the package's TorchScript export with torch (onnxruntime here has no GPU);
    run on the CPU, that engine gives real speech the ONNX engine's probabilities, chunk for chunk."""
    import soxr

    from audio import vad
    x = np.concatenate([sf.read(f, dtype="float32")[0] for f in sorted(glob.glob(f"{LIBRIVOX}/*.wav"))[:3]])
    x = soxr.resample(x, 16000, vad.RATE)
    n = 8
    length = len(x) // n // vad.FRAME * vad.FRAME
    chunks = np.ascontiguousarray(x[:n * length].reshape(n, length))
    onnx = vad.run_chunks(chunks)
    torch_probs = vad.run_chunks(chunks, engine="torch")
    assert onnx.shape == torch_probs.shape == (n, length // vad.FRAME)
    assert np.abs(onnx - torch_probs).max() < 1e-4 and (onnx > 0.5).mean() > 0.3  # real speech: it hears some


def test_score_functions(monologue):
    rng = np.random.default_rng(0)
    x = monologue.audio / np.abs(monologue.audio).max()
    assert clip_scores.clipping((x * 32000).astype(np.int16)) < 0.0005  # speech has few samples near its peak
    for level in (0.999, 0.9):  # clipped at 40 % of the peak, then at full scale or scaled down
        hard = np.clip(x, -0.4, 0.4) / 0.4 * level
        assert clip_scores.clipping((hard * 32767).astype(np.int16)) > 0.01
    white = rng.standard_normal(22050 * 4).astype(np.float32) * 0.1
    assert clip_scores.bandwidth_hz(white, 22050) > 10000
    import soxr
    narrow = soxr.resample(soxr.resample(white, 22050, 8000), 8000, 22050)
    assert 3500 < clip_scores.bandwidth_hz(narrow, 22050) < 4200
    db = np.concatenate([np.full(80, -60.0), np.full(20, -20.0)])
    assert abs(clip_scores.snr_db(db, np.arange(100) >= 80) - 40.0) < 0.01  # speech frames over the floor
    assert clip_scores.speech_ratio(np.array([True, False, True, True])) == 0.75


def test_gates_name_the_score_and_threshold():
    g = AudioGates()
    assert judge_audio(ClipScores(speech_ratio=0.02), g) == ("not_speech", "speech_ratio 0.02 < 0.50")
    assert judge_audio(ClipScores(speech_ratio=0.9, bandwidth_hz=3400), g)[0] == "low_bandwidth"
    assert judge_audio(ClipScores(clipping=0.05), g) == ("clipped", "clipping 0.0500 > 0.0020")
    assert judge_audio(ClipScores(snr_db=4.2), g) == ("noisy", "snr_db 4.2 < 15.0")
    assert judge_audio(ClipScores(dnsmos_ovrl=1.8), AudioGates(min_dnsmos_ovrl=2.5))[0] == "low_dnsmos"
    off = AudioGates(min_speech_ratio=None, min_bandwidth_hz=None, max_clipping=None, min_snr_db=None)
    assert judge_audio(ClipScores(0.0, 100.0, 1.0, -5.0), off) is None


def test_speaking_rate_outliers_per_source():
    src = Source("file:///a.wav", "file-a")

    def tr(i, chars):
        seg = Segment(f"file-a_{i:09d}", src, i * 10.0, i * 10.0 + 10.0, 22050, "p", 0, 1)
        return Transcript(seg, "x" * chars, 0.9, "m")
    items = [tr(i, c) for i, c in enumerate([140, 150, 145, 155, 150, 148, 152, 400])]
    out = list(rate_outliers(items, QualityConfig()))
    rejected = [o for o in out if not isinstance(o, Transcript)]
    assert [r.key for r in rejected] == ["file-a_000000007"] and "outside" in rejected[0].detail
    assert len(list(rate_outliers(items[:5], QualityConfig()))) == 5  # too few clips: rule off
    assert all(isinstance(o, Transcript) for o in rate_outliers(items, QualityConfig(rate_outlier_iqr=None)))


@pytest.fixture(scope="module")
def gated(tmp_path_factory, tiny_model):
    """One corpus from clean speech and every kind of bad audio, with the default gates."""
    d = tmp_path_factory.mktemp("gated")
    rec = build_recording(SENTENCES[:5], [0.8, 0.9, 0.8, 1.0], seed=11)
    files = {"clean": rec.write(str(d / "clean.wav"))}
    sf.write(str(d / "music.wav"), music(20, seed=5), 22050)
    sf.write(str(d / "noise.wav"), pink_noise(20, seed=6), 22050)
    files["music"], files["noise"] = str(d / "music.wav"), str(d / "noise.wav")
    files["under_music"] = mix(rec, music(40, seed=8), 0.0).write(str(d / "under_music.wav"))
    files["in_noise"] = mix(rec, pink_noise(40, seed=9), 0.0).write(str(d / "in_noise.wav"))
    ffmpeg("-i", files["clean"], "-af", "highpass=f=300,lowpass=f=3400", "-ar", "8000", str(d / "tel8k.wav"))
    ffmpeg("-i", str(d / "tel8k.wav"), "-ar", "44100", str(d / "telephone.wav"))
    files["telephone"] = str(d / "telephone.wav")
    x = rec.audio / np.abs(rec.audio).max()
    sf.write(str(d / "clipped.wav"), np.clip(x, -0.4, 0.4) / 0.4 * 0.999, 22050)
    sf.write(str(d / "clipped_scaled.wav"), np.clip(x, -0.4, 0.4) / 0.4 * 0.9, 22050)
    files["clipped"], files["clipped_scaled"] = str(d / "clipped.wav"), str(d / "clipped_scaled.wav")
    if have_shared_speech():
        files["jfk"], files["lj"] = str(copy_shared("jfk.flac", d)), str(copy_shared("lj_1.wav", d))
    out = d / "corpus"
    report = run(["--sources", write_sources(d / "s.txt", list(files.values())), "--output", str(out),
                  *permissive(tiny_model), "--keep_rejected_audio", "--samples_per_shard", "4"])
    by_uri = {r["uri"]: r for r in table(out, "sources")}
    by_name = {name: by_uri["file://" + path] for name, path in files.items()}
    return {"out": out, "report": report, "sources": by_name, "files": files}


def reasons_of(gated, name):
    sid = gated["sources"][name]["source_id"]
    return [(r["reason"], r["detail"]) for r in table(gated["out"], "rejected") if r["source_id"] == sid]


def kept_of(gated, name):
    sid = gated["sources"][name]["source_id"]
    return [m for m in table(gated["out"], "manifest") if m["source_id"] == sid]


def test_clean_speech_is_kept_with_its_scores(gated):
    names = ["clean"] + [n for n in ("lj",) if n in gated["files"]]
    for name in names:
        kept = kept_of(gated, name)
        assert kept, (name, reasons_of(gated, name))
        for m in kept:
            assert m["speech_ratio"] >= 0.5 and m["bandwidth_hz"] >= 6500 and m["clipping"] <= 0.002
            assert m["snr_db"] >= 15 and m["dnsmos_ovrl"] is None  # DNSMOS is off on CPU by default
    if "jfk" in gated["files"]:  # a 1961 broadcast: its band stops near 5.2 kHz, under --min_bandwidth_hz 6500
        got = reasons_of(gated, "jfk")
        assert not kept_of(gated, "jfk") and got and {r for r, _ in got} == {"low_bandwidth"}, got


def test_a_band_limited_archive_recording_is_rejected_naming_its_bandwidth(gated):
    if "jfk" not in gated["files"]:
        pytest.skip("needs ../shared/data/real_speech")
    got = reasons_of(gated, "jfk")  # a 1961 broadcast: nothing above ~5.2 kHz, too dull for 22 kHz TTS
    assert kept_of(gated, "jfk") == [] and got and {r for r, _ in got} == {"low_bandwidth"}, got
    assert all(d.startswith("bandwidth_hz ") and float(d.split()[1]) < 6500 for _, d in got)


@pytest.mark.parametrize("name,reason,score", [
    ("music", "no_speech", None), ("noise", "no_speech", None),
    ("telephone", "low_bandwidth", "bandwidth_hz"), ("clipped", "clipped", "clipping"),
    ("clipped_scaled", "clipped", "clipping"), ("under_music", "noisy", "snr_db"), ("in_noise", "noisy", "snr_db"),
])
def test_bad_audio_is_rejected_by_the_expected_gate(gated, name, reason, score):
    assert kept_of(gated, name) == []
    got = reasons_of(gated, name)
    assert got and {r for r, _ in got} == {reason}, got
    if score:
        assert all(d.startswith(score + " ") for _, d in got)  # the value against the threshold
        rows = [r for r in table(gated["out"], "rejected") if r["source_id"] == gated["sources"][name]["source_id"]]
        assert all(r["stage"] == "quality" and r[score] is not None for r in rows)
    else:
        assert gated["sources"][name]["status"] == "rejected"


def test_gated_clips_cost_no_transcription_and_can_be_heard(gated):
    report = gated["report"]
    assert report["asr_hours_saved"] > 0
    rejected_rows = [r for r in table(gated["out"], "rejected")
                     if r["key"] and (r["stage"] == "quality" or r["reason"] == "multi_speaker")]
    assert all(r["text"] is None for r in rejected_rows if r["reason"] in ("noisy", "clipped", "low_bandwidth"))
    tars = sorted(str(p) for p in (gated["out"] / "rejected_shards").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert {s["__key__"] for s in samples} == {r["key"] for r in rejected_rows}
    import io
    for s in samples:
        audio, sr = sf.read(io.BytesIO(s["flac"]))
        meta = json.loads(s["json"])
        assert sr == 22050 and len(audio) > 0 and meta["reason"] and meta["key"] == s["__key__"]
    manifest = table(gated["out"], "rejected_manifest")
    assert sorted(m["key"] for m in manifest) == sorted(s["__key__"] for s in samples)


def test_gates_can_be_turned_off(tmp_path, tiny_model, gated):
    out = tmp_path / "corpus"
    run(["--sources", write_sources(tmp_path / "s.txt", [gated["files"]["telephone"], gated["files"]["in_noise"]]),
         "--output", str(out), *permissive(tiny_model), "--min_bandwidth_hz", "none", "--min_snr_db", "none",
         "--speakers", "off",  # 0 dB noise also blurs voices: the speaker check would reject it
         "--dedup_audio", "off"])  # both are the same recording, degraded two ways
    assert {m["source_uri"] for m in table(out, "manifest")} == {
        "file://" + gated["files"]["telephone"], "file://" + gated["files"]["in_noise"]}


def test_dnsmos_scores_and_gates(tmp_path, tiny_model, gated):
    import soxr
    clean, _ = sf.read(gated["files"]["clean"], dtype="float32")
    noisy, _ = sf.read(gated["files"]["in_noise"], dtype="float32")
    (sc, bc, oc), (sn, bn, on) = dnsmos.score([soxr.resample(clean, 22050, 16000), soxr.resample(noisy, 22050, 16000)])
    assert oc > 2.5 > on and bc > bn
    out = tmp_path / "corpus"
    run(["--sources", write_sources(tmp_path / "s.txt", [gated["files"]["clean"], gated["files"]["in_noise"]]),
         "--output", str(out), *permissive(tiny_model), "--dnsmos", "on", "--min_snr_db", "none"])
    kept = table(out, "manifest")
    assert kept and all(m["dnsmos_ovrl"] >= 2.5 for m in kept)
    rejected = [r for r in table(out, "rejected") if r["reason"] == "low_dnsmos"]
    assert rejected and all(r["detail"].startswith("dnsmos_ovrl ") and r["dnsmos_ovrl"] < 2.5 for r in rejected)


def test_gate_options_are_checked(tmp_path, tiny_model, speech, capsys):
    base = ["--sources", write_sources(tmp_path / "s.txt", [speech["a"][1]]), "--output", str(tmp_path / "c"),
            *permissive(tiny_model)]
    for bad, expect in ((["--min_dnsmos_ovrl", "3"], "--min_dnsmos_ovrl needs DNSMOS to run"),
                        (["--vad", "energy"], "--min_speech_ratio needs --vad silero"),
                        (["--max_clipping", "2"], "--max_clipping must be within 0..1"),
                        (["--min_snr_db", "loud"], "expected a number or 'none'")):
        with pytest.raises(SystemExit) as e:
            run(base + bad)
        assert e.value.code == 2 and expect in capsys.readouterr().err
