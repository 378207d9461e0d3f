"""The wall time a 1 byte/s server adds to a wave, without and with ``--min_download_kbps``.

    python -m benchmarks.straggler [--timeout_s 20] [--retries 1] [--min_kbps 8]

Three builds of the same real recordings (``../shared/data/real_speech``), each a fresh process on
the in-process runner: the recordings alone (the baseline), then beside one link whose server
(127.0.0.1) sends its body one byte a second, first with only ``--download_timeout_s`` to bound it
(``--timeout_s`` stands in for the default hour), then with ``--min_download_kbps``. Prints each
build's wall time, what it adds to the baseline, the row the straggler got and the runs published.
The straggler holds its wave while it downloads: without a minimum rate it adds about the timeout
(an hour by default; a timed-out download is not tried again); with one, the 5 s grace period per
try (``too_slow`` is retried ``--http_retries`` times). ~2 min with the defaults on an idle machine.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks import scratch_dir

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO.parent / "shared" / "data" / "real_speech"
GOOD = ["jfk.flac", "lj_1.wav", "lj_2.wav", "stereo_diarization.wav"]


def build(sources: Path, out: Path, model: str, extra: list) -> float:
    """Wall seconds of one build in a fresh process."""
    args = ["--sources", str(sources), "--output", str(out), "--asr_model", model, "--min_confidence", "0",
            "--min_chars_per_s", "0", "--max_chars_per_s", "1000", "--allow_private_networks", "127.0.0.1/32", *extra]
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pipelines.build_corpus", *args], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def rows(out: Path) -> dict:
    """{uri: (status, reason)} of the corpus's source rows, and how many runs published them."""
    got = {}
    for p in glob.glob(str(out / "sources" / "*.parquet")):
        for r in pq.read_table(p).to_pylist():
            got[r["uri"]] = (r["status"], r.get("reason") or "")
    return got


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout_s", type=float, default=20.0, help="--download_timeout_s of the builds (default 20)")
    ap.add_argument("--retries", type=int, default=1, help="--http_retries of the builds (default 1)")
    ap.add_argument("--min_kbps", type=float, default=8.0, help="--min_download_kbps of the last build (default 8)")
    args = ap.parse_args(argv)
    from asr.tiny import build_tiny_model
    from tests.conftest import Route, ScriptedServer

    with scratch_dir("speechmill-straggler-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(str(root / "model"))
        good = [str(SPEECH / n) for n in GOOD]
        server = ScriptedServer()
        slow = server.add("/slow.wav", Route((SPEECH / "lj_1.wav").read_bytes(), headers={"Content-Type": "audio/wav"},
                                             trickle_s=1.0))
        alone, beside = root / "alone.txt", root / "beside.txt"
        alone.write_text("\n".join(good) + "\n")
        beside.write_text("\n".join(good + [slow]) + "\n")
        common = ["--download_timeout_s", f"{args.timeout_s:g}", "--http_retries", str(args.retries)]
        runs = [("good sources alone (baseline)", alone, []),
                (f"+ 1 byte/s link, --download_timeout_s {args.timeout_s:g}", beside, []),
                (f"+ 1 byte/s link, --min_download_kbps {args.min_kbps:g}", beside,
                 ["--min_download_kbps", f"{args.min_kbps:g}"])]
        print(f"{len(good)} real recordings ({', '.join(GOOD)}), --http_retries {args.retries}; wall seconds of "
              f"each build, a fresh process each", flush=True)
        print("| build | wall s | added by the straggler | straggler's row | runs |\n|---|---|---|---|---|")
        base = None
        for i, (name, sources, extra) in enumerate(runs):
            out = root / f"out{i}"
            wall = build(sources, out, model, common + extra)
            base = wall if base is None else base
            row = rows(out).get(slow)
            n_runs = len(list((out / "runs").glob("*.json")))
            print(f"| {name} | {wall:.1f} | {'' if i == 0 else f'{wall - base:+.1f} s'} | "
                  f"{'' if row is None else f'{row[0]} {row[1]}'} | {n_runs} |", flush=True)
        server.close()


if __name__ == "__main__":
    main()
