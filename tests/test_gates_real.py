"""The audio gates on real read speech (LibriVox, from Debian's pocketsphinx-testdata) mixed at known
levels: the SNR they estimate, reverberation, codec damage, quiet speech and overlapping clips."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import soundfile as sf

from audio.synth import music, pink_noise
from schemas.records import AsrBatch, AudioFile, Rejection, Source
from transforms.segment import SegmentConfig, segment_source

LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
RATE = 16000
HOP = 160

pytestmark = pytest.mark.skipif(not os.path.isdir(LIBRIVOX), reason="needs pocketsphinx-testdata (scripts/setup.sh)")


@pytest.fixture(scope="module")
def librivox():
    """Five LibriVox lines of one reader joined with 0.8 s pauses (36 s), RMS 0.05."""
    parts = []
    for f in sorted(glob.glob(f"{LIBRIVOX}/*.wav")):
        x, sr = sf.read(f, dtype="float64")
        assert sr == RATE
        parts += [x / np.sqrt(np.mean(x ** 2)) * 0.05, np.zeros(int(0.8 * RATE))]
    return np.concatenate(parts)


def frame_power(x):
    n = len(x) // HOP
    return np.var(x[:n * HOP].reshape(n, HOP), axis=1)  # as audio.energy: a frame's mean is not power


def segment(tmp_path, x, name, **gates):
    """(kept segments, rejections) of audio ``x`` through the segment stage (speakers off)."""
    from transforms.quality import AudioGates
    path = str(tmp_path / f"{name}.wav")
    if isinstance(x, str):
        path = x
    else:
        sf.write(path, x, RATE, subtype="PCM_16")
    cfg = SegmentConfig(pack_dir=str(tmp_path / "packs"), speakers=False, gates=AudioGates(**gates))
    kept, rejected = [], []
    for out in segment_source(AudioFile(Source("file://" + path, name), path, os.path.getsize(path)), cfg.validate()):
        if isinstance(out, AsrBatch):
            kept += list(out.segments)
        elif isinstance(out, Rejection):
            rejected.append(out)
    return sorted(kept, key=lambda s: s.start_s), rejected


@pytest.mark.parametrize("bed,snr", [("music", 5.0), ("music", 20.0), ("noise", 5.0), ("noise", 20.0)])
def test_snr_is_estimated_from_what_is_not_speech(librivox, tmp_path, bed, snr):
    clean = librivox
    b = (music(len(clean) / 22050 + 1, seed=3) if bed == "music" else pink_noise(len(clean) / 22050 + 1, seed=4))
    b = np.asarray(b, dtype=np.float64)[:len(clean)]
    cp, bp = frame_power(clean), frame_power(b)
    act = cp > np.percentile(cp, 95) * 1e-3
    gain = np.sqrt(np.mean(cp[act]) / np.mean(bp) / 10 ** (snr / 10))
    kept, rejected = segment(tmp_path, clean + gain * b, f"{bed}{snr:g}", min_snr_db=None)
    segs = kept + [r.segment for r in rejected if r.segment is not None]
    assert len(segs) >= 2
    errors = []
    for s in segs:
        a, e = int(s.start_s * 100), int(s.end_s * 100)
        true = 10 * np.log10(np.mean(cp[a:e][act[a:e]]) / (np.mean(bp[a:e]) * gain ** 2))
        errors.append(s.scores.snr_db - true)
    assert np.max(np.abs(errors)) <= 3.0, errors
