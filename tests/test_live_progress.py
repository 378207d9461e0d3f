"""Live progress: a bar redrawn in place on a terminal, plain periodic lines everywhere else."""
from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import time

import pytest

from run.engine import cluster_of
from run.live_progress import LiveProgress, Snapshot, WorkerCounts, bar_line, plain_line
from tests.conftest import REPO, permissive
from tests.test_build_corpus import write_sources
from transforms.progress import progress


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_the_numbers_a_report_shows():
    snap = Snapshot(hours_done=1.0, hours_known=4.0, kept=1200, rejected=34, wave=2, waves=5, elapsed_s=60.0,
                    transcribed=310)
    assert snap.fraction == 0.25 and snap.realtime == 60.0 and snap.left_s == 180.0
    bar = bar_line(snap, width=20)
    assert "[#####...............]" in bar and "1.00/4.00 h (25%)" in bar and "wave 2/5: 310 transcribed" in bar
    assert "kept 1,200 rejected 34" in bar and "60x realtime" in bar and "3m00s left" in bar
    line = plain_line(snap)
    assert line.startswith("[speechmill] progress: 1.00 of 4.00 h (25%)") and "about 3m00s left" in line
    assert "wave 2 of 5 (310 clips transcribed in it), 1,200 clips kept (counted as waves are published)" in line
    unknown = Snapshot(0.0, 2.0, 0, 0, 1, 1, 0.0)
    assert unknown.realtime is None and unknown.left_s is None and "rate not known yet" in plain_line(unknown)


def test_waves_and_the_wave_in_flight_add_up():
    clock, out = Clock(), io.StringIO()
    live = LiveProgress(hours_known=2.0, waves=2, stream=out, tty=False, interval_s=3600, clock=clock).start()
    try:
        live.begin_wave(0)
        progress().add(audio_s=1800, kept=10, rejected=2, transcribed=25)  # this process decodes half an hour of the wave
        clock.t += 30
        snap = live.snapshot()
        assert (round(snap.hours_done, 3), snap.kept, snap.rejected, snap.wave, snap.transcribed) == (0.5, 10, 2, 1, 25)
        live.end_wave(hours=0.9, kept=12, rejected=3)  # the published wave's own totals replace the live counts
        live.begin_wave(1)
        snap = live.snapshot()
        assert (round(snap.hours_done, 3), snap.kept, snap.rejected, snap.wave, snap.transcribed) == (0.9, 12, 3, 2, 0)
        live.render()
    finally:
        live.stop()
    assert out.getvalue().startswith("[speechmill] progress: 0.90 of 2.00 h (45%), wave 2 of 2")


def build_command(tmp_path, tiny_model, speech) -> list:
    sources = write_sources(tmp_path / "s.txt", [speech["a"][1]])
    return [sys.executable, "-m", "pipelines.build_corpus", "--sources", sources, "--output", str(tmp_path / "out"),
            *permissive(tiny_model), "--speakers", "off"]


def on_a_terminal(command: list, env: dict) -> str:
    """What ``command`` writes to stderr when stderr is a terminal (a pseudo-terminal here)."""
    main, child = pty.openpty()
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.wait(timeout=300) == 0, seen[-2000:]
    return seen.decode(errors="replace")


def test_a_terminal_gets_a_bar_and_a_log_gets_lines(tmp_path, tiny_model, speech):
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPEECHMILL_PROGRESS_S": "0.5"}
    # stderr a pipe, as in CI or a job's log: plain lines, no control characters
    (tmp_path / "a").mkdir()
    logged = subprocess.run(build_command(tmp_path / "a", tiny_model, speech), env=env, capture_output=True, text=True,
                            timeout=300)
    assert logged.returncode == 0, logged.stderr[-2000:]
    lines = [line for line in logged.stderr.splitlines() if line.startswith("[speechmill] progress: ")]
    assert lines and "\r" not in logged.stderr and "\x1b[" not in logged.stderr
    assert re.search(r"of 0\.\d\d h \(\d+%\), wave 1 of 1", lines[-1])

    # stderr a terminal: the bar, redrawn in place, and the summaries above it
    (tmp_path / "b").mkdir()
    text = on_a_terminal(build_command(tmp_path / "b", tiny_model, speech), env)
    bars = re.findall(r"\r\x1b\[K\[speechmill\] \[[#.]{24}\] [0-9.]+/[0-9.]+ h", text)
    assert bars, text[-2000:]
    assert "wave 1 of 1" in text and "[speechmill] corpus after run" in text
    assert "[speechmill] progress: " not in text  # no periodic lines on a terminal


def test_on_dask_the_hours_the_workers_decode_reach_the_driver():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        args = ["--runner", "DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
        assert cluster_of(args) == {"address": cluster.scheduler_address} and cluster_of(args[2:]) is None
        live = LiveProgress(hours_known=2.0, waves=1, stream=io.StringIO(), tty=False, interval_s=3600, clock=Clock(),
                            remote=WorkerCounts.connect(cluster_of(args))).start()
        try:
            live.begin_wave(0)
            # two sources decoded in the worker processes, none in this one
            client.gather(client.map(lambda s: progress().add(sources=1, audio_s=s, kept=2), [1800.0, 900.0],
                                     pure=False))
            deadline = time.monotonic() + 120  # a bound for a loaded machine, not a measurement
            while live.snapshot().kept < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            snap = live.snapshot()
            assert snap.hours_done == pytest.approx(0.75) and snap.kept == 4  # summed in arrival order
            live.end_wave(0.75, 4, 0)  # the wave is published: its hours count once
            assert live.snapshot().hours_done == pytest.approx(0.75)
        finally:
            live.stop()


BAR = re.compile(r"\[speechmill\] \[[#.]{24}\] ")


def test_no_message_is_glued_to_the_bar(tmp_path, tiny_model, speech):
    """Lines printed while the bar is drawn, by worker processes (their own progress lines, every time
    they count here) and by the driver's own prints (a warning that report.html cannot be written,
    which comes while the bar is up): each starts where a line starts, and the bar is drawn after it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPEECHMILL_PROGRESS_S": "0"}
    (tmp_path / "out" / "report.html").mkdir(parents=True)  # the page cannot be written: a warning
    text = on_a_terminal(build_command(tmp_path, tiny_model, speech)
                         + ["--direct_running_mode=multi_processing", "--direct_num_workers=2"], env)
    pieces = [p.replace("\x1b[K", "") for line in text.split("\n") for p in line.split("\r")]
    bars = [p for p in pieces if BAR.search(p)]
    assert bars and "[speechmill pid " in text and "warning: report.html was not rebuilt" in text, text[-3000:]
    glued = [p for p in pieces if p.find("[speechmill", 1) >= 0 or (BAR.search(p) and not p.endswith(" left"))]
    assert not glued, glued[:5]
    assert not BAR.search(text[text.rindex("[speechmill] corpus after run"):])  # no bar left after the summary
