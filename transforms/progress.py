"""Progress lines while a run works: sources done, hours decoded, clips kept and rejected.

Each worker process keeps its own counters and prints a line to stderr at most every
``interval_s`` seconds (with the process id when several workers run). Beam metrics carry the same
counts for runners with a UI.
"""
from __future__ import annotations

import os
import sys
import threading
import time

_FIELDS = ("sources", "sources_failed", "audio_s", "segments", "transcribed", "kept", "rejected",
           "shards")


class Progress:
    def __init__(self, interval_s: float = 10.0, stream=None):
        self.interval_s = interval_s
        self.stream = stream
        self.counts = {k: 0.0 for k in _FIELDS}
        self._lock = threading.Lock()
        self._last = time.monotonic()
        from apache_beam.metrics import Metrics  # here, not at the top: printing a command's help needs no Beam
        self._metrics = {k: Metrics.counter("speechmill", k) for k in _FIELDS}
        self.quiet = False  # the driver's live progress shows these counts itself

    def add(self, **deltas) -> None:
        with self._lock:
            for k, v in deltas.items():
                self.counts[k] += v
                self._metrics[k].inc(int(round(v)))
            now = time.monotonic()
            if now - self._last >= self.interval_s and not self.quiet:
                self._last = now
                self.emit()

    def reset(self) -> None:
        """Start counting afresh: a run in a process that ran one before must not show that run's counts."""
        with self._lock:
            self.counts = {k: 0.0 for k in _FIELDS}
            self._last = time.monotonic()

    def line(self) -> str:
        c = self.counts
        return (f"sources {int(c['sources'])} ok, {int(c['sources_failed'])} failed | "
                f"{c['audio_s'] / 3600:.2f} h decoded | {int(c['segments'])} segments, "
                f"{int(c['transcribed'])} transcribed, {int(c['kept'])} kept, "
                f"{int(c['rejected'])} rejected | {int(c['shards'])} shards")

    def emit(self) -> None:
        stream = self.stream or sys.stderr
        print(f"[speechmill pid {os.getpid()}] {self.line()}", file=stream, flush=True)


_progress = None


def progress() -> Progress:
    """The process-wide progress counters."""
    global _progress
    if _progress is None:
        _progress = Progress(float(os.environ.get("SPEECHMILL_PROGRESS_S", "10")))
    return _progress
