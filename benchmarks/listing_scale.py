"""Listing at scale: a sources file of a million lines, a feed of 100,000 episodes, and how true the
progress total is.

    python -m benchmarks.listing_scale [--lines 1000000] [--episodes 100000] [--skip listing,feed,estimate]
                                       [--kind direct|auto] [--repo PATH]

listing   a sources file (CSV, ``kind`` column ``--kind``: ``direct`` or ``auto``, which sends every
          link through the listing pipeline and yt-dlp's site check) of ``--lines`` links is read
          and listed into a plan (the build's
          first step: ``read_sources`` and the listing pipeline on the DirectRunner, waves cut and
          saved), in a fresh process; prints wall and CPU seconds of the process tree, its peak RSS
          and the number of waves. A baseline of a tenth of the lines runs in the same command, so
          the ratio shows how time and memory grow with the lines.
feed      a generated feed of ``--episodes`` episodes, served gzip-encoded on 127.0.0.1, listed by
          ``expand_source`` in a fresh process: wall and CPU seconds, peak RSS, episodes listed.
estimate  the progress total (``run.waves.estimated_s``) against what ffmpeg decodes, for local
          WAV/FLAC/Ogg/MP3 files and for links stated in a feed with their sizes: the ratio.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import scratch_dir

REPO = Path(__file__).resolve().parent.parent


def _child(code: str, *args: str, repo: Path = REPO) -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON (with its own peak RSS). Adds
    wall and CPU seconds of its process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=repo, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {**result, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


PEAK = ('import resource; print(json.dumps({**result, "peak_rss_mb": round(max(resource.getrusage(w).ru_maxrss '
        'for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024)}))')


LIST = r"""
import json, sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from acquisition.sources_file import read_sources
from corpus.layout import Layout
from pipelines.options import parse_args
from run import driver
settings, beam_args = parse_args(["--sources", sys.argv[1], "--output", sys.argv[2]])
parsed = read_sources(settings.sources)
make = lambda: beam.Pipeline(options=PipelineOptions(beam_args))
if hasattr(parsed, "iter_sources"):
    plan = driver._make_plan(Layout(settings.output), "bench", parsed.iter_sources(), parsed.count, parsed.bad_lines,
                             set(), settings, make)
    n = parsed.count
else:  # an older checkout: sources as a list
    plan = driver._make_plan(Layout(settings.output), "bench", parsed.sources, parsed.bad_lines, set(), settings, make)
    n = len(parsed.sources)
items = sum(plan.sizes) if hasattr(plan, "sizes") else sum(len(w) for w in plan.waves)  # older plans held items
result = {"lines": n, "items": items, "waves": len(plan.tags)}
""" + PEAK


def listing(tmp: Path, lines: int, repo: Path = REPO, kind: str = "direct") -> dict:
    sources = tmp / f"sources-{lines}-{kind}.csv"
    with open(sources, "w") as f:
        f.write("uri,kind\n")
        for i in range(lines):
            f.write(f"https://cdn.example/show{i % 97}/episode-{i}.mp3,{kind}\n")
    return _child(LIST, str(sources), str(tmp / f"out-{lines}-{kind}-{abs(hash(str(repo)))}"), repo=repo)


FEED = r"""
import json, sys
from acquisition.expand import expand_source
from acquisition.fetch import AcquireConfig
from schemas.records import Source
url = sys.argv[1]
items = expand_source(Source(url, "bench", origin="s.txt:1"),
                      AcquireConfig(staging_dir=sys.argv[2], allow_private_networks="127.0.0.0/8"))
result = {"episodes": len({s.source_id for s in items})}
""" + PEAK


def feed(tmp: Path, episodes: int) -> dict:
    from tests.conftest import Route, ScriptedServer, rss
    server = ScriptedServer()
    try:
        body = rss([(f"Ep {i}", f"g{i}", "Mon, 01 Jan 2024 10:00:00 GMT", f"{server.url}/e{i}.mp3", None)
                    for i in range(episodes)])
        url = server.add("/feed", Route(gzip.compress(body, 1), headers={
            "Content-Type": "application/rss+xml", "Content-Encoding": "gzip"}))
        return {"feed_mb": round(len(body) / 2 ** 20, 1), **_child(FEED, url, str(tmp / "staging"))}
    finally:
        server.close()


def _decoded_s(path: str) -> float:
    from audio.ffmpeg import ffmpeg_binary
    raw = subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-i", path, "-ac", "1", "-ar", "16000",
                          "-f", "s16le", "-"], capture_output=True, check=True).stdout
    return len(raw) / 32000


def estimate(tmp: Path) -> dict:
    from audio.ffmpeg import ffmpeg_binary
    from audio.synth import SENTENCES, build_recording
    from run import waves
    from schemas.records import Source
    base = tmp / "base.wav"
    build_recording(SENTENCES[:8], [0.4] * 7, seed=3).write(str(base))
    encodings = {"wav44k_stereo.wav": ["-ac", "2", "-ar", "44100"], "wav16k.wav": ["-ar", "16000"],
                 "flac48k.flac": ["-ar", "48000"], "ogg.ogg": ["-c:a", "libvorbis"],
                 "mp3_128k.mp3": ["-b:a", "128k"], "mp3_64k.mp3": ["-b:a", "64k", "-ac", "1"]}
    out = {}
    for name, args in encodings.items():
        path = str(tmp / name)
        subprocess.run([ffmpeg_binary(), "-nostdin", "-y", "-loglevel", "error", "-stream_loop", "9", "-i", str(base),
                        *args, path], check=True)
        truth = _decoded_s(path)
        local = waves.estimated_s(Source(f"file://{path}", "x", origin="s:1"))
        link = waves.estimated_s(Source(f"https://cdn.example/{name}", "y", origin="s:1",
                                        size_bytes=os.path.getsize(path)))  # a feed that states the size
        old = os.path.getsize(path) / 16000  # the estimate before: size at 16 kB/s, whatever the format
        out[name] = {"truth_s": round(truth, 1), "local_ratio": round(local / truth, 3),
                     "link_ratio": round(link / truth, 3), "size_at_16kBps_ratio": round(old / truth, 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--episodes", type=int, default=100_000)
    ap.add_argument("--skip", default="")
    ap.add_argument("--kind", default="direct", choices=("direct", "auto"))
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose listing is measured (an older one "
                                                             "for a before/after comparison)")
    a = ap.parse_args()
    skip = set(a.skip.split(","))
    with scratch_dir("listing-scale-") as tmp:
        tmp = Path(tmp)
        if "listing" not in skip:
            base = listing(tmp, max(1, a.lines // 10), a.repo, a.kind)
            print("listing baseline", json.dumps(base), flush=True)
            full = listing(tmp, a.lines, a.repo, a.kind)
            print("listing", json.dumps(full), flush=True)
            print("listing ratio (full / baseline): wall %.1f, cpu %.1f, peak RSS %.2f, lines %.0f" % (
                full["wall_s"] / base["wall_s"], full["cpu_s"] / base["cpu_s"],
                full["peak_rss_mb"] / base["peak_rss_mb"], full["lines"] / base["lines"]), flush=True)
        if "feed" not in skip:
            print("feed", json.dumps(feed(tmp, a.episodes)), flush=True)
        if "estimate" not in skip:
            for name, r in estimate(tmp).items():
                print("estimate", name, json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
