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
    for out in segment_source(AudioFile(Source("file://" + path, name), path, os.path.getsize(path)), cfg):
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


def room(x, rt60, seed=0):
    """``x`` in a room: convolved with exponentially decaying noise of the given RT60, direct path first."""
    from scipy.signal import fftconvolve
    rng = np.random.default_rng(seed)
    t = np.arange(int(rt60 * 1.2 * RATE)) / RATE
    h = rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60)
    h /= np.sqrt(np.sum(h ** 2))
    h[0] = 1.0
    y = fftconvolve(x, h)[:len(x)]
    return y / np.sqrt(np.mean(y ** 2)) * np.sqrt(np.mean(x ** 2))


def test_reverberant_speech_is_rejected_with_its_rt60(librivox, tmp_path):
    from audio.clip_scores import rt60_s
    from audio.energy import frame_db
    dry = rt60_s(frame_db((librivox * 20000).astype(np.int16), HOP))
    wet = rt60_s(frame_db((room(librivox, 0.8) * 20000).astype(np.int16), HOP))
    assert dry is not None and wet is not None and dry < 0.45 < wet, (dry, wet)
    kept, rejected = segment(tmp_path, room(librivox, 0.8), "room", max_rt60_s=0.45, min_snr_db=None)
    rows = [r for r in rejected if r.reason == "reverberant"]
    assert rows and all(r.detail.startswith("rt60_s ") and "> 0.45" in r.detail for r in rows)


def test_low_bitrate_codecs_are_rejected_with_their_bandwidth(librivox, tmp_path):
    from tests.conftest import ffmpeg
    src = str(tmp_path / "clean.wav")
    sf.write(src, librivox, RATE, subtype="PCM_16")
    kept, _ = segment(tmp_path, src, "clean")
    assert kept and all(s.scores.bandwidth_hz >= 6500 for s in kept)
    for name, args in (("mp3", ["-c:a", "libmp3lame", "-b:a", "16k"]), ("opus", ["-c:a", "libopus", "-b:a", "8k"])):
        path = str(tmp_path / f"low.{name}")
        ffmpeg("-i", src, *args, path)
        kept, rejected = segment(tmp_path, path, name)
        rows = [r for r in rejected if r.key]
        assert not kept and rows and {r.reason for r in rows} == {"low_bandwidth"}, (name, rows)
        assert all(r.detail.startswith("bandwidth_hz ") and r.detail.endswith("< 6500") for r in rows)


@pytest.mark.parametrize("drop_db", [30.0, 40.0])
def test_quiet_speech_ends_in_a_clip_or_a_row_and_clips_do_not_overlap(librivox, tmp_path, drop_db):
    from audio.decoded import decode_to_scratch
    from audio.vad import on_grid, speech_mask
    x = np.concatenate([librivox, np.roll(librivox, RATE * 3) * 10 ** (-drop_db / 20)])
    path = str(tmp_path / "quiet.wav")
    sf.write(path, x, RATE, subtype="PCM_16")
    kept, rejected = segment(tmp_path, path, "quiet")
    with decode_to_scratch(path, 22050, vad=True) as d:
        speech = speech_mask(on_grid(d.speech_probs, len(d.db), d.hop_s))
        hop_s = d.hop_s
    covered = np.zeros(len(speech), bool)
    for s in kept:
        covered[int(round(s.start_s / hop_s)):int(round(s.end_s / hop_s))] = True
    for r in rejected:
        if r.key:
            a = int(r.key.rsplit("_", 1)[1]) / 1000
            covered[int(round(a / hop_s)):int(round((a + r.duration_s) / hop_s))] = True
    quiet_half = speech.copy()
    quiet_half[:int(len(librivox) / RATE / hop_s)] = False
    assert np.count_nonzero(quiet_half) * hop_s > 5  # the VAD hears the quiet speaker (7 s of 36 at -40 dB)
    # left over: VAD frames inside the pauses cut between clips (0.55 s of 60 s here; 10-30 s before local levels)
    assert np.count_nonzero(speech & ~covered) * hop_s < 1.0, np.count_nonzero(speech & ~covered) * hop_s
    for a, b in zip(kept, kept[1:]):
        assert b.start_s >= a.end_s, (a.start_s, a.end_s, b.start_s, b.end_s)
