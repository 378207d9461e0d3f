import os

import numpy as np
import pytest
import soundfile as sf

from audio.decoded import decode_to_scratch
from audio.ffmpeg import DecodeError, decode_to_file
from tests.conftest import ffmpeg


def test_stereo_48k_mp3_decodes_to_mono_at_the_asked_rate(bad_inputs, speech, tmp_path):
    rec, wav = speech["a"]
    with decode_to_scratch(str(bad_inputs / "stereo48k.mp3"), 16000, chunk_s=1.0) as d:
        n = d.n_samples
        assert os.fstat(d.scratch.fileno()).st_size == 2 * n
        assert abs(n / 16000 - rec.duration_s) < 0.1  # MP3 adds at most a frame or two of padding
        assert len(d.db) == int(np.ceil(n / d.hop))
        from_mp3 = d.read(0, n).astype(np.float64)
    with decode_to_scratch(wav, 16000) as d:
        from_wav = d.read(0, d.n_samples).astype(np.float64)
    # same speech: the MP3's level profile follows the WAV's (allowing for the encoder delay)
    lag = int(np.argmax(np.correlate(from_mp3[:32000] ** 2, from_wav[:16000] ** 2, "valid")))
    m = min(len(from_wav), len(from_mp3) - lag)
    r = np.corrcoef(np.abs(from_wav[:m]), np.abs(from_mp3[lag:lag + m]))[0, 1]
    assert r > 0.9


def test_scratch_decode_round_trips_samples_and_leaves_no_file(tmp_path):
    x = (np.sin(np.arange(22050 * 3) * 0.05) * 10000).astype(np.int16)
    sf.write(str(tmp_path / "x.wav"), x, 22050, subtype="PCM_16")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with decode_to_scratch(str(tmp_path / "x.wav"), 22050, scratch_dir=str(scratch)) as d:
        assert d.n_samples == len(x)
        np.testing.assert_array_equal(d.read(1000, 5000), x[1000:5000])
        assert len(d.db) == int(np.ceil(len(x) / d.hop))
        assert list(scratch.iterdir()) == []  # the scratch file has no name: a killed worker leaves nothing
    assert d.closed


@pytest.mark.parametrize("name,reason", [
    ("corrupt.flac", "undecodable"), ("notes.wav", "unknown_format"), ("empty.wav", "unknown_format"),
])
def test_bad_files_raise_clear_errors(bad_inputs, name, reason, tmp_path):
    with pytest.raises(DecodeError) as e:
        decode_to_file(str(bad_inputs / name), str(tmp_path / "out.pcm"), 16000)
    assert e.value.reason == reason and e.value.detail


def test_video_without_audio(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:d=1", str(tmp_path / "v.mp4"))
    with pytest.raises(DecodeError) as e:
        decode_to_file(str(tmp_path / "v.mp4"), str(tmp_path / "out.pcm"), 16000)
    assert e.value.reason == "no_audio_stream"


def test_missing_file_and_timeout(tmp_path, speech):
    with pytest.raises(DecodeError, match="not_found"):
        decode_to_file(str(tmp_path / "nope.wav"), str(tmp_path / "out.pcm"), 16000)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=600", "-c:a", "flac", str(tmp_path / "long.flac"))
    with pytest.raises(DecodeError) as e:
        decode_to_file(str(tmp_path / "long.flac"), str(tmp_path / "out.pcm"), 16000, timeout_s=0.05)
    assert e.value.reason == "decode_timeout"


def test_decoding_is_deterministic(tmp_path):
    """Same file, same samples, every time (resampling included): reruns must give identical shards."""
    src = str(tmp_path / "x.wav")  # 16 kHz stereo, upsampled: where libsoxr in ffmpeg varies run to run
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=3:c=pink:r=16000:a=0.3", "-ac", "2", src)
    outs = []
    for i in range(3):
        decode_to_file(src, str(tmp_path / f"o{i}.pcm"), 22050)
        outs.append((tmp_path / f"o{i}.pcm").read_bytes())
    assert outs[0] == outs[1] == outs[2]
