"""Acquisition against HTTP servers the tests start on 127.0.0.1."""
from __future__ import annotations

import os

import pytest

from acquisition.config import AcquireConfig
from acquisition.expand import expand, expand_source
from acquisition.feeds import feed_items, parse_duration
from acquisition.fetch import acquire
from acquisition.safety import NetworkPolicy, UnsafeURL, check_url
from acquisition.ytdlp import _refuse, classify
from schemas.keys import source_id_for_uri
from schemas.records import AudioFile, Rejection, Source
from tests.conftest import Route, rss

LOCAL = "127.0.0.0/8"


def src(uri, **kw):
    return Source(uri, source_id_for_uri(uri), origin="s.txt:1", **kw)


def cfg(tmp_path, **kw):
    kw.setdefault("allow_private_networks", LOCAL)
    return AcquireConfig(staging_dir=str(tmp_path / "staging"), retry_backoff_s=0.01, http_timeout_s=5, **kw)


def staged_files(tmp_path):
    d = tmp_path / "staging"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_network_policy():
    public_only = NetworkPolicy.parse(None)
    for url in ("http://127.0.0.1/x", "http://localhost:8080/x", "http://10.1.2.3/x", "http://192.168.0.1/",
                "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://100.64.0.1/",
                "http://0.0.0.0/"):
        with pytest.raises(UnsafeURL) as e:
            check_url(url, public_only)
        assert e.value.reason == "private_address"
    with pytest.raises(UnsafeURL, match="unsupported_scheme"):
        check_url("file:///etc/passwd", public_only)
    with pytest.raises(UnsafeURL, match="unsupported_scheme"):
        check_url("ftp://example.org/x", public_only)
    local = NetworkPolicy.parse(LOCAL)
    check_url("http://127.0.0.1:9/x", local)  # allowed network
    with pytest.raises(UnsafeURL):
        check_url("http://169.254.169.254/", local)  # still refused: not in the allowed list
    check_url("http://10.9.9.9/", NetworkPolicy.parse("all"))
    check_url("http://93.184.216.34/", public_only)  # a public address literal passes
    with pytest.raises(ValueError, match="not a network"):
        NetworkPolicy.parse("localhost")


def test_local_server_refused_without_allow(server, speech, tmp_path):
    url = server.add("/a.wav", Route(open(speech["a"][1], "rb").read()))
    r = acquire(src(url), cfg(tmp_path, allow_private_networks=None))
    assert isinstance(r, Rejection) and r.reason == "private_address" and "127.0.0.1" in r.detail
    assert server.log == []  # refused before any connection


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.20.30.40/a.wav"])
def test_redirect_to_private_address_is_refused(server, tmp_path, target):
    url = server.add("/go.wav", Route(status=302, headers={"Location": target}))
    r = acquire(src(url), cfg(tmp_path))
    assert isinstance(r, Rejection) and r.reason == "private_address"
    assert target.split("/")[2] in r.detail and r.retryable  # a policy is a setting: the next run asks again
    assert staged_files(tmp_path) == []


def test_redirect_within_allowed_network_is_followed(server, tmp_path):
    server.add("/real.wav", Route(b"x" * 1000))
    url = server.add("/old.wav", Route(status=301, headers={"Location": "/real.wav"}))
    got = acquire(src(url), cfg(tmp_path))
    assert isinstance(got, AudioFile) and got.size_bytes == 1000 and server.log == ["/old.wav", "/real.wav"]


def test_dropped_connection_never_leaves_a_complete_looking_file(server, tmp_path):
    body = os.urandom(200_000)
    url = server.add("/ep.mp3", Route(body, drop_after=50_000))
    r = acquire(src(url), cfg(tmp_path, http_retries=0))
    assert isinstance(r, Rejection) and r.reason == "connection_error" and r.retryable
    assert staged_files(tmp_path) == []  # nothing under the source's name, no temporary left over
    got = acquire(src(url), cfg(tmp_path, http_retries=0))  # the rerun finishes it
    assert isinstance(got, AudioFile) and open(got.path, "rb").read() == body


def test_dropped_connection_is_retried_within_a_run(server, tmp_path):
    body = os.urandom(100_000)
    url = server.add("/ep.mp3", Route(body, drop_after=10_000))
    got = acquire(src(url), cfg(tmp_path))
    assert isinstance(got, AudioFile) and open(got.path, "rb").read() == body and server.hits("/ep.mp3") == 2


def test_staged_sources_are_not_downloaded_again(server, tmp_path):
    url = server.add("/ep.mp3", Route(b"y" * 5000))
    assert isinstance(acquire(src(url), cfg(tmp_path)), AudioFile)
    del server.routes["/ep.mp3"]  # gone from the server: the staged copy is used
    again = acquire(src(url), cfg(tmp_path))
    assert isinstance(again, AudioFile) and server.hits("/ep.mp3") == 1


def test_feed_newest_first_bounded_with_metadata(server, tmp_path):
    items = [("Ep 1", "g1", "Mon, 01 Jan 2024 10:00:00 GMT", f"{server.url}/e1.mp3", "00:25"),
             ("Ep 3", "g3", "Wed, 03 Jan 2024 10:00:00 GMT", f"{server.url}/e3.mp3", "1:02:03"),
             ("Ep 2", "g2", "Tue, 02 Jan 2024 10:00:00 GMT", f"{server.url}/e2.mp3", None),
             ("Ep 4", "g4", "Thu, 04 Jan 2024 10:00:00 GMT", f"{server.url}/e4.mp3", "90")]
    url = server.add("/feed", Route(rss(items), headers={"Content-Type": "application/rss+xml"}))
    got = expand_source(src(url), cfg(tmp_path, max_items_per_source=3))
    assert [s.title for s in got] == ["Ep 4", "Ep 3", "Ep 2", "Ep 1"]  # listed whole; a run takes 3 (see below)
    assert all(s.remote for s in got)  # named by remote content: only http(s) will be fetched
    # a feed is listed whole whatever --max_listed_items says: the run's limit defers the rest (never drops it)
    assert len(expand_source(src(url), cfg(tmp_path, max_items_per_source=2, max_listed_items=2))) == 4
    ep3 = got[1]
    assert (ep3.uploader, ep3.upload_date, ep3.declared_duration_s, ep3.license, ep3.item_id) == (
        "Alice Host", "2024-01-03", 3723.0, "CC BY 4.0", "g3")
    assert ep3.uri == f"{server.url}/e3.mp3" and ep3.source_id == source_id_for_uri(ep3.uri)
    assert ep3.speaker is None and ep3.speaker_id == "Alice Host"  # the author is a hint: voices decide speakers
    assert ep3.webpage_url.endswith("e3.mp3.html") and ep3.voice_group == "uploader::Alice Host"
    assert ep3.origin == "s.txt:1 > 2"
    assert parse_duration("abc") is None and parse_duration("45") == 45.0


def test_feed_detected_without_content_type(server, tmp_path):
    items = [("Only", "g", "Mon, 01 Jan 2024 10:00:00 GMT", f"{server.url}/o.mp3", None)]
    url = server.add("/podcast", Route(rss(items), headers={"Content-Type": "text/plain"}))
    assert [s.title for s in expand_source(src(url), cfg(tmp_path))] == ["Only"]
    with pytest.raises(Exception, match="no episodes"):
        feed_items(b"<rss><channel></channel></rss>", url, src(url), 10)


def test_folder_expands_recursively_by_extension(tmp_path):
    root = tmp_path / "books"
    (root / "b" / "c").mkdir(parents=True)
    for name in ("a.mp3", "b/ch1.m4b", "b/c/x.FLAC", "notes.txt", "b/cover.jpg"):
        (root / name).write_bytes(b"data of " + name.encode())
    items = expand_source(src(f"file://{root}"), cfg(tmp_path))
    assert [os.path.relpath(s.uri[7:], root) for s in items] == ["a.mp3", "b/c/x.FLAC", "b/ch1.m4b"]
    assert len({s.source_id for s in items}) == 3
    (tmp_path / "empty").mkdir()
    [r] = list(expand(src(f"file://{tmp_path / 'empty'}"), cfg(tmp_path)))
    assert isinstance(r, Rejection) and r.reason == "empty_folder"


def test_ytdlp_generic_page_expands_and_downloads(server, speech, bad_inputs, tmp_path):
    wav = open(speech["a"][1], "rb").read()
    mp3 = open(bad_inputs / "stereo48k.mp3", "rb").read()
    server.add("/media/one.mp3", Route(mp3, headers={"Content-Type": "audio/mpeg"}))
    server.add("/media/two.wav", Route(wav, headers={"Content-Type": "audio/wav"}))
    page = (b"<!DOCTYPE html><html><head><title>Lectures</title></head><body>"
            b'<audio controls src="/media/one.mp3"></audio>'
            b'<audio controls><source src="/media/two.wav" type="audio/wav"></audio></body></html>')
    url = server.add("/talks.html", Route(page, headers={"Content-Type": "text/html"}))
    c = cfg(tmp_path)
    items = expand_source(src(url), c)
    assert len(items) == 2 and all(s.extractor in ("html5", "html5mediaembed", "generic") for s in items)
    assert {s.uri.rsplit("/", 1)[1] for s in items} == {"one.mp3", "two.wav"}
    assert all(s.title.startswith("Lectures") for s in items)
    got = [acquire(s, c) for s in items]
    assert all(isinstance(g, AudioFile) for g in got), got
    assert sorted(open(g.path, "rb").read() for g in got) == sorted([mp3, wav])
    assert all(os.path.basename(g.path).startswith(s.source_id + ".") for g, s in zip(got, items))
    assert not [n for n in staged_files(tmp_path) if n.startswith(".")]  # no temporary dirs left


def test_ytdlp_failures_are_classified_by_type(server, tmp_path):
    from acquisition import ytdlp
    from acquisition.errors import FetchError
    url = server.add("/page.html", Route(b"<html><body>no media here</body></html>",
                                         headers={"Content-Type": "text/html"}))
    [r] = list(expand(src(url), cfg(tmp_path)))
    assert isinstance(r, Rejection) and r.stage == "expand" and r.reason == "unsupported_url"
    # a 503 whose reason phrase says "Unavailable" is a server hiccup, not a removed video
    busy = server.add("/busy.html", Route(status=503))
    gone = server.add("/gone.html", Route(status=404))
    with pytest.raises(FetchError) as e:
        ytdlp.expand(src(busy, kind="ytdlp"), cfg(tmp_path))
    assert (e.value.reason, e.value.transient) == ("http_error", True) and "503" in e.value.detail
    with pytest.raises(FetchError) as e:
        ytdlp.expand(src(gone, kind="ytdlp"), cfg(tmp_path))
    assert (e.value.reason, e.value.transient) == ("http_error", False) and "404" in e.value.detail
    # the same words in a message decide nothing: only the exception's type and status do
    from yt_dlp.utils import DownloadError, ExtractorError
    assert classify(DownloadError("HTTP Error 503: Service Unavailable")).reason == "ytdlp_error"
    assert classify(ExtractorError("This video is unavailable", expected=True)).reason == "unavailable"
    assert classify(DownloadError("x", exc_info=(TimeoutError, TimeoutError("read timed out"), None))).transient
    refuse = _refuse(cfg(tmp_path, max_duration_s=600))
    assert "live" in refuse({"is_live": True}) and "too long" in refuse({"duration": 3600})
    assert refuse({"duration": 300}) is None


def test_stated_duration_over_limit_is_refused_before_download(server, tmp_path):
    url = server.add("/long.mp3", Route(b"z" * 100))
    r = acquire(src(url, declared_duration_s=7200.0), cfg(tmp_path, max_duration_s=3600))
    assert isinstance(r, Rejection) and r.reason == "too_long" and server.log == []


def test_live_stream_is_refused(server, tmp_path):
    segment = server.add("/live/seg0.ts", Route(b"\x47" + os.urandom(187) * 1))
    playlist = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
                f"#EXTINF:4.0,\n{segment}\n")  # no #EXT-X-ENDLIST: a live playlist
    url = server.add("/live/stream.m3u8", Route(playlist.encode(),
                                                headers={"Content-Type": "application/vnd.apple.mpegurl"}))
    c = cfg(tmp_path)
    [item] = expand_source(src(url), c)
    assert item.extractor == "generic"
    r = acquire(item, c)
    assert isinstance(r, Rejection) and r.reason == "live_stream" and r.retryable  # a stream ends; ask again later
    assert staged_files(tmp_path) == [] and server.hits("/live/seg0.ts") == 0
