"""The driver's view of a run as it goes: hours done of hours known, clips transcribed in the wave
in flight, clips kept and rejected, the rate and the time left. Clips are kept (given speaker ids,
deduplicated, written to shards) when their wave is published, so during a wave the transcribed
count is what moves.

On a terminal it is one bar redrawn in place; otherwise (CI, Dataflow logs, a file) a plain line
every ``interval_s``. Hours known are the plan's estimates (stated durations, file sizes); hours
done are those of the published waves, plus what is decoded of the wave in flight: by this process
when the runner works in-process, by the workers on the Dask runner (the counters they send the
scheduler, ``WorkerCounts``); other runners' workers print their own lines.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, TextIO

from transforms.progress import TOPIC, progress

MIN_INTERVAL_S = 0.2  # the shortest time between two lines of this report
_LOCK = threading.Lock()
ACTIVE: Optional["LiveProgress"] = None  # the bar on the terminal, if one is drawn


@dataclass
class Tally:
    hours: float = 0.0
    kept: int = 0
    rejected: int = 0


@dataclass
class Snapshot:
    """What one progress report shows."""
    hours_done: float
    hours_known: float
    kept: int
    rejected: int
    wave: int
    waves: int
    elapsed_s: float
    transcribed: int = 0  # clips transcribed in the wave in flight (its kept clips are counted when it is published)

    @property
    def fraction(self) -> float:
        return min(1.0, self.hours_done / self.hours_known) if self.hours_known > 0 else 0.0

    @property
    def realtime(self) -> Optional[float]:
        return self.hours_done * 3600 / self.elapsed_s if self.elapsed_s > 0 and self.hours_done > 0 else None

    @property
    def left_s(self) -> Optional[float]:
        rate = self.realtime
        if rate is None or self.hours_known <= self.hours_done:
            return None
        return (self.hours_known - self.hours_done) * 3600 / rate


def duration(s: Optional[float]) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s % 60:02d}s"


def bar_line(snap: Snapshot, width: int = 24) -> str:
    filled = int(round(snap.fraction * width))
    rate = f"{snap.realtime:.0f}x realtime" if snap.realtime else "rate ?"
    return (f"[speechmill] [{'#' * filled}{'.' * (width - filled)}] {snap.hours_done:.2f}/{snap.hours_known:.2f} h "
            f"({snap.fraction:.0%}) | wave {snap.wave}/{snap.waves}: {snap.transcribed:,} transcribed "
            f"| kept {snap.kept:,} rejected {snap.rejected:,} "
            f"| {rate} | {duration(snap.left_s)} left")


def plain_line(snap: Snapshot) -> str:
    rate = f"{snap.realtime:.0f}x realtime" if snap.realtime else "rate not known yet"
    return (f"[speechmill] progress: {snap.hours_done:.2f} of {snap.hours_known:.2f} h ({snap.fraction:.0%}), "
            f"wave {snap.wave} of {snap.waves} ({snap.transcribed:,} clips transcribed in it), {snap.kept:,} clips kept "
            f"(counted as waves are published), {snap.rejected:,} rejected, {rate}, "
            f"about {duration(snap.left_s)} left")


class WorkerCounts:
    """The counters Dask workers send the scheduler (``transforms.progress``): the latest of each
    worker process, added up. Called with no arguments; empty when the scheduler cannot be asked."""

    def __init__(self, client):
        self.client = client

    @classmethod
    def connect(cls, cluster: Dict[str, str]) -> Optional["WorkerCounts"]:
        """A client of the cluster (``{"address": …}`` or ``{"scheduler_file": …}``), or None when it cannot connect."""
        try:
            from distributed import Client
            return cls(Client(**cluster, timeout=30, set_as_default=False))
        except Exception:  # no progress from the workers is no reason to stop the run
            return None

    def __call__(self) -> Dict[str, float]:
        try:
            events = self.client.get_events(TOPIC)
        except Exception:
            return {}
        latest = {}
        for _, msg in events:  # oldest first
            latest[msg["process"]] = msg["counts"]
        total: Dict[str, float] = {}
        for counts in latest.values():
            for k, v in counts.items():
                total[k] = total.get(k, 0.0) + v
        return total

    def close(self) -> None:
        self.client.close()


@dataclass
class LiveProgress:
    """Reports a run's progress from a background thread until ``stop``."""
    hours_known: float
    waves: int
    stream: TextIO
    tty: bool
    interval_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    remote: Optional[Callable[[], Dict[str, float]]] = None  # workers' counters (``WorkerCounts``), if any
    committed: Tally = field(default_factory=Tally)
    wave: int = 0
    _start: float = 0.0
    _wave_base: dict = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def start(self) -> "LiveProgress":
        global ACTIVE
        ACTIVE = self if self.tty else None
        self._start = self.clock()
        if self.tty:
            progress().quiet = True  # the bar shows this process's counts
        self._thread = threading.Thread(target=self._loop, daemon=True, name="live-progress")
        self._thread.start()
        return self

    def counts(self) -> Dict[str, float]:
        """This process's counters plus the workers' (on the Dask runner)."""
        counts = dict(progress().counts)
        for k, v in (self.remote() if self.remote else {}).items():
            counts[k] = counts.get(k, 0.0) + v
        return counts

    def begin_wave(self, i: int) -> None:
        self.wave = i + 1
        self._wave_base = self.counts()

    def end_wave(self, hours: float, kept: int, rejected: int) -> None:
        self.committed.hours += hours
        self.committed.kept += kept
        self.committed.rejected += rejected
        self._wave_base = self.counts()

    def snapshot(self) -> Snapshot:
        counts, base = self.counts(), self._wave_base
        delta = ({k: counts.get(k, 0.0) - base.get(k, 0.0) for k in ("audio_s", "kept", "rejected", "transcribed")}
                 if base else {})
        return Snapshot(hours_done=self.committed.hours + delta.get("audio_s", 0.0) / 3600,
                        hours_known=max(self.hours_known, self.committed.hours),
                        kept=self.committed.kept + int(delta.get("kept", 0)),
                        rejected=self.committed.rejected + int(delta.get("rejected", 0)),
                        wave=max(self.wave, 1), waves=self.waves, elapsed_s=self.clock() - self._start,
                        transcribed=int(delta.get("transcribed", 0)))

    def render(self) -> None:
        snap = self.snapshot()
        with _LOCK:
            if self.tty:
                self.stream.write("\r\033[K" + bar_line(snap))
            else:
                self.stream.write(plain_line(snap) + "\n")
            self.stream.flush()

    def print_above(self, text: str) -> None:
        """A log line on a terminal: printed above the bar, which is drawn again below it (not once stopped)."""
        with _LOCK:
            bar = "" if self._stop.is_set() else bar_line(self.snapshot())
            self.stream.write("\r\033[K" + text.rstrip("\n") + "\n" + bar)
            self.stream.flush()

    def _loop(self) -> None:
        # at least MIN_INTERVAL_S apart: SPEECHMILL_PROGRESS_S=0 (every worker count printed) must not spin here
        period = max(MIN_INTERVAL_S, self.interval_s if not self.tty else min(self.interval_s, 1.0))
        while not self._stop.wait(period):
            try:
                self.render()
            except (OSError, ValueError):  # the stream went away: stop reporting, not the run
                return

    def stop(self) -> None:
        global ACTIVE
        ACTIVE = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.tty:
            with _LOCK:
                self.stream.write("\r\033[K")
                self.stream.flush()
        progress().quiet = False
        close = getattr(self.remote, "close", None)
        if close is not None:
            close()


def write_line(stream: TextIO, text: str) -> None:
    """One whole line on ``stream``, from any thread: above the bar when one is drawn there, so that no
    message is ever glued to the bar's line."""
    bar = ACTIVE
    if bar is not None and bar.stream is stream:
        bar.print_above(text)
        return
    with _LOCK:
        stream.write(text.rstrip("\n") + "\n")
        stream.flush()
