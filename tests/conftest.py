"""Shared fixtures: a tiny CTC model, synthesised speech with known sentence times, a local HTTP server."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio.synth import SENTENCES, build_recording

REPO = Path(__file__).resolve().parent.parent
SHARED_SPEECH = REPO.parent / "shared" / "data" / "real_speech"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from asr.tiny import build_tiny_model
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_w2v2")))


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """Two espeak recordings with known sentence spans (a normal and a 35 dB quieter one)."""
    d = tmp_path_factory.mktemp("speech")
    a = build_recording(SENTENCES[:6], [0.8, 0.3, 1.2, 0.25, 1.0], seed=1)
    # a long stretch with only short pauses (forces cuts at the quietest point), then a long pause
    b = build_recording(SENTENCES[4:12], [0.25, 0.2, 0.3, 0.2, 0.25, 1.5, 0.9], seed=2,
                        gain_db=-35.0, noise_db=-60.0, voices=["en-us", "en-gb"])
    return {"a": (a, a.write(str(d / "a.wav"))), "b": (b, b.write(str(d / "b.wav")))}


def ffmpeg(*args):
    from audio.ffmpeg import ffmpeg_binary
    subprocess.run([ffmpeg_binary(), "-nostdin", "-y", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory, speech):
    """Files for every way a source can be bad, plus a stereo 48 kHz MP3 that must work."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    (d / "corrupt.flac").write_bytes(b"fLaC" + rng.bytes(20000))
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.wav").write_text("this is a text file, not audio\n" * 40)
    sf.write(str(d / "silence.wav"), np.zeros(22050 * 8, dtype=np.float32), 22050, subtype="PCM_16")
    ffmpeg("-i", speech["a"][1], "-ac", "2", "-ar", "48000", str(d / "stereo48k.mp3"))
    return d


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def http_root(tmp_path):
    """A directory served on 127.0.0.1; yields (root dir, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def permissive(model: str) -> list:
    """Options that keep every clip the random tiny model transcribes (its text is gibberish)."""
    return ["--asr_model", model, "--min_confidence", "0", "--min_chars_per_s", "0",
            "--max_chars_per_s", "1000"]


def have_shared_speech() -> bool:
    return (SHARED_SPEECH / "jfk.flac").exists()


def copy_shared(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copy(SHARED_SPEECH / name, target)
    return target


def file_digests(root: Path) -> dict:
    import hashlib
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


os.environ.setdefault("SPEECHMILL_PROGRESS_S", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
