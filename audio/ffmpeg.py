"""Decode with ffmpeg: any accepted container in, raw 16-bit mono PCM out, with hard bounds.

One ffmpeg process per source writes straight into a file descriptor we hand it (an unlinked
scratch file, see ``audio.decoded``), so memory stays flat however long the input is and nothing
is left on disk if the worker dies. The input is never probed: its container is named from its
first bytes (``audio.sniff``) and passed with ``-f``, and ffmpeg may open only that one local
file (``file`` protocol only), so a downloaded playlist cannot make it fetch anything else.

The decode itself is bounded: by wall-clock time, by decoded duration (``-t``) and by bytes of
output (``-fs``), so a small file that decodes to days of silence costs at most the limit. ffmpeg
is started so that it dies with the worker thread that started it (Linux ``PR_SET_PDEATHSIG``,
through util-linux's ``setpriv``).
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

from audio.sniff import HEAD_BYTES, container_of, describe
from schemas.errors import SpeechmillError

_ENV_VAR = "SPEECHMILL_FFMPEG"


class DecodeError(SpeechmillError):
    """ffmpeg could not turn the input into audio; ``reason`` is a short machine-readable tag."""

    reason = "decode_failed"
    tagged = True

    def __init__(self, reason: str, detail: str):
        super().__init__(detail, reason)


@dataclass(frozen=True)
class DecodeLimits:
    timeout_s: float = 3600.0
    max_duration_s: Optional[float] = None  # stop decoding past this many seconds of audio
    max_bytes: Optional[int] = None  # stop writing past this many bytes of PCM


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


def die_with_parent_prefix() -> list:
    """A command prefix that makes the child get SIGKILL when the thread that started it dies.

    util-linux's ``setpriv --pdeathsig`` sets it and then execs the command. A ``preexec_fn`` would
    do the same, but forces a plain ``fork()`` of a process full of threads (gRPC's, in Beam's
    workers), whose fork handlers can abort the child before it ever runs ffmpeg.
    """
    if not sys.platform.startswith("linux"):
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


_GUARD = die_with_parent_prefix()


def sniff_container(path: str) -> str:
    """The demuxer for ``path`` from its first bytes; raises ``DecodeError`` for anything else."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    fmt = container_of(head, os.path.getsize(path))
    if fmt is None:
        raise DecodeError("unknown_format", describe(head))
    return fmt


def decode_command(path: str, sample_rate: int, demuxer: str, out: str, limits: DecodeLimits = DecodeLimits(),
                   binary: Optional[str] = None) -> list:
    # ffmpeg's default resampler, not libsoxr: soxr inside ffmpeg gives different samples on every
    # run, and the same input must give byte-identical shards.
    cmd = [binary or ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error",
           "-protocol_whitelist", "file", "-f", demuxer, "-i", "file:" + os.path.abspath(path),
           "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(int(sample_rate))]
    if limits.max_duration_s:
        cmd += ["-t", f"{limits.max_duration_s + 1.0:.3f}"]
    if limits.max_bytes:
        cmd += ["-fs", str(int(limits.max_bytes))]
    return cmd + ["-f", "s16le", "-acodec", "pcm_s16le", "-y", out]


_READABLE = (
    ("matches no streams", "no_audio_stream", "the file has no audio stream"),
    ("does not contain any stream", "no_audio_stream", "the file contains no streams"),
    ("no space left on device", "scratch_full", "the scratch disk is full"),
    ("no such file", "not_found", "the file disappeared before it was decoded"),
    ("invalid data found", "undecodable", "ffmpeg found invalid data where it expected {fmt} audio"),
    ("could not find codec", "undecodable", "the file's codec is not supported"),
    ("moov atom not found", "undecodable", "the MP4/M4A file is incomplete (no moov atom)"),
    ("invalid argument", "undecodable", "ffmpeg could not read the file as {fmt}"),
    ("failed to read", "undecodable", "ffmpeg could not read the file as {fmt}"),
    ("header", "undecodable", "the {fmt} header is damaged"),
    ("end of file", "undecodable", "the {fmt} file ends early"),
)


def classify_error(stderr: str, fmt: str = "media", rc: int = 1):
    """(reason, readable detail) for a failed decode."""
    low = stderr.lower()
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    for marker, reason, text in _READABLE:
        if marker in low:
            return reason, text.format(fmt=fmt)
    if rc < 0:
        return "decode_failed", f"ffmpeg was killed by signal {-rc}"
    return "decode_failed", f"ffmpeg failed (exit {rc})" + (f": {last[:300]}" if last else " without a message")


def decode_into(path: str, out_fd: int, sample_rate: int, limits: DecodeLimits = DecodeLimits()) -> int:
    """Decode ``path`` to raw mono int16 little-endian at ``sample_rate`` into ``out_fd``.

    Returns the number of samples. Raises ``DecodeError`` if the container is not accepted, ffmpeg
    fails, produces no audio, or runs past a limit (``decode_timeout``, ``too_long``).
    """
    if not os.path.isfile(path):
        raise DecodeError("not_found", f"no such file: {path}")
    fmt = sniff_container(path)
    cmd = decode_command(path, sample_rate, fmt, f"pipe:{out_fd}", limits)
    with tempfile.TemporaryFile() as err:
        try:
            rc = subprocess.run(_GUARD + cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                pass_fds=(out_fd,), timeout=limits.timeout_s).returncode
        except subprocess.TimeoutExpired:
            raise DecodeError("decode_timeout", f"decoding took longer than --decode_timeout_s "
                              f"{limits.timeout_s:g} s") from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DecodeError("scratch_full", "the scratch disk is full") from None
            raise
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - 4096))
        message = err.read().decode("utf-8", "replace").strip()
    n_bytes = os.fstat(out_fd).st_size
    if rc != 0:
        reason, detail = classify_error(message, fmt, rc)
        raise DecodeError(reason, detail)
    if limits.max_bytes and n_bytes >= limits.max_bytes:
        raise DecodeError("too_long", f"decodes to more than {limits.max_bytes / 2 ** 30:.1f} GiB of "
                          f"scratch ({limits.max_bytes / 2 / sample_rate / 3600:.1f} h at {sample_rate} Hz); "
                          f"over --max_scratch_gb")
    n = n_bytes // 2
    if limits.max_duration_s and n / sample_rate > limits.max_duration_s:
        raise DecodeError("too_long", f"more than {limits.max_duration_s:g} s of audio, over "
                          f"--max_duration_s {limits.max_duration_s:g} (decoding stopped at the limit)")
    if n == 0:
        raise DecodeError("no_audio", "decoded zero samples")
    return n


def decode_to_file(path: str, out_path: str, sample_rate: int, timeout_s: float = 3600.0,
                   limits: Optional[DecodeLimits] = None) -> int:
    """``decode_into`` a named file (replaced), for tools and tests."""
    limits = limits or DecodeLimits(timeout_s=timeout_s)
    fd = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return decode_into(path, fd, sample_rate, limits)
    finally:
        os.close(fd)
