import numpy as np
import pytest
import soundfile as sf

from audio.decoded import decode_to_scratch
from audio.ffmpeg import DecodeError, decode_stream
from tests.conftest import ffmpeg


def test_stereo_48k_mp3_decodes_to_mono_at_the_asked_rate(bad_inputs, speech):
    rec, _ = speech["a"]
    chunks = list(decode_stream(str(bad_inputs / "stereo48k.mp3"), 16000, chunk_s=1.0))
    assert all(c.dtype == np.int16 for c in chunks)
    assert all(len(c) == 16000 for c in chunks[:-1])  # fixed-size chunks: memory does not grow
    n = sum(len(c) for c in chunks)
    assert abs(n / 16000 - rec.duration_s) < 0.1  # MP3 adds at most a frame or two of padding


def test_scratch_decode_round_trips_samples(tmp_path):
    x = (np.sin(np.arange(22050 * 3) * 0.05) * 10000).astype(np.int16)
    sf.write(str(tmp_path / "x.wav"), x, 22050, subtype="PCM_16")
    with decode_to_scratch(str(tmp_path / "x.wav"), 22050) as d:
        assert d.n_samples == len(x)
        np.testing.assert_array_equal(d.read(1000, 5000), x[1000:5000])
        assert len(d.db) == int(np.ceil(len(x) / d.hop))
        path = d.pcm_path
    import os
    assert not os.path.exists(path)  # the scratch file goes away


@pytest.mark.parametrize("name,reason", [
    ("corrupt.flac", "undecodable"), ("notes.wav", "undecodable"), ("empty.wav", "undecodable"),
])
def test_bad_files_raise_clear_errors(bad_inputs, name, reason):
    with pytest.raises(DecodeError) as e:
        list(decode_stream(str(bad_inputs / name), 16000))
    assert e.value.reason == reason and e.value.detail


def test_video_without_audio(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:d=1", str(tmp_path / "v.mp4"))
    with pytest.raises(DecodeError) as e:
        list(decode_stream(str(tmp_path / "v.mp4"), 16000))
    assert e.value.reason == "no_audio_stream"


def test_missing_file_and_timeout(tmp_path, speech):
    with pytest.raises(DecodeError, match="not_found"):
        list(decode_stream(str(tmp_path / "nope.wav"), 16000))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=600", "-c:a", "flac", str(tmp_path / "long.flac"))
    with pytest.raises(DecodeError) as e:
        list(decode_stream(str(tmp_path / "long.flac"), 16000, timeout_s=0.05))
    assert e.value.reason == "decode_timeout"
