"""Decode with ffmpeg: any container or codec in, a raw 16-bit mono PCM file out.

One ffmpeg process per source writes straight to a scratch file, so memory stays flat however
long the input is. ffmpeg reads only the local file it is given (``file`` protocol only), never reads the
terminal, and is killed after a wall-clock limit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Optional


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
    # ffmpeg's default resampler, not libsoxr: soxr inside ffmpeg gives different samples on every
    # run, and the same input must give byte-identical shards.
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


def decode_to_file(path: str, out_path: str, sample_rate: int, timeout_s: float = 3600.0) -> int:
    """Decode ``path`` to raw mono int16 little-endian at ``sample_rate`` in ``out_path``.

    ffmpeg writes the file itself: no pipe between two processes taking turns on one core, and no
    samples in this process's memory. Returns the number of samples; raises ``DecodeError`` if
    ffmpeg fails, produces no audio, or runs past ``timeout_s``.
    """
    if not os.path.isfile(path):
        raise DecodeError("not_found", f"no such file: {path}")
    cmd = decode_command(path, sample_rate)[:-1] + ["-y", "file:" + os.path.abspath(out_path)]
    with tempfile.TemporaryFile() as err:
        try:
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            raise DecodeError("decode_timeout", f"ffmpeg ran longer than {timeout_s:g} s") from None
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - 4096))
        message = err.read().decode("utf-8", "replace").strip()
    last = message.splitlines()[-1] if message else ""
    if rc != 0:
        raise DecodeError(classify_error(message), last or f"ffmpeg exit {rc}")
    n = os.path.getsize(out_path) // 2 if os.path.exists(out_path) else 0
    if n == 0:
        raise DecodeError("no_audio", last or "decoded zero samples")
    return n
