"""Download throughput with parallel workers, and how a big feed fans out across them.

    python -m benchmarks.download_speed [--items 40] [--mb 4] [--throttle_mb_s 8] [--workers 1 2 4]
                                        [--fanout_items 500]

A local HTTP server (127.0.0.1) serves a podcast feed whose episodes are ``--mb`` MB each, sent at
``--throttle_mb_s`` per connection (a stand-in for a remote host's per-connection speed). The real
expand and acquire stages run on the DirectRunner with 1, 2, 4 … worker processes; the table gives
MB/s and the speed-up over one worker. Then a ``--fanout_items`` feed is expanded and its items are
counted per worker process. Defaults take about a minute.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import http.server
import json
import os
import shutil
import sys
import threading
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from acquisition.config import AcquireConfig
from acquisition.fetch import acquire
from benchmarks import scratch_dir
from run.console import FilteredStderr, beam_quiet_args, quiet_libraries
from schemas.keys import source_id_for_uri
from schemas.records import AudioFile, Source
from transforms.expand import Expand


def feed_xml(base: str, n: int) -> bytes:
    items = "".join(
        f"<item><title>E{i}</title><guid>g{i}</guid><pubDate>Mon, 01 Jan 2024 00:{i // 60 % 60:02d}:{i % 60:02d} GMT"
        f'</pubDate><enclosure url="{base}/ep/{i}.mp3" type="audio/mpeg" length="1"/></item>' for i in range(n))
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Bench</title>{items}</channel></rss>'.encode()


def start_server(size: int, throttle: float):
    payload = os.urandom(size)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path.startswith("/feed"):
                body = feed_xml(f"http://127.0.0.1:{self.server.server_address[1]}", int(self.path.split("/")[-1]))
                ctype = "application/rss+xml"
            else:
                body, ctype = payload, "audio/mpeg"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            step = 256 * 1024
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                if throttle and ctype == "audio/mpeg":
                    time.sleep(step / (throttle * 1e6))

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


class _Fetch(beam.DoFn):
    def __init__(self, cfg: AcquireConfig, report_dir: str):
        self.cfg, self.report_dir = cfg, report_dir

    def process(self, item: Source):
        got = acquire(item, self.cfg)
        size = got.size_bytes if isinstance(got, AudioFile) else 0
        with open(os.path.join(self.report_dir, f"{os.getpid()}-{item.source_id}.json"), "w") as f:
            json.dump({"pid": os.getpid(), "bytes": size, "ok": isinstance(got, AudioFile)}, f)
        yield size


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def run_once(feed_url: str, workers: int, tmp: str, max_items: int) -> dict:
    staging, reports = os.path.join(tmp, "staging"), os.path.join(tmp, "reports")
    for d in (staging, reports):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    cfg = AcquireConfig(staging_dir=staging, allow_private_networks="127.0.0.0/8", max_items_per_source=max_items)
    opts = PipelineOptions(beam_quiet_args([f"--direct_num_workers={workers}"] +
                                           (["--direct_running_mode=multi_processing"] if workers > 1 else [])))
    src = Source(feed_url, source_id_for_uri(feed_url), origin="bench:1")
    t0 = time.perf_counter()
    with FilteredStderr() as err:  # worker processes log their start-up before they read the log level
        try:
            with beam.Pipeline(options=opts) as p:
                expanded = p | beam.Create([src]) | Expand(cfg)
                _ = expanded["items"] | beam.ParDo(_Fetch(cfg, reports))
        except BaseException:
            err.dump_hidden()
            raise
    wall = time.perf_counter() - t0
    rows = [read_json(os.path.join(reports, f)) for f in os.listdir(reports)]
    return {"wall_s": wall, "bytes": sum(r["bytes"] for r in rows), "items": len(rows),
            "ok": sum(r["ok"] for r in rows), "per_pid": collections.Counter(r["pid"] for r in rows)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.download_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=40, help="episodes in the throughput feed (default 40)")
    p.add_argument("--mb", type=float, default=4.0, help="size of each episode in MB (default 4)")
    p.add_argument("--throttle_mb_s", type=float, default=8.0, help="per-connection speed, MB/s (0: unthrottled)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts to compare")
    p.add_argument("--fanout_items", type=int, default=500, help="items in the fan-out feed (default 500)")
    p.add_argument("--fanout_workers", type=int, default=4, help="workers for the fan-out run (default 4)")
    args = p.parse_args(argv)
    quiet_libraries()
    with scratch_dir("speechmill-dl-") as tmp:
        rows = throughput(args, tmp)
        fanout = fan_out(args, tmp)
    print(f"\ndownloads: {args.items} x {args.mb:g} MB, {args.throttle_mb_s:g} MB/s per connection "
          f"(127.0.0.1), DirectRunner")
    print(f"{'workers':>8s} {'wall s':>8s} {'MB/s':>8s} {'speed-up':>9s}")
    base_rate = rows[0][1]["bytes"] / rows[0][1]["wall_s"]
    for w, r in rows:
        rate = r["bytes"] / r["wall_s"]
        speedup = f"{rate / base_rate:8.2f}x" if base_rate else f"{'n/a':>9s}"
        print(f"{w:8d} {r['wall_s']:8.1f} {rate / 1e6:8.1f} {speedup}")
    if not base_rate:
        print(f"(the {rows[0][0]}-worker run downloaded nothing: no speed-up against it)")
    counts = sorted(fanout["per_pid"].values(), reverse=True)
    print(f"\nfan-out: a {args.fanout_items}-item feed on {args.fanout_workers} workers: "
          f"{fanout['ok']} items fetched in {fanout['wall_s']:.1f} s by {len(counts)} processes, "
          f"items per process {counts}")
    return 0


@contextlib.contextmanager
def serving(size: int, throttle: float):
    """The local server for the block, stopped and its socket closed after it."""
    httpd, base = start_server(size, throttle)
    try:
        yield base
    finally:
        httpd.shutdown()
        httpd.server_close()


def throughput(args, tmp: str) -> list:
    """(workers, result) of downloading the ``--items`` feed with each worker count."""
    rows = []
    with serving(int(args.mb * 1e6), args.throttle_mb_s) as base:
        for w in args.workers:
            r = run_once(f"{base}/feed/{args.items}", w, tmp, args.items)
            rows.append((w, r))
            print(f"  {w} worker(s): {r['ok']}/{r['items']} downloaded in {r['wall_s']:.1f} s", file=sys.stderr)
    return rows


def fan_out(args, tmp: str) -> dict:
    with serving(10_000, 0) as base:
        return run_once(f"{base}/feed/{args.fanout_items}", args.fanout_workers, tmp, args.fanout_items)


if __name__ == "__main__":
    raise SystemExit(main())
