"""The rerun contract: which failures are final and which are tried again on the next run.

A source's outcome is final when it says something about the content itself: the file is not
audio, holds no audio stream, is empty, is silence, or holds no speech (music or noise alone). Everything else depends on the world or on
settings — a file that is not there yet, a network policy, a timeout, a full disk, a size or
duration limit, a feed that was briefly broken — and the next run tries the source again. A run
with ``--retry_failed`` tries every failed source again, final or not.

Source statuses and stage names are ``str`` enums: they compare, hash and serialise (JSON,
Parquet, f-strings, ``str()``) as their plain values, so the tables on disk hold the same bytes as
plain strings would.
"""
from __future__ import annotations

from enum import Enum


class _Name(str, Enum):
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Status(_Name):
    """What became of a source in a run (the ``status`` column of the sources table)."""

    OK = "ok"
    FAILED = "failed"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    # a folder, feed or playlist that failed before and is now listed: its old failure is history. The
    # row is no source's current outcome (``corpus.layout.latest_rows`` leaves it out), as a folder
    # listed at the first try has no row at all
    LISTED = "listed"


class Stage(_Name):
    """The stage that rejected a source or a clip (the ``stage`` column of the rejected table)."""

    SOURCES = "sources"        # the sources file itself
    EXPAND = "expand"
    ACQUIRE = "acquire"
    SEGMENT = "segment"
    QUALITY = "quality"
    TRANSCRIBE = "transcribe"
    DEDUP = "dedup"


FINAL_REASONS = frozenset({
    "is_directory",      # a folder where a media file was expected
    "empty_file",        # 0 bytes
    "undecodable",       # ffmpeg cannot read it as media
    "unknown_format",    # the bytes are not an accepted audio/video container
    "no_audio_stream",   # a container without audio
    "no_audio",          # decoded to zero samples
    "silent",            # decoded to silence
    "no_dynamics",       # decoded to a steady tone or hum: no speech
    "no_speech",         # the voice detector found no speech in it (music, noise): a verdict on the content
    "bad_source_line",   # the sources file line itself is unusable (a fixed line is a new line)
})


# rejections of clips by their audio, before transcription (transforms.quality.judge_audio)
# rejections of clips that repeat a kept clip's audio or transcript (dedup.decide)
DUPLICATE_REASONS = ("duplicate_audio", "duplicate_text")

AUDIO_GATE_REASONS = ("not_speech", "low_bandwidth", "clipped", "noisy", "reverberant", "low_dnsmos")


def is_final(reason: str) -> bool:
    """True when a source failed or was rejected for a reason a rerun cannot change."""
    return reason in FINAL_REASONS


def retryable(reason: str) -> bool:
    return not is_final(reason)


# clip-level rejections made before any clip's audio is written (pieces of a recording the segmenter
# does not cut out as clips): ``--keep_rejected_audio`` has no audio of them to keep
NO_CLIP_AUDIO = frozenset({(Stage.SEGMENT.value, "too_short"), (Stage.SEGMENT.value, "too_quiet")})
