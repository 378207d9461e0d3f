import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audio.energy import FrameEnergy, frame_db
from audio.silence import SplitParams, split_on_silence

HOP_S = 0.01


def profile(pattern):
    """Frame energies from (seconds, dB) pieces on a 10 ms grid."""
    return np.concatenate([np.full(int(round(s / HOP_S)), db, dtype=np.float32) for s, db in pattern])


def secs(pieces):
    return [(round(p.start * HOP_S, 2), round(p.end * HOP_S, 2)) for p in pieces]


def test_streaming_energy_matches_whole_array():
    x = (np.random.default_rng(0).standard_normal(22050 * 3) * 3000).astype(np.int16)
    whole = frame_db(x, 220)
    fe = FrameEnergy(220)
    for chunk in np.array_split(x, [1, 999, 5000, 5001, 40000]):
        fe.push(chunk)
    np.testing.assert_allclose(fe.db(), whole, atol=1e-4)
    assert len(whole) == int(np.ceil(len(x) / 220))


def test_cuts_at_long_silences_only():
    db = profile([(0.5, -70), (5, -20), (0.3, -70), (3, -20), (0.8, -70), (6, -20), (0.5, -70)])
    r = split_on_silence(db, HOP_S)
    # the 0.3 s pause is not a cut; the 0.8 s one is; 0.2 s of silence kept at each edge
    assert secs(r.clips) == [(0.3, 9.0), (9.4, 15.8)]
    assert not r.too_short


def speechlike(seconds):
    """Syllable-like modulation between -18 and -28 dB every 100 ms."""
    return [(0.1, -18.0 if i % 2 else -28.0) for i in range(int(round(seconds / 0.1)))]


def test_long_stretch_is_cut_at_its_quietest_point():
    db = profile(speechlike(12) + [(0.1, -45)] + speechlike(8) + [(0.2, -40)] + speechlike(10))
    r = split_on_silence(db, HOP_S)
    bounds = [c.end for c in r.clips[:-1]]
    assert len(r.clips) == 2
    # not at the -40 dB dip at 20.1 s (a 20.1 s left piece is too long) but inside the -45 dB one at 12.0 s
    assert 1200 <= bounds[0] <= 1210
    assert all(4.0 <= (c.end - c.start) * HOP_S <= 20.0 for c in r.clips)


def test_short_piece_merges_across_small_gap_else_rejected():
    db = profile([(6, -20), (1.0, -70), (2, -20), (5.0, -70), (1.5, -20)])
    r = split_on_silence(db, HOP_S)
    assert secs(r.clips) == [(0.0, 9.2)]  # 2 s piece merged into the first, across a 0.6 s gap
    assert secs(r.too_short) == [(13.8, 15.5)]  # 1.5 s alone behind a 5 s silence


def test_quiet_recording_splits_the_same():
    db = profile([(0.5, -70), (5, -20), (0.3, -70), (3, -20), (0.8, -70), (6, -20), (0.5, -70)])
    loud = split_on_silence(db, HOP_S)
    quiet = split_on_silence(db - 40, HOP_S)
    assert loud.clips == quiet.clips and quiet.level_db < loud.level_db - 39


def test_silence_and_flat_files_are_rejected():
    assert split_on_silence(np.full(800, -120, np.float32), HOP_S).file_reason == "silent"
    assert split_on_silence(np.full(800, -30, np.float32), HOP_S).file_reason == "no_dynamics"
    assert split_on_silence(np.zeros(0, np.float32), HOP_S).file_reason == "no_audio"


def test_params_validation():
    with pytest.raises(ValueError, match="min_clip_s"):
        SplitParams(min_clip_s=10, max_clip_s=5).validate()
    with pytest.raises(ValueError, match="keep_silence_ms"):
        SplitParams(keep_silence_ms=400, min_silence_ms=600).validate()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 30.0), st.sampled_from([-80.0, -60.0, -35.0, -25.0, -15.0])),
                min_size=1, max_size=25))
def test_clips_respect_bounds_and_never_overlap(pieces):
    db = profile(pieces)
    p = SplitParams()
    r = split_on_silence(db, HOP_S, p)
    everything = sorted(r.clips + r.too_short, key=lambda c: c.start)
    for a, b in zip(everything, everything[1:]):
        assert a.end <= b.start
    for c in r.clips:
        assert p.min_clip_s - 1e-6 <= (c.end - c.start) * HOP_S <= p.max_clip_s + 1e-6
    for c in r.too_short:
        assert (c.end - c.start) * HOP_S < p.min_clip_s
    assert all(0 <= c.start < c.end <= len(db) for c in everything)
