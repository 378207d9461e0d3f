"""Shared fixtures: a tiny CTC model, synthesised speech with known sentence times, a local HTTP server."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio.synth import SENTENCES, build_recording

REPO = Path(__file__).resolve().parent.parent
SHARED_SPEECH = REPO.parent / "shared" / "data" / "real_speech"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from asr.tiny import build_tiny_model
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_w2v2")))


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """Two espeak recordings with known sentence spans (a normal and a 35 dB quieter one)."""
    d = tmp_path_factory.mktemp("speech")
    a = build_recording(SENTENCES[:6], [0.8, 0.3, 1.2, 0.25, 1.0], seed=1)
    # a long stretch with only short pauses (forces cuts at the quietest point), then a long pause
    b = build_recording(SENTENCES[4:12], [0.25, 0.2, 0.3, 0.2, 0.25, 1.5, 0.9], seed=2,
                        gain_db=-35.0, noise_db=-60.0, voices=["en-us", "en-gb"])
    return {"a": (a, a.write(str(d / "a.wav"))), "b": (b, b.write(str(d / "b.wav")))}


def ffmpeg(*args):
    from audio.ffmpeg import ffmpeg_binary
    subprocess.run([ffmpeg_binary(), "-nostdin", "-y", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory, speech):
    """Files for every way a source can be bad, plus a stereo 48 kHz MP3 that must work."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    (d / "corrupt.flac").write_bytes(b"fLaC" + rng.bytes(20000))
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.wav").write_text("this is a text file, not audio\n" * 40)
    sf.write(str(d / "silence.wav"), np.zeros(22050 * 8, dtype=np.float32), 22050, subtype="PCM_16")
    ffmpeg("-i", speech["a"][1], "-ac", "2", "-ar", "48000", str(d / "stereo48k.mp3"))
    return d


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def http_root(tmp_path):
    """A directory served on 127.0.0.1; yields (root dir, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def permissive(model: str) -> list:
    """Options that keep every clip the random tiny model transcribes (its text is gibberish). The
    synthetic recordings repeat the same sentences word for word, so the duplicate check is off."""
    return ["--asr_model", model, "--min_confidence", "0", "--min_chars_per_s", "0",
            "--max_chars_per_s", "1000", "--dedup_audio", "off"]


@pytest.fixture(scope="session")
def built_corpus(tmp_path_factory, tiny_model, speech):
    """``built_corpus(names, *options)``: the corpus of the synthesised recordings ``names`` ("a", "ab")
    built with the permissive options and ``options`` from ``s.txt`` beside it (``one_run_each``: each
    recording in a run of its own, from ``s0.txt``, ``s1.txt``, ...), once per session for every test that
    starts from it. Tests read it as it is or change a copy (``copy_corpus``); the session's end checks
    that no test changed the shared one."""
    from pipelines.build_corpus import run  # here: a session that builds no corpus need not load Beam
    made = {}

    def get(names: str, *options: str, one_run_each: bool = False) -> Path:
        key = (names, options, one_run_each)
        if key not in made:
            d = tmp_path_factory.mktemp("built")
            out = d / "corpus"
            runs = {f"s{i}.txt": n for i, n in enumerate(names)} if one_run_each else {"s.txt": names}
            for sources, recordings in runs.items():
                (d / sources).write_text("".join(speech[n][1] + "\n" for n in recordings))
                run(["--sources", str(d / sources), "--output", str(out), *permissive(tiny_model), *options])
            made[key] = (out, file_digests(out))
        return made[key][0]

    yield get
    for out, digests in made.values():
        assert file_digests(out) == digests, f"a test changed the shared corpus {out}: copy it first"


def copy_corpus(built: Path, dest: Path) -> Path:
    """A copy of a shared corpus that a test may change."""
    shutil.copytree(built, dest, symlinks=True)
    return dest


def beam_pipeline():
    """A Beam pipeline on the runner a build uses by default (``run.engine``): Beam's own default
    would first try to fetch and start its Prism runner, leaving a temporary folder behind."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from run.engine import with_default_runner
    return beam.Pipeline(options=PipelineOptions(with_default_runner([])))


def have_shared_speech() -> bool:
    return (SHARED_SPEECH / "jfk.flac").exists()


def copy_shared(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copy(SHARED_SPEECH / name, target)
    return target


def file_digests(root: Path) -> dict:
    import hashlib
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


VOLATILE_RUN_FIELDS = ("elapsed_s", "published_at", "asr_busy_s")  # how long a run took and when


def normalised(name: str, data: bytes) -> bytes:
    """A corpus file's bytes for comparing two builds: runs/*.json without their timing fields."""
    if name.startswith("runs/") and name.endswith(".json"):
        record = {k: v for k, v in json.loads(data).items() if k not in VOLATILE_RUN_FIELDS}
        return json.dumps(record, sort_keys=True).encode()
    return data


def corpus_digests(files: dict) -> dict:
    """{path: sha256} of a corpus's files given as {path: bytes}: every file but report.html (which
    names the output and the run times) and identity.key (random per corpus), runs/*.json compared without their timing fields."""
    import hashlib
    return {k: hashlib.sha256(normalised(k, v)).hexdigest() for k, v in sorted(files.items())
            if k not in ("report.html", "identity.key") and not k.startswith(("_work/", "_journal/", "_staging/"))}


def local_files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


os.environ.setdefault("SPEECHMILL_PROGRESS_S", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


class Route:
    """What the test server answers for one path."""

    def __init__(self, body: bytes = b"", status: int = 200, headers=None, drop_after=None, fail_first=0,
                 fail_status=500, trickle_s=None):
        self.body, self.status, self.headers = body, status, dict(headers or {})
        self.drop_after = drop_after  # send this many bytes of the body, then cut the connection (once)
        self.fail_first, self.fail_status = fail_first, fail_status
        self.trickle_s = trickle_s  # send the body one byte at a time, this many seconds apart


class ScriptedServer:
    """An HTTP server on ``host`` (127.0.0.1 by default) whose answers the test sets per path, with a
    log of requests. ``default`` answers every path no route names (a canary answers everything)."""

    def __init__(self, host: str = "127.0.0.1", default: "Route" = None, port: int = 0):
        self.routes, self.log = {}, []
        self.default = default
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.log.append(path)
                route = server.routes.get(path, server.default)
                if route is None:
                    self.send_error(404)
                    return
                if route.fail_first > 0:
                    route.fail_first -= 1
                    self.send_error(route.fail_status)
                    return
                self.send_response(route.status)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if route.trickle_s is not None:
                    for i in range(len(route.body)):
                        try:
                            self.wfile.write(route.body[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(route.trickle_s)
                    return
                if route.drop_after is not None:
                    self.wfile.write(route.body[: route.drop_after])
                    self.wfile.flush()
                    route.drop_after = None
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(route.body)

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # clients that hang up early (probes, dropped downloads) are expected here

        self.httpd = Server((host, port), Handler)
        self.host = host
        self.port = self.httpd.server_address[1]
        self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url + path

    def hits(self, path: str) -> int:
        return self.log.count(path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = ScriptedServer()
    yield s
    s.close()


@pytest.fixture()
def canaries(speech):
    """Servers on 127.0.0.2 and [::1] that answer every path with real audio: any request one of them
    logs got past the network policy (tests allow only 127.0.0.1/32)."""
    wav = open(speech["a"][1], "rb").read()
    found = [ScriptedServer("127.0.0.2", default=Route(wav, headers={"Content-Type": "audio/wav"}))]
    try:
        found.append(ScriptedServer("::1", default=Route(wav, headers={"Content-Type": "audio/wav"})))
    except OSError:  # no IPv6 loopback here
        pass
    yield found
    for c in found:
        c.close()


ONLY_LOCALHOST = "127.0.0.1/32"


def rss(items, title="Test Pod", author="Alice Host") -> bytes:
    """An RSS 2.0 feed; items are (title, guid, pub_date, url, duration or None)."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
             f'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"><channel><title>{title}</title>'
             f"<itunes:author>{author}</itunes:author><copyright>CC BY 4.0</copyright>"]
    for t, guid, date, url, dur in items:
        d = f"<itunes:duration>{dur}</itunes:duration>" if dur else ""
        parts.append(f"<item><title>{t}</title><guid>{guid}</guid><pubDate>{date}</pubDate>"
                     f'<link>{url}.html</link><enclosure url="{url}" type="audio/mpeg" length="1"/>{d}</item>')
    parts.append("</channel></rss>")
    return "".join(parts).encode()


@pytest.fixture()
def s3(monkeypatch):
    """An S3 server (moto) on 127.0.0.1 with a bucket ``talks``: (client, the run options that reach it)."""
    import boto3
    from moto import server as moto_server
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="talks")
    yield client, ["--s3_endpoint_url", endpoint, "--s3_access_key_id", "test", "--s3_secret_access_key", "test",
                   "--s3_region_name", "us-east-1"]
    server.stop()


# The longest test files first: with the suite spread over processes a file at a time
# (scripts/test.sh), a long file started last would leave the other processes idle at the end.
LONGEST_FILES = ("test_trainers.py", "test_reruns_and_options.py", "test_no_loss.py", "test_distributed.py",
                 "test_untrusted_sources.py", "test_build_corpus.py", "test_live_progress.py", "test_dedup.py",
                 "test_clean_clips.py", "test_lock_and_journal.py", "test_gpu_pass.py", "test_synthesize.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept
