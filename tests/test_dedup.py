"""Duplicates on real speech (LibriVox from pocketsphinx-testdata, JFK from shared data): a re-encoded,
re-gained, trimmed copy with a new intro is found; other speech by the same voice is not; an intro
repeated in every episode is kept once; a folder mirrored in a later run adds nothing."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dedup import fingerprint
from dedup.decide import DedupParams, Item, decide
from dedup.index import FingerprintIndex
from dedup.text import TextIndex
from pipelines.build_corpus import run
from tests.conftest import SHARED_SPEECH, ffmpeg, permissive

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIPS = sorted(LIBRIVOX.glob("*.wav"))
pytestmark = pytest.mark.skipif(len(CLIPS) < 5 or not (SHARED_SPEECH / "jfk.flac").exists(),
                                reason="needs pocketsphinx-testdata (scripts/setup.sh) and ../shared/data")


def decode(path, rate=22050) -> np.ndarray:
    from audio.ffmpeg import ffmpeg_binary
    raw = subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(rate),
                          "-f", "s16le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.int16)


def concat(out, inputs, *codec):
    filt = "".join(f"[{i}]aresample=16000[a{i}];" for i in range(len(inputs)))
    filt += "".join(f"[a{i}]" for i in range(len(inputs))) + f"concat=n={len(inputs)}:v=0:a=1"
    ffmpeg(*[x for p in inputs for x in ("-i", str(p))], "-filter_complex", filt, *codec, str(out))
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A: three LibriVox lines as MP3; B: two other lines of the same narrator; dup: A's 2-12 s, −3 dB,
    after a 7 s intro of another voice, resampled to 22.05 kHz and encoded as Opus 32 kbps."""
    d = tmp_path_factory.mktemp("dedup_sources")
    a = concat(d / "a.mp3", CLIPS[:3], "-c:a", "libmp3lame", "-b:a", "64k")
    b = concat(d / "b.mp3", CLIPS[3:], "-c:a", "libmp3lame", "-b:a", "64k")
    intro = d / "intro.wav"
    ffmpeg("-t", "7", "-i", str(SHARED_SPEECH / "jfk.flac"), "-ar", "16000", str(intro))
    dup = d / "dup.opus"
    ffmpeg("-i", str(intro), "-ss", "2", "-t", "10", "-i", str(a), "-filter_complex",
           "[1]aresample=16000,volume=-3dB[a];[0][a]concat=n=2:v=0:a=1,aresample=22050",
           "-ar", "24000", "-c:a", "libopus", "-b:a", "32k", str(dup))
    return {"a": a, "b": b, "dup": dup, "intro": intro}


def test_a_reencoded_trimmed_copy_with_an_intro_is_a_duplicate_source(sources):
    fa, fb, fd = (fingerprint.of_samples(decode(sources[k]), 22050) for k in ("a", "b", "dup"))
    index = FingerprintIndex.build(["a", "b"], [fa, fb])
    m = index.query(fd)
    assert m is not None and m.key == "a"
    assert m.ber < 0.2 and 7.0 < m.matched_s <= 10.5  # the excerpt, not the intro
    assert abs(m.offset_s - (2.0 - 7.0)) < 0.5  # the copy starts 7 s before A's second 2
    # the copy's excerpt alone (after the intro), as a clip, repeats A in full
    clip = fingerprint.clip_slice(fd, 7.5, 16.5)
    assert index.query(clip).fraction > 0.9
    # its intro repeats nothing
    assert index.query(fingerprint.clip_slice(fd, 0.0, 6.5)) is None


def test_other_speech_by_the_same_voice_is_not_a_duplicate(sources):
    fa, fb = (fingerprint.of_samples(decode(sources[k]), 22050) for k in ("a", "b"))
    assert FingerprintIndex.build(["a"], [fa]).query(fb) is None
    for clip in CLIPS[3:]:
        assert FingerprintIndex.build(["a"], [fa]).query(fingerprint.of_samples(decode(clip), 22050)) is None


def test_the_first_in_order_is_kept_and_the_published_corpus_comes_first(sources):
    fa, fb, fd = (fingerprint.of_samples(decode(sources[k]), 22050) for k in ("a", "b", "dup"))
    dup_clip = fingerprint.clip_slice(fd, 7.5, 16.5)
    items = [Item("z_dup", (1, "2020", "z"), 9.0, "s2", "", dup_clip), Item("y_a", (1, "2019", "y"), 15.0, "s1", "", fa),
             Item("x_b", (1, "2021", "x"), 9.0, "s1", "", fb)]
    v = decide(items, [], DedupParams())
    assert set(v) == {"z_dup"} and v["z_dup"].reason == "duplicate_audio" and v["z_dup"].repeats == "y_a"
    published = [Item("p_a", (0, "p_a"), 15.0, "s0", "", fa)]
    v = decide(items, published, DedupParams())
    assert {k: x.repeats for k, x in v.items()} == {"z_dup": "p_a", "y_a": "p_a"}
    assert decide(items, published, DedupParams(audio=False)) == {}


def test_text_policy_keep_per_speaker_or_drop():
    line = "the family of dashwood had long been settled in sussex"
    items = [Item("k1", (1, "a"), 3.0, "anna", line), Item("k2", (1, "b"), 3.0, "ben", line.capitalize() + "."),
             Item("k3", (1, "c"), 3.0, "anna", line + " indeed"), Item("k4", (1, "d"), 3.0, "anna", "yes thank you")]
    assert decide(items, [], DedupParams(audio=False, text="keep")) == {}
    per = decide(items, [], DedupParams(audio=False))
    assert {k: x.repeats for k, x in per.items()} == {"k3": "k1"} and per["k3"].reason == "duplicate_text"
    drop = decide(items, [], DedupParams(audio=False, text="drop"))
    assert {k: x.repeats for k, x in drop.items()} == {"k2": "k1", "k3": "k1"}
    t = TextIndex()
    t.add("a", "completely different words about something else entirely here")
    assert t.query(line) is None


def _episodes(folder: Path, intro: Path, n: int = 5):
    """Episode i: the same 6 s spoken intro, a 2.5 s pause, then LibriVox line i (different for each)."""
    folder.mkdir()
    for i in range(n):
        ffmpeg("-t", "6", "-i", str(intro), "-i", str(CLIPS[i]), "-filter_complex",
               "[0]aresample=16000,apad=pad_dur=2.5[x];[1]aresample=16000[y];[x][y]concat=n=2:v=0:a=1",
               "-c:a", "libmp3lame", "-b:a", "64k", str(folder / f"ep{i + 1}.mp3"))
    return folder


def _table(out: Path, name: str):
    parts = sorted((out / name).glob("*.parquet"))
    return [r for p in parts for r in pq.read_table(p).to_pylist()]


def _args(tmp_path, sources_file, out, model):
    return ["--sources", str(sources_file), "--output", str(out), *permissive(model), "--speakers", "off",
            "--dedup_text", "keep", "--min_bandwidth_hz", "none", "--dedup_audio", "on"]


def test_an_intro_in_every_episode_is_kept_once_and_a_mirror_adds_nothing(tmp_path, tiny_model, sources):
    show = _episodes(tmp_path / "show", sources["intro"])
    sources_file = tmp_path / "sources.txt"
    sources_file.write_text(f"{show}\n")
    out = tmp_path / "corpus"
    report = run(_args(tmp_path, sources_file, out, tiny_model))
    kept = _table(out, "manifest")
    rejected = [r for r in _table(out, "rejected") if r["reason"] == "duplicate_audio"]
    intros = [r for r in kept if r["start_s"] < 5.0]
    assert len(intros) == 1 and intros[0]["source_uri"].endswith("ep1.mp3")
    assert len(rejected) == 4 and all(r["stage"] == "dedup" for r in rejected)
    ep1_intro = intros[0]["key"]
    assert all(ep1_intro in r["detail"] for r in rejected)
    assert all(int(r["key"].rsplit("_", 1)[1]) < 5000 for r in rejected)  # only intros: each line is new audio
    assert [k for k in kept if k["start_s"] > 5.0]
    assert all(r["fingerprint"] for r in kept)
    assert report["hours_duplicate"] == pytest.approx(sum(r["duration_s"] for r in rejected) / 3600, abs=1e-4)
    assert report["rejects_by_reason"]["dedup/duplicate_audio"]["count"] == 4
    first = sorted(p.read_bytes() for p in (out / "shards").glob("*.tar"))

    # the show mirrored into another folder, re-encoded (a byte-identical copy is the same source
    # already), in a later run: nothing new is kept
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for ep in sorted(show.iterdir()):
        ffmpeg("-i", str(ep), "-ar", "24000", "-c:a", "libopus", "-b:a", "48k", str(mirror / (ep.stem + ".opus")))
    sources_file.write_text(f"{show}\n{mirror}\n")
    report2 = run(_args(tmp_path, sources_file, out, tiny_model))
    assert report2["kept"] == report["kept"]
    assert sorted(p.read_bytes() for p in (out / "shards").glob("*.tar")) == first
    mirrored = [r for r in _table(out, "rejected") if "mirror" in (r["source_uri"] or "")]
    assert sum(r["reason"] == "duplicate_audio" for r in mirrored) >= report["kept"]
    assert json.loads((out / "report.json").read_text())["hours_duplicate"] > report["hours_duplicate"]
