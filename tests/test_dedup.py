"""Duplicates on real speech (LibriVox from pocketsphinx-testdata, JFK from shared data): a re-encoded,
re-gained, trimmed copy with a new intro is found; other speech by the same voice is not; an intro
repeated in every episode is kept once; a folder mirrored in a later run adds nothing and names the
sources it repeats; ``--redo`` and ``compact`` keep the index true; counts are of the clips kept."""
from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpus.layout import Layout
from corpus.summary import corpus_report
from dedup import fingerprint
from dedup.decide import DedupParams, Item, decide
from dedup.index import FingerprintIndex
from dedup.text import TextIndex
from pipelines.build_corpus import run
from pipelines.compact import compact
from tests.conftest import SHARED_SPEECH, ffmpeg, permissive
from transforms.progress import progress

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


def _shards(out: Path):
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def _run(sources_file, out, model, *extra):
    return run(["--sources", str(sources_file), "--output", str(out), *permissive(model), "--dedup_text", "keep",
                "--min_bandwidth_hz", "none", "--dedup_audio", "on", "--samples_per_shard", "50", *extra])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model, sources):
    """One corpus built step by step, a copy of it kept after each step:

    1. ``show``: five episodes that open with the same 6 s intro (speakers on);
    2. ``mirror``: the show re-encoded into a second folder, in a later run;
    3. ``redo``: ``--redo`` of episodes 1 (whose intro was the first) and 2;
    4. ``compact``: the partial shards merged;
    5. ``after_compact``: one more re-encoded copy of episode 3, in a later run.
    """
    d = tmp_path_factory.mktemp("dedup_corpus")
    show = _episodes(d / "show", sources["intro"])
    mirror = d / "mirror"
    mirror.mkdir()
    for ep in sorted(show.iterdir()):
        ffmpeg("-i", str(ep), "-ar", "24000", "-c:a", "libopus", "-b:a", "48k", str(mirror / (ep.stem + ".opus")))
    copy3 = d / "copy3"
    copy3.mkdir()
    ffmpeg("-i", str(show / "ep3.mp3"), "-af", "volume=-4dB", "-ar", "32000", "-c:a", "libmp3lame", "-b:a", "48k",
           str(copy3 / "ep3-again.mp3"))
    out, sources_file, steps = d / "corpus", d / "sources.txt", {}

    def keep(name, report):
        steps[name] = {"report": report, "dir": shutil.copytree(out, d / f"corpus-{name}")}

    sources_file.write_text(f"{show}\n")
    progress().add(kept=7)  # counts left by an earlier run in this process: each run starts afresh
    report = _run(sources_file, out, tiny_model)
    keep("show", report)
    steps["show"]["progress_kept"] = progress().counts["kept"]
    sources_file.write_text(f"{show}\n{mirror}\n")
    keep("mirror", _run(sources_file, out, tiny_model))
    ids = {r["uri"].rsplit("/", 1)[-1]: r["source_id"] for r in _table(out, "sources")}
    steps["ids"] = ids
    keep("redo", _run(sources_file, out, tiny_model, "--redo", f"{ids['ep1.mp3']},{ids['ep2.mp3']}"))
    keep("rerun", _run(sources_file, out, tiny_model))
    steps["compacted"] = compact(str(out))
    keep("compact", corpus_report(Layout(str(out))))
    sources_file.write_text(f"{show}\n{mirror}\n{copy3}\n")
    keep("after_compact", _run(sources_file, out, tiny_model))
    return steps


def _dedup_rows(out: Path):
    return [r for r in _table(out, "rejected") if r["reason"] == "duplicate_audio"]


def test_an_intro_in_every_episode_is_kept_once(corpus):
    out, report = corpus["show"]["dir"], corpus["show"]["report"]
    kept = _table(out, "manifest")
    rejected = _dedup_rows(out)
    intros = [r for r in kept if r["start_s"] < 5.0]
    assert len(intros) == 1 and intros[0]["source_uri"].endswith("ep1.mp3")
    assert len(rejected) == 4 and all(r["stage"] == "dedup" for r in rejected)
    assert all(intros[0]["key"] in r["detail"] for r in rejected)
    assert all(int(r["key"].rsplit("_", 1)[1]) < 5000 for r in rejected)  # only intros: each line is new audio
    assert [k for k in kept if k["start_s"] > 5.0]
    assert all(r["fingerprint"] for r in kept)
    assert report["hours_duplicate"] == pytest.approx(sum(r["duration_s"] for r in rejected) / 3600, abs=1e-4)
    assert report["rejects_by_reason"]["dedup/duplicate_audio"]["count"] == 4
    # these episodes are a short line after the intro: those whose clips are mostly the intro are said to
    # repeat episode 1, the one whose intro is kept; episode 1 repeats nothing
    repeats = report["duplicate_sources"]["examples"]
    assert repeats and all(e["repeats_uri"].endswith("ep1.mp3") and not e["uri"].endswith("ep1.mp3") for e in repeats)


def test_counts_are_of_the_clips_kept_after_dedup(corpus):
    """The speakers table and the live progress count the clips the corpus keeps, not those before dedup;
    no clip names a rejected one as a similar clip."""
    out, report = corpus["show"]["dir"], corpus["show"]["report"]
    kept = _table(out, "manifest")
    speakers = _table(out, "speakers")
    per_speaker = Counter(r["speaker"] for r in kept)
    assert {s["speaker_id"]: s["n_clips"] for s in speakers} == dict(per_speaker)
    assert sum(per_speaker.values()) == report["kept"] == len(kept)
    assert corpus["show"]["progress_kept"] == report["kept"]
    keys = {r["key"] for r in kept}
    assert any(r["similar_keys"] for r in kept) and all(set(r["similar_keys"]) <= keys for r in kept)


def test_a_mirror_in_a_later_run_adds_nothing_and_names_the_source_it_repeats(corpus):
    show, out, report = corpus["show"], corpus["mirror"]["dir"], corpus["mirror"]["report"]
    assert report["kept"] == show["report"]["kept"] and _shards(out) == _shards(show["dir"])
    mirrored = [r for r in _dedup_rows(out) if "mirror" in (r["source_uri"] or "")]
    assert len(mirrored) >= show["report"]["kept"]
    assert corpus_report(Layout(str(out)))["hours_duplicate"] > show["report"]["hours_duplicate"]
    ids = corpus["ids"]
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in _table(out, "sources")}
    for i in range(1, 6):
        row = rows[f"ep{i}.opus"]
        # its intro repeats episode 1's, its line episode i's: most of it repeats one of them
        assert row["duplicate_of"] in (ids["ep1.mp3"], ids[f"ep{i}.mp3"]) and row["duplicate_share"] >= 0.5
    assert rows["ep1.opus"]["duplicate_of"] == ids["ep1.mp3"] and rows["ep1.mp3"]["duplicate_of"] is None
    summary = report["duplicate_sources"]
    assert summary["count"] == show["report"]["duplicate_sources"]["count"] + 5
    assert all(e["uri"].endswith(".opus") for e in summary["examples"])  # listed by URI: mirror/ before show/


def test_redo_of_the_first_occurrence_keeps_the_index_true(corpus):
    """Episodes 1 and 2 redone: episode 1 is not a duplicate of its own old samples, its intro is kept
    once, episode 2's intro is rejected again naming the clip that exists now, and a rerun changes nothing."""
    before, out, ids = corpus["mirror"]["dir"], corpus["redo"]["dir"], corpus["ids"]
    old, kept = _table(before, "manifest"), _table(out, "manifest")
    assert sorted(r["key"] for r in kept) == sorted(r["key"] for r in old)
    assert len([r for r in kept if r["start_s"] < 5.0]) == 1
    keys = {r["key"] for r in kept}
    report = corpus_report(Layout(str(out)))
    current = {(r["source_id"], r["run"]) for r in _table(out, "sources")}
    named = [r["detail"].split(" repeats ")[1].split()[0] for r in _dedup_rows(out)
             if (r["source_id"], r["run"]) in current]
    assert named and set(named) <= keys  # no clip rejected as a repeat of a clip that is gone
    runs = {r["run"] for r in _table(before, "rejected")}
    latest = [r for r in _table(out, "rejected") if r["run"] not in runs]
    assert {r["source_id"] for r in latest} == {ids["ep2.mp3"]} and latest[0]["reason"] == "duplicate_audio"
    assert report["kept"] == corpus["mirror"]["report"]["kept"]
    assert _shards(corpus["rerun"]["dir"]) == _shards(out) and corpus["rerun"]["report"]["kept"] == report["kept"]


def test_compact_keeps_the_fingerprints_and_later_runs_still_find_duplicates(corpus):
    assert corpus["compacted"]["new_shards"]  # there were partial shards to merge
    out = corpus["compact"]["dir"]
    kept = _table(out, "manifest")
    assert len(kept) == len(_table(corpus["redo"]["dir"], "manifest")) and all(r["fingerprint"] for r in kept)
    after = corpus["after_compact"]
    assert after["report"]["kept"] == len(kept) and _shards(after["dir"]) == _shards(out)
    again = [r for r in _dedup_rows(after["dir"]) if r["source_uri"].endswith("ep3-again.mp3")]
    assert again and all(r["detail"].split(" repeats ")[1].split()[0] in {k["key"] for k in kept} for r in again)
