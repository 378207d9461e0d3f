"""Progress lines while a run works: sources done, hours decoded, clips kept and rejected.

Each worker process keeps its own counters and prints a line to stderr at most every
``interval_s`` seconds (with the process id when several workers run). Beam metrics carry the same
counts for runners with a UI. A Dask worker also sends its counters to the scheduler as events
(``TOPIC``; after every decoded source, else at most once a second), from which the driver's live
progress adds up the hours decoded across the cluster (``run.live_progress.WorkerCounts``).
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time

TOPIC = "speechmill-progress"  # the Dask event topic a worker's counters go to
SHARE_S = 1.0
_UNSET = object()
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
        self._worker = _UNSET  # the Dask worker of this process, looked up on first use
        self._shared = 0.0

    def add(self, **deltas) -> None:
        with self._lock:
            for k, v in deltas.items():
                self.counts[k] += v
                self._metrics[k].inc(int(round(v)))
            now = time.monotonic()
            if now - self._last >= self.interval_s and not self.quiet:
                self._last = now
                self.emit()
            self._share(now, "audio_s" in deltas)

    def _share(self, now: float, decoded: bool) -> None:
        """On a Dask worker, send the counters to the scheduler for the driver's progress."""
        if self._worker is _UNSET:
            self._worker = _dask_worker()
        if self._worker is None or not (decoded or now - self._shared >= SHARE_S):
            return
        self._shared = now
        try:
            self._worker.log_event(TOPIC, {"process": f"{socket.gethostname()}:{os.getpid()}",
                                           "counts": dict(self.counts)})
        except Exception:  # progress never fails the work (a closing worker, a lost scheduler)
            pass

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


def _dask_worker():
    """The Dask worker this process runs tasks for, or None (not on Dask, or not inside a task)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker
    try:
        return get_worker()
    except ValueError:
        return None


_progress = None


def progress() -> Progress:
    """The process-wide progress counters."""
    global _progress
    if _progress is None:
        _progress = Progress(float(os.environ.get("SPEECHMILL_PROGRESS_S", "10")))
    return _progress
