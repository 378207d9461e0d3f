import http.server
import threading

import pytest

from acquisition.config import AcquireConfig
from acquisition.fetch import acquire
from acquisition.staging import staged_path
from schemas.keys import source_id_for_uri
from schemas.records import AudioFile, Rejection, Source


def src(uri):
    return Source(uri, source_id_for_uri(uri))


def cfg(tmp_path, **kw):
    kw.setdefault("allow_private_networks", "127.0.0.0/8")
    return AcquireConfig(staging_dir=str(tmp_path / "staging"), retry_backoff_s=0.01, http_timeout_s=5, **kw)


def test_local_files(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF....")
    (tmp_path / "empty.wav").write_bytes(b"")
    c = cfg(tmp_path)
    ok = acquire(src(f"file://{tmp_path}/a.wav"), c)
    assert isinstance(ok, AudioFile) and ok.size_bytes == 8
    for name, reason in [("missing.wav", "not_found"), ("empty.wav", "empty_file"), ("", "is_directory")]:
        r = acquire(src(f"file://{tmp_path}/{name}"), c)
        assert isinstance(r, Rejection) and r.reason == reason and r.stage == "acquire"


def test_http_download_is_staged_once(http_root, tmp_path):
    root, base = http_root
    (root / "ep1.mp3").write_bytes(b"x" * 100_000)
    c = cfg(tmp_path)
    s = src(f"{base}/ep1.mp3")
    got = acquire(s, c)
    assert isinstance(got, AudioFile) and got.size_bytes == 100_000
    assert got.path == staged_path(s, c.staging_dir) and got.path.endswith(".mp3")
    (root / "ep1.mp3").unlink()  # a rerun uses the staged copy
    assert isinstance(acquire(s, c), AudioFile)


def test_http_errors(http_root, tmp_path):
    root, base = http_root
    (root / "big.wav").write_bytes(b"x" * 3_000_000)
    c = cfg(tmp_path, max_download_mb=1)
    r404 = acquire(src(f"{base}/missing.wav"), c)
    assert r404.reason == "http_error" and "404" in r404.detail
    big = acquire(src(f"{base}/big.wav"), c)
    assert big.reason == "too_large" and "max_download_mb" in big.detail
    staging = tmp_path / "staging"
    assert (list(staging.iterdir()) if staging.exists() else []) == []  # no partial file left


class Flaky(http.server.BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self):
        type(self).calls += 1
        if type(self).calls <= 2:
            self.send_error(500)
            return
        body = b"y" * 5000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture()
def flaky_server():
    Flaky.calls = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_transient_500s_are_retried(flaky_server, tmp_path):
    got = acquire(src(f"{flaky_server}/f.wav"), cfg(tmp_path))
    assert isinstance(got, AudioFile) and got.size_bytes == 5000 and Flaky.calls == 3
    staged = list((tmp_path / "staging").iterdir())
    assert len(staged) == 1  # one staged copy, no temporary leftovers


def test_retries_are_bounded(flaky_server, tmp_path):
    r = acquire(src(f"{flaky_server}/f.wav"), cfg(tmp_path, http_retries=1))
    assert isinstance(r, Rejection) and "500" in r.detail and Flaky.calls == 2
