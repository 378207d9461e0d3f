"""Telling real voices apart, on real recordings joined at test time (``audio.joined``).

Material: LJ Speech (one woman, ``lj_1``/``lj_2``), JFK's inaugural (one man, ``jfk``) from
../shared/data/real_speech, and the LibriVox reader of pocketsphinx-testdata (one woman, five
lines of Sense and Sensibility) when that Debian package is installed.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from audio.joined import join, kept_share, load, majority, purity
from benchmarks.speakers_real import ids_in_waves
from schemas.keys import source_id_for_uri
from schemas.records import Source
from speakers import cluster
from speakers.turns import units
from tests.conftest import SHARED_SPEECH, have_shared_speech
from transforms.quality import AudioGates
from transforms.segment import SegmentConfig, segment_file

LIBRIVOX = sorted(glob.glob("/usr/share/pocketsphinx/test/data/librivox/*.wav"))
needs_shared = pytest.mark.skipif(not have_shared_speech(), reason="needs ../shared/data/real_speech")


def kept(joined, tmp_path, name: str, origin: str):
    """Kept segments of a joined file through the segment stage with its defaults (speakers on)."""
    path = joined.write(str(tmp_path / f"{name}.wav"))
    uri = "file://" + path
    src = Source(uri=uri, source_id=source_id_for_uri(uri), origin=origin)
    # the bandwidth gate would drop JFK's 1961 broadcast (5.2 kHz): voices, not fidelity, are tested here
    cfg = SegmentConfig(pack_dir=str(tmp_path / "packs"), gates=AudioGates(min_bandwidth_hz=None))
    return sorted(segment_file(src, path, cfg)[0], key=lambda s: s.key)


def ids_of(group: str, segs, waves: int = 1, shuffle: int = 0):
    """Speaker ids as the speakers stage gives them, the group committed in ``waves`` waves (known
    speakers carried as the corpus stores them); ``shuffle`` reorders the clips a wave's call gets."""
    return ids_in_waves(group, segs, waves, shuffle)


def pauses(n: int, seed: int):
    return list(np.random.default_rng(seed).uniform(0.35, 1.2, n))


def lj_and_jfk(gap: float):
    """LJ's two readings between the two halves of JFK's speech, ``gap`` seconds apart (negative: overlapping)."""
    lj1, lj2, jfk = (load(str(SHARED_SPEECH / f)) for f in ("lj_1.wav", "lj_2.wav", "jfk.flac"))
    half = len(jfk) // 2
    return join([("lj", lj1), ("jfk", jfk[:half]), ("lj", lj2), ("jfk", jfk[half:])], [gap] * 3)


@needs_shared
def test_one_real_voice_is_kept_whole_with_one_id(tmp_path):
    lines = [("lj", load(str(SHARED_SPEECH / f))) for f in ("lj_1.wav", "lj_2.wav", "lj_1.wav")]
    joined = join(lines, pauses(2, 1))
    segs = kept(joined, tmp_path, "lj", "s.txt:1")
    assert kept_share([(s.start_s, s.end_s) for s in segs], joined.spans) >= 0.9
    assert len(set(ids_of("folder", segs))) == 1 and {s.source_voices for s in segs} == {1}
    assert all(s.scores.voice_change_score is None or 0 <= s.scores.voice_change_score <= 2 for s in segs)


@pytest.mark.skipif(len(LIBRIVOX) < 5, reason="needs Debian pocketsphinx-testdata")
def test_a_librivox_reader_is_one_voice(tmp_path):
    joined = join([("reader", load(f)) for f in LIBRIVOX], pauses(len(LIBRIVOX) - 1, 2))
    segs = kept(joined, tmp_path, "reader", "s.txt:1")
    assert kept_share([(s.start_s, s.end_s) for s in segs], joined.spans) >= 0.9
    assert len(set(ids_of("folder", segs))) == 1


@needs_shared
@pytest.mark.parametrize("gap", [0.3, 1.0, -0.4])
def test_two_real_voices_are_cut_apart_with_true_ids(tmp_path, gap):
    """LJ's quiet, fast reading (its 0.15 s pauses cut it into pieces under a second) between two
    halves of JFK's speech, with pauses or overlapping (-0.4 s): both voices heard, cut apart, no tail
    of one at the start of the other."""
    joined = lj_and_jfk(gap)
    segs = kept(joined, tmp_path, f"talk{gap}", "s.txt:1")
    truth = [majority(s.start_s, s.end_s, joined.spans) for s in segs]
    assert segs and all(other <= 0.25 for _, other in truth), truth  # no kept clip holds both voices
    pure, per_voice = purity(ids_of(f"talk{gap}", segs), [v for v, _ in truth])
    assert pure >= 0.95 and per_voice <= 1.2 and {v for v, _ in truth} == {"lj", "jfk"}


@needs_shared
@pytest.mark.skipif(len(LIBRIVOX) < 5, reason="needs Debian pocketsphinx-testdata")
def test_a_reader_and_a_speaker_alternating_with_short_gaps(tmp_path):
    """The LibriVox reader's lines and JFK's speech alternating with 0.3 s gaps (each side of a change
    that quick gives up --voice_change_guard_s, so JFK speaks in halves of his 11 s)."""
    reader = [load(f) for f in LIBRIVOX]
    jfk = load(str(SHARED_SPEECH / "jfk.flac"))
    half = len(jfk) // 2
    lines = [("reader", reader[0]), ("jfk", jfk[:half]), ("reader", reader[1]), ("jfk", jfk[half:]),
             ("reader", reader[2])]
    joined = join(lines, [0.3] * 4)
    segs = kept(joined, tmp_path, "reader-jfk", "s.txt:1")
    truth = [majority(s.start_s, s.end_s, joined.spans) for s in segs]
    assert segs and all(other <= 0.25 for _, other in truth), truth
    assert {v for v, _ in truth} == {"reader", "jfk"}
    pure, per_voice = purity(ids_of("reader-jfk", segs), [v for v, _ in truth])
    assert pure >= 0.95 and per_voice <= 1.2


def test_short_utterances_are_grouped_across_their_shortest_pauses():
    """``units``: an utterance long enough stands alone; runs of short ones are joined across the
    shorter pause beside each until each group is long enough or its run ends."""
    utts = [(0, 50, 0), (50, 80, 20), (80, 300, 30), (300, 340, 20), (340, 400, 10), (400, 430, 40),
            (430, 600, 5)]
    assert units(utts, 100) == [(0, 80, 0), (80, 300, 30), (300, 430, 20), (430, 600, 5)]
    assert units(utts, 10) == utts
    assert units([(0, 40, 0), (40, 90, 30), (90, 130, 10)], 100) == [(0, 130, 0)]


@needs_shared
def test_ids_do_not_depend_on_waves_or_the_order_clips_arrive(tmp_path):
    """A folder of three files (two of one woman, one of a man): the same ids in 1 wave and in 3,
    whatever order a worker receives the clips in, and one id per person."""
    lj1, lj2, jfk = (load(str(SHARED_SPEECH / f)) for f in ("lj_1.wav", "lj_2.wav", "jfk.flac"))
    files = [("a", join([("lj", lj1), ("lj", lj2)], [0.6])), ("b", join([("jfk", jfk)], [])),
             ("c", join([("lj", lj2), ("lj", lj1)], [0.8]))]
    segs, truth = [], {}
    for i, (name, j) in enumerate(files):
        for s in kept(j, tmp_path, name, f"folder:{i + 1}"):
            segs.append(s)
            truth[s.key] = majority(s.start_s, s.end_s, j.spans)[0]
    segs.sort(key=lambda s: s.key)
    one = ids_of("folder", segs)
    assert ids_of("folder", segs, waves=3) == one
    assert ids_of("folder", segs, waves=1, shuffle=7) == one
    pure, per_voice = purity(one, [truth[s.key] for s in segs])
    assert pure == 1.0 and per_voice == 1.0


def test_one_voice_wins_unless_two_are_clearly_apart():
    """``voices``: stray seconds or two stretches of one person never make a second voice."""
    rng = np.random.default_rng(0)
    a, b = cluster.normalise(rng.standard_normal((2, 256)))
    one = cluster.normalise(a + rng.standard_normal((30, 256)) * 0.04)
    assert cluster.voices(one, np.full(30, 2.0), 0.75, 3.0).max() == 0
    stray = np.vstack([one, cluster.normalise(b[None] + rng.standard_normal((1, 256)) * 0.04)])
    assert cluster.voices(stray, np.full(31, 2.0), 0.75, 3.0).max() == 0  # 2 s of another: not a voice
    two = np.vstack([one, cluster.normalise(b + rng.standard_normal((10, 256)) * 0.04)])
    lab = cluster.voices(two, np.full(40, 2.0), 0.75, 3.0)
    assert lab.max() == 1 and len(set(lab[:30])) == 1 and len(set(lab[30:])) == 1 and lab[0] != lab[30]


@needs_shared
def test_a_whole_build_gives_the_same_ids_in_one_wave_and_in_one_wave_a_source(tmp_path, tiny_model):
    """The real pipeline, not the id step alone: a folder of three files (two readings by one woman,
    one man) built in one wave and with every file in a wave of its own gives every clip the same
    speaker id, one id per person."""
    import pyarrow.parquet as pq
    import soundfile as sf

    from audio.joined import RATE
    from pipelines.build_corpus import run
    from tests.conftest import permissive
    lj1, lj2, jfk = (load(str(SHARED_SPEECH / f)) for f in ("lj_1.wav", "lj_2.wav", "jfk.flac"))
    files = {"a": join([("lj", lj1), ("lj", lj2)], [0.6]), "b": join([("jfk", jfk)], []),
             "c": join([("lj", lj2), ("lj", lj1)], [0.8])}
    (tmp_path / "talks").mkdir()
    for name, j in files.items():
        sf.write(str(tmp_path / "talks" / f"{name}.wav"), j.audio, RATE)
    (tmp_path / "s.txt").write_text(f"{tmp_path / 'talks'}\n")  # one folder: one voice group

    def ids(out, *extra):
        run(["--sources", str(tmp_path / "s.txt"), "--output", str(out), *permissive(tiny_model),
             "--min_bandwidth_hz", "0", *extra])  # JFK's 1961 broadcast is band-limited
        rows = [r for f in sorted((out / "manifest").glob("*.parquet")) for r in pq.read_table(str(f)).to_pylist()]
        return {r["key"]: (r["speaker"], os.path.basename(r["source_uri"])) for r in rows}

    one = ids(tmp_path / "one")
    per_source = ids(tmp_path / "three", "--commit_every_hours", "0.002")  # ≈ 7 s a wave: a source each
    assert len(list((tmp_path / "three" / "runs").glob("*.json"))) == 3 and len(one) >= 4
    assert per_source == one
    by_file = {}
    for speaker, name in one.values():
        by_file.setdefault(name, set()).add(speaker)
    assert sorted(by_file) == ["a.wav", "b.wav", "c.wav"] and all(len(v) == 1 for v in by_file.values())
    # the two readings of one woman share an id; the man has his own
    assert by_file["a.wav"] == by_file["c.wav"] != by_file["b.wav"]


@needs_shared
def test_the_guard_options_reach_the_speaker_stage_of_a_build(tmp_path, tiny_model):
    """A whole build of LJ and JFK overlapping by 0.4 s: with the defaults, the pieces beside each
    change are rows (multi_speaker, with their length) and no kept clip holds more than 0.25 s of the
    other voice; with --voice_change_guard_s 0 there are no such rows, and more speech is kept."""
    import soundfile as sf

    from audio.joined import RATE
    from pipelines.build_corpus import run
    from tests.conftest import permissive
    from tests.test_build_corpus import table
    joined = lj_and_jfk(-0.4)
    (tmp_path / "talk").mkdir()
    sf.write(str(tmp_path / "talk" / "talk.wav"), joined.audio, RATE)
    got = {}
    for guard in ("1", "0"):
        out = tmp_path / f"guard{guard}"
        run(["--sources", str(tmp_path / "talk"), "--output", str(out), *permissive(tiny_model),
             "--min_bandwidth_hz", "0", "--voice_change_guard_s", guard])
        rows = [r for r in table(out, "rejected") if r["reason"] == "multi_speaker" and "two voices meet" in r["detail"]]
        got[guard] = ([(r["start_s"], r["end_s"]) for r in table(out, "manifest")], rows)
    (kept, rows), (kept_off, rows_off) = got["1"], got["0"]
    assert rows and not rows_off, rows_off
    assert all(majority(a, b, joined.spans)[1] <= 0.25 for a, b in kept), kept
    assert kept_share(kept_off, joined.spans) > kept_share(kept, joined.spans)
