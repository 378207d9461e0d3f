"""A hostile input suite: many bad, malicious and unlucky sources in one corpus, then faults.

    python -m benchmarks.hostile_inputs [--keep DIR]

Builds one corpus from a sources file full of hostile inputs — local files that are not what they
claim, feeds and pages that name local files, buckets, private and metadata addresses, URLs that
parsers read differently, credentials in URLs, surrogates in titles, decode bombs, trickling and
dropping servers, odd file names, bad lines — served from 127.0.0.1 with canaries on 127.0.0.2 and
[::1] that must never be reached. Then it injects faults: ``kill -9`` of a run in the middle, a
crash in the middle of publishing, and two runs at once into one output, each followed by a rerun.

Prints how many inputs were tried and what became of them, and checks the promises: every input
has exactly one outcome, no canary was reached, no local secret and no credential reached the
corpus, no partial or temporary file is left, no sample is doubled, no ffmpeg outlives its run.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

from benchmarks import scratch_dir

SECRET_WORDS = ("s3cr3tpw", "t0k3nvalue", "sigsecret")
ALLOW = "127.0.0.1/32"


def _rss(items) -> bytes:
    body = "".join(f"<item><title>{t}</title><guid>{g}</guid><enclosure url=\"{u}\" type=\"audio/mpeg\"/></item>"
                   for t, g, u in items)
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Hostile</title>{body}</channel></rss>'.encode()


def make_inputs(root: Path, server, canaries, speech_wav: bytes, secret: Path):
    """(sources lines, expected item count, description counts) for the suite."""
    from tests.conftest import Route, ffmpeg
    d = root / "local"
    d.mkdir()
    can = [c.url for c in canaries]
    lines, kinds = [], Counter()

    def local(name: bytes, data: bytes, kind: str):
        p = d / os.fsdecode(name)
        p.write_bytes(data)
        lines.append(str(p))
        kinds[kind] += 1

    local(b"corrupt.flac", b"fLaC" + os.urandom(20000), "corrupt media")
    local(b"text.wav", b"not audio\n" * 300, "text named as audio")
    local(b"empty.mp3", b"", "empty file")
    local(b"one.wav", b"R", "one byte")
    local(b"playlist.mp3", f"#EXTM3U\n#EXTINF:10,\nfile://{secret}\n#EXT-X-ENDLIST\n".encode(), "local HLS playlist")
    local(b"concat.wav", f"ffconcat version 1.0\nfile '{secret}'\n".encode(), "concat list")
    local(b"page.mp3", b"<html><body>hi</body></html>", "HTML named as audio")
    local(b"truncated.wav", speech_wav[:1000], "truncated WAV")
    for i in range(10):
        local(f"random{i}.m4a".encode(), os.urandom(5000 + 97 * i), "random bytes")
    odd = d / "odd names [1]"
    odd.mkdir()
    for name in (b"caf\xe9.wav", b"q?x.wav", b"100%.wav", b"#hash.wav", b"tab\tname.wav", b"space name [1].wav"):
        (odd / os.fsdecode(name)).write_bytes(speech_wav + name)
        kinds["odd file name (in a folder)"] += 1
    lines.append(str(odd))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "3600", "-c:a", "flac", str(d / "bomb.flac"))
    lines.append(str(d / "bomb.flac"))
    kinds["decode bomb (1 h of silence)"] += 1
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:d=1", str(d / "video.mp4"))
    lines.append(str(d / "video.mp4"))
    kinds["video without audio"] += 1
    os.symlink("/etc/passwd", d / "passwd.wav")
    lines.append(str(d / "passwd.wav"))
    kinds["symlink to /etc/passwd"] += 1

    wav_route = Route(speech_wav, headers={"Content-Type": "audio/wav"})
    good = server.add("/ok/good.wav", wav_route)
    lines.append(good)
    kinds["good control"] += 1
    remote_bad = [f"file://{secret}", "file:///etc/passwd", "s3://private-bucket/a.wav", "gs://private/a.wav",
                  "ftp://example.org/a.wav", "/etc/passwd", "../../etc/passwd", "data:audio/wav;base64,UklGRg==",
                  "javascript:alert(1)", "http://169.254.169.254/latest/meta-data/iam",
                  "http://metadata.google.internal/computeMetadata/v1/", "http://[::ffff:169.254.169.254]/x.wav",
                  "http://[2002:a9fe:a9fe::1]/x.wav", "http://[64:ff9b::7f00:2]/x.wav", "http://0x7f000002/x.wav",
                  *(u + "/x.wav" for u in can), f"http://127.0.0.1:{server.port}\\@127.0.0.2/x.wav"]
    feed = server.add("/hostile.xml", Route(_rss([(f"bad {i}", f"b{i}", u) for i, u in enumerate(remote_bad)]
                                                 + [("good", "ok", good)]),
                                            headers={"Content-Type": "application/rss+xml"}))
    lines.append(feed)
    kinds["feed enclosures naming local files, buckets, private hosts"] += len(remote_bad)
    page_media = "".join(f'<audio src="{u}"></audio>' for u in (f"file://{secret}", *(c + "/p.wav" for c in can),
                                                                  "/ok/good.wav"))
    page = server.add("/page.html", Route(f"<html><head><title>T &#xD800;</title></head><body>{page_media}</body>"
                                          "</html>".encode(), headers={"Content-Type": "text/html"}))
    lines.append(page)
    kinds["page media naming local files and private hosts"] += 1 + len(can)
    hls_canary = server.add("/canary.m3u8", Route((f"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n{can[0]}/s.ts\n"
                                                   "#EXT-X-ENDLIST\n").encode(),
                                                  headers={"Content-Type": "application/vnd.apple.mpegurl"}))
    hls_file = server.add("/file.mp3", Route(f"#EXTM3U\n#EXTINF:4.0,\nfile://{secret}\n#EXT-X-ENDLIST\n".encode(),
                                             headers={"Content-Type": "audio/mpeg"}))
    lines += [hls_canary, hls_file]
    kinds["HLS naming private hosts or local files"] += 2
    for i, target in enumerate([can[0] + "/r.wav", "http://169.254.169.254/x", "file:///etc/passwd"]):
        lines.append(server.add(f"/redirect{i}.wav", Route(status=302, headers={"Location": target})))
    lines.append(server.add("/loop.wav", Route(status=302, headers={"Location": "/loop.wav"})))
    kinds["redirects to private hosts, file:// and loops"] += 4
    for status in (404, 410, 500, 503, 429):
        lines.append(server.add(f"/status{status}.wav", Route(status=status)))
    kinds["HTTP errors"] += 5
    lines.append(server.add("/slow.wav", Route(speech_wav[:3000], headers={"Content-Type": "audio/wav"},
                                                 trickle_s=0.01)))
    lines.append(server.add("/drop.wav", Route(speech_wav, headers={"Content-Type": "audio/wav"}, drop_after=500)))
    zeros = gzip.compress(b"\0" * (64 << 20))
    lines.append(server.add("/gzipbomb.wav", Route(zeros, headers={"Content-Type": "audio/wav",
                                                                     "Content-Encoding": "gzip"})))
    kinds["trickling, dropping and gzip-bomb servers"] += 3
    creds = f"http://alice:s3cr3tpw@127.0.0.1:{server.port}/ok/good.wav?token=t0k3nvalue&x=1"
    lines.append(creds)
    lines.append(f"http://alice:s3cr3tpw@127.0.0.1:{server.port}/missing.wav?X-Amz-Signature=sigsecret")
    kinds["credentials in URLs"] += 2
    many = server.add("/many.xml", Route(_rss([(f"ep {i}", f"m{i}", f"{server.url}/ep/{i}.wav") for i in range(40)]),
                                         headers={"Content-Type": "application/rss+xml"}))
    for i in range(40):
        server.add(f"/ep/{i}.wav", Route(speech_wav + bytes([i]), headers={"Content-Type": "audio/wav"}))
    lines.append(many)
    kinds["feed past --max_items_per_source (40 items, 15 a run)"] += 40
    lines += ["ftp://example.org/x.wav", "gopher://x/y.wav", "no-such-scheme://x", "C:\\evil\\path.wav"]
    kinds["unusable sources-file lines"] += 4
    return lines, kinds


def count_outcomes(out: Path):
    from corpus.layout import Layout, latest_source_rows
    rows = latest_source_rows(Layout(str(out)))
    return Counter((r["status"], r["reason"]) for r in rows), rows


def check_corpus(out: Path, secret_bytes: bytes) -> dict:
    import pyarrow.parquet as pq
    import webdataset as wds
    keys = [s["__key__"] for s in wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")),
                                                   shardshuffle=False)] if list((out / "shards").glob("*.tar")) else []
    partial = [str(p) for p in out.rglob("*") if ".tmp-" in p.name or p.parent.name in ("_journal", "_work")
               or p.name.startswith(".dl-")]
    leaked = 0
    texts = []
    for tar in (out / "shards").glob("*.tar"):
        with tarfile.open(tar) as tf:
            for m in tf:
                data = tf.extractfile(m).read()
                leaked += secret_bytes[:4000] in data
                if m.name.endswith((".json", ".txt")):
                    texts.append(data.decode("utf-8", "replace"))
    for p in out.rglob("*.parquet"):
        texts.append(json.dumps(pq.read_table(str(p)).to_pylist(), default=str))
    for p in list(out.rglob("*.json")):
        texts.append(p.read_text(errors="replace"))
    return {"samples": len(keys), "duplicate samples": len(keys) - len(set(keys)), "partial files": len(partial),
            "credential strings written": sum(any(w in t for w in SECRET_WORDS) for t in texts),
            "samples from a local secret": leaked}


def ffmpeg_running() -> int:
    """ffmpeg processes alive. A killed one whose parent died before it is a zombie until the
    machine's init reaps it (it holds no CPU and no files), so it is not counted."""
    import psutil
    return sum(1 for p in psutil.process_iter(["name", "status"])
               if p.info["name"] == "ffmpeg" and p.info["status"] != psutil.STATUS_ZOMBIE)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", default=None, help="build in this folder and keep it")
    args = ap.parse_args(argv)
    from run.console import quiet_libraries
    quiet_libraries()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from asr.tiny import build_tiny_model
    from audio.synth import SENTENCES, build_recording
    from pipelines.build_corpus import run
    from tests.conftest import Route, ScriptedServer

    with scratch_dir("speechmill-hostile-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        model = build_tiny_model(str(root / "model"))
        rec = build_recording(SENTENCES[:4], [0.8, 0.9, 1.0], seed=3)
        wav = Path(rec.write(str(root / "speech.wav"))).read_bytes()
        secret = root / "secret" / "voice.wav"
        secret.parent.mkdir()
        secret.write_bytes(Path(build_recording(SENTENCES[6:9], [0.8, 0.8], seed=5).write(str(root / "s.wav")))
                           .read_bytes())
        server = ScriptedServer()
        canaries = [ScriptedServer("127.0.0.2", default=Route(wav)), ScriptedServer("::1", default=Route(wav))]
        lines, kinds = make_inputs(root, server, canaries, wav, secret)
        sources = root / "sources.txt"
        sources.write_text("\n".join(lines) + "\n")
        out = root / "corpus"
        common = ["--sources", str(sources), "--asr_model", model, "--min_confidence", "0", "--min_chars_per_s", "0",
                  "--max_chars_per_s", "1000", "--allow_private_networks", ALLOW, "--max_items_per_source", "15",
                  "--download_timeout_s", "3", "--http_retries", "1", "--max_scratch_gb", "0.05",
                  "--max_download_mb", "20", "--samples_per_shard", "5"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        t0 = time.monotonic()

        # fault 1: kill -9 in the middle of the first run
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.build_corpus", *common, "--output", str(out)],
                                env=env, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "writing to" in line:
                break
        time.sleep(3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1)
        killed_ffmpeg = ffmpeg_running()

        # fault 2: a crash half way through publishing the next run
        from storage import fs
        real_move, moved = fs.move, []

        def dying(src, dst):
            if len(moved) == 4:
                raise KeyboardInterrupt
            moved.append(dst)
            real_move(src, dst)
        fs.move = dying
        crashed = False
        try:
            run([*common, "--output", str(out)])
        except KeyboardInterrupt:
            crashed = True
        fs.move = real_move

        # fault 3: two runs at once into the same output (the deferred feed items give them work)
        procs = [subprocess.Popen([sys.executable, "-m", "pipelines.build_corpus", *common, "--output", str(out)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        concurrent = sorted(p.wait() for p in procs)
        errors = [p.stderr.read() for p in procs]
        tracebacks = sum("Traceback" in e for e in errors)
        # and reruns until nothing is left to do (the deferred feed items come 15 a run)
        reruns = 0
        for reruns in range(1, 6):
            report = run([*common, "--output", str(out)])
            if report["sources"]["deferred"] == 0:
                break
        elapsed = time.monotonic() - t0
        outcomes, rows = count_outcomes(out)
        checks = check_corpus(out, secret.read_bytes()[44:])
        checks["canary requests"] = sum(len(c.log) for c in canaries)
        checks["ffmpeg left after kill -9"] = killed_ffmpeg
        checks["ffmpeg running now"] = ffmpeg_running()
        inputs = sum(kinds.values())

        print(f"\nhostile inputs tried: {inputs} ({len(lines)} sources-file lines), in {elapsed:.0f} s")
        for k, n in kinds.most_common():
            print(f"  {n:4d}  {k}")
        print(f"\nrows (each source's latest outcome): {len(rows)}")
        for (status, reason), n in sorted(outcomes.items()):
            print(f"  {n:4d}  {status:9s} {reason}")
        print("\nfaults: kill -9 mid-run, crash mid-publish"
              f" ({'raised' if crashed else 'did not trigger'}), two runs at once (exit codes {concurrent},"
              f" tracebacks {tracebacks}); then {reruns} rerun(s)")
        for k, v in checks.items():
            print(f"  {k:32s} {v}")
        bad = [k for k, v in checks.items() if k != "samples" and v]
        print("\nall promises hold" if not bad and concurrent == [0, 2] else f"\nBROKEN: {bad} {concurrent}")
        for c in canaries + [server]:
            c.close()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
        return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
