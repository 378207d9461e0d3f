"""Streaming decode with ffmpeg: any container or codec in, 16-bit mono PCM chunks out.

One ffmpeg process per source, read in fixed-size chunks, so memory stays flat however long the
input is. ffmpeg reads only the local file it is given (``file`` protocol only), never reads the
terminal, and is killed after a wall-clock limit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from typing import Iterator, Optional

import numpy as np

_ENV_VAR = "SPEECHMILL_FFMPEG"


class DecodeError(Exception):
    """ffmpeg could not turn the input into audio; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def ffmpeg_binary() -> str:
    """``$SPEECHMILL_FFMPEG``, else ``ffmpeg`` on PATH, else the binary inside ``imageio-ffmpeg``."""
    explicit = os.environ.get(_ENV_VAR)
    if explicit:
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - imageio-ffmpeg is a requirement
        raise RuntimeError("ffmpeg not found: install Debian's ffmpeg or pip install imageio-ffmpeg") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def decode_command(path: str, sample_rate: int, binary: Optional[str] = None) -> list:
    return [
        binary or ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-protocol_whitelist", "file",
        "-i", "file:" + os.path.abspath(path),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(int(sample_rate)),
        "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1",
    ]


def classify_error(stderr: str) -> str:
    s = stderr.lower()
    if "matches no streams" in s or "does not contain any stream" in s or "stream map" in s:
        return "no_audio_stream"
    if "no such file" in s:
        return "not_found"
    if "invalid data found" in s or "could not find codec" in s or "moov atom not found" in s \
            or "invalid argument" in s or "failed to read" in s or "header" in s:
        return "undecodable"
    return "decode_failed"


class _Tail(threading.Thread):
    """Drains a pipe on a thread, keeping its last ``limit`` bytes (so ffmpeg never blocks on it)."""

    def __init__(self, pipe, limit: int = 8192):
        super().__init__(daemon=True)
        self._pipe, self._limit, self.data = pipe, limit, b""

    def run(self):
        for chunk in iter(lambda: self._pipe.read(4096), b""):
            self.data = (self.data + chunk)[-self._limit:]


def decode_stream(path: str, sample_rate: int, chunk_s: float = 4.0,
                  timeout_s: float = 3600.0) -> Iterator[np.ndarray]:
    """Yield int16 mono chunks of ``chunk_s`` seconds (the last may be shorter).

    Raises ``DecodeError`` if ffmpeg fails, produces no audio, or runs past ``timeout_s``.
    """
    if not os.path.isfile(path):
        raise DecodeError("not_found", f"no such file: {path}")
    chunk_bytes = max(2, int(chunk_s * sample_rate) * 2)
    proc = subprocess.Popen(decode_command(path, sample_rate), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    tail = _Tail(proc.stderr)
    tail.start()
    timed_out = threading.Event()

    def _kill():
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout_s, _kill)
    timer.daemon = True
    timer.start()
    produced = 0
    pending = b""
    try:
        while True:
            buf = proc.stdout.read(chunk_bytes - len(pending))
            if not buf:
                break
            pending += buf
            if len(pending) >= chunk_bytes:
                produced += len(pending) // 2
                yield np.frombuffer(pending, dtype="<i2")
                pending = b""
        usable = len(pending) - (len(pending) % 2)
        if usable:
            produced += usable // 2
            yield np.frombuffer(pending[:usable], dtype="<i2")
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        tail.join(timeout=5)
        proc.stderr.close()
    err = tail.data.decode("utf-8", "replace").strip()
    if timed_out.is_set():
        raise DecodeError("decode_timeout", f"ffmpeg ran longer than {timeout_s:.0f} s")
    if rc != 0:
        raise DecodeError(classify_error(err), err.splitlines()[-1] if err else f"ffmpeg exit {rc}")
    if produced == 0:
        raise DecodeError("no_audio", err.splitlines()[-1] if err else "decoded zero samples")
