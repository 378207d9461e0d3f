"""Hostile sources: remote content must never reach local files, buckets or private hosts.

Every test allows only 127.0.0.1/32. Canary servers on 127.0.0.2 and [::1] answer any request with
real audio: a request they log is a bypass of the network policy, and a sample made from their
audio (or from a local "secret" file) would be a leak into the corpus.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import tarfile

import pytest

from acquisition import safety
from acquisition.expand import expand
from acquisition.fetch import acquire
from acquisition.safety import NetworkPolicy, UnsafeURL, check_url, is_public
from pipelines.build_corpus import run
from schemas.records import AudioFile, Rejection
from schemas.redact import redact_text, redact_url
from tests.conftest import ONLY_LOCALHOST, Route, ScriptedServer, permissive, rss
from tests.test_acquisition import cfg as acquire_cfg
from tests.test_acquisition import src
from tests.test_build_corpus import table, write_sources

DAY = "Mon, 01 Jan 2024 08:00:00 GMT"


def cfg(tmp_path, **kw):
    kw.setdefault("allow_private_networks", ONLY_LOCALHOST)  # 127.0.0.2 and [::1] stay refused
    return acquire_cfg(tmp_path, **kw)


def build(tmp_path, tiny_model, lines, *extra, name="s.txt"):
    out = tmp_path / "corpus"
    report = run(["--sources", write_sources(tmp_path / name, lines), "--output", str(out),
                  *permissive(tiny_model), "--allow_private_networks", ONLY_LOCALHOST, *extra])
    return out, report, {r["uri"]: r for r in table(out, "sources")}


def no_requests(canaries):
    return all(c.log == [] for c in canaries)


@pytest.fixture()
def secret(tmp_path, speech):
    """A local file of the worker that must never become a sample (real audio, so a leak would show)."""
    path = tmp_path / "private" / "secret.wav"
    path.parent.mkdir()
    path.write_bytes(open(speech["b"][1], "rb").read())
    return path


def test_feed_items_naming_local_files_or_buckets_are_refused(server, canaries, speech, secret, tmp_path, tiny_model):
    wav = open(speech["a"][1], "rb").read()
    good = server.add("/ep/good.wav", Route(wav, headers={"Content-Type": "audio/wav"}))
    items = [("Good", "g1", DAY, good, None), ("Leak", "g2", DAY, f"file://{secret}", None),
             ("Bucket", "g3", DAY, "s3://someone-elses-private-bucket/x.wav", None),
             ("Relative", "g4", DAY, "/etc/passwd", None), ("Canary", "g5", DAY, canaries[0].url + "/c.wav", None)]
    feed = server.add("/feed.xml", Route(rss(items), headers={"Content-Type": "application/rss+xml"}))
    out, report, rows = build(tmp_path, tiny_model, [feed])
    assert rows[good]["status"] == "ok"
    assert (rows[f"file://{secret}"]["status"], rows[f"file://{secret}"]["reason"]) == ("failed", "unsupported_scheme")
    assert rows["s3://someone-elses-private-bucket/x.wav"]["reason"] == "unsupported_scheme"
    assert rows[f"{server.url}/etc/passwd"]["reason"] == "http_error"  # a relative link stays on the feed's host
    assert rows[canaries[0].url + "/c.wav"]["reason"] == "private_address"
    assert {m["source_uri"] for m in table(out, "manifest")} == {good}
    assert no_requests(canaries)


def test_page_media_naming_local_files_or_private_hosts_is_refused(server, canaries, speech, secret, tmp_path,
                                                                   tiny_model):
    wav = open(speech["a"][1], "rb").read()
    server.add("/m/talk.wav", Route(wav, headers={"Content-Type": "audio/wav"}))
    cans = "".join(f'<audio src="{c.url}/x.wav"></audio>' for c in canaries)
    page = server.add("/talks.html", Route(
        (f'<!DOCTYPE html><html><head><title>Talks</title></head><body><audio src="file://{secret}"></audio>'
         f'{cans}<audio src="/m/talk.wav"></audio></body></html>').encode(), headers={"Content-Type": "text/html"}))
    out, report, rows = build(tmp_path, tiny_model, [page])
    assert rows[f"{server.url}/m/talk.wav"]["status"] == "ok"
    assert rows[f"file://{secret}"]["reason"] == "unsupported_scheme"
    assert {rows[c.url + "/x.wav"]["reason"] for c in canaries} == {"private_address"}
    assert {m["source_uri"] for m in table(out, "manifest")} == {f"{server.url}/m/talk.wav"}
    assert no_requests(canaries)


def test_downloaded_playlists_are_never_demuxed(server, speech, secret, tmp_path, tiny_model):
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile://{secret}\n#EXT-X-ENDLIST\n".encode()
    concat = f"ffconcat version 1.0\nfile '{secret}'\n".encode()
    a = server.add("/ep/one.mp3", Route(hls, headers={"Content-Type": "audio/mpeg"}))
    b = server.add("/ep/two.wav", Route(concat, headers={"Content-Type": "audio/wav"}))
    out, report, rows = build(tmp_path, tiny_model, [a, b])
    assert (rows[a]["status"], rows[a]["reason"]) == ("failed", "unknown_format")
    assert rows[b]["reason"] == "unknown_format"
    details = {r["source_uri"]: r["detail"] for r in table(out, "rejected")}
    assert "HLS playlist" in details[a] and "concat" in details[b]
    assert table(out, "manifest") == []


def test_every_request_ytdlp_makes_passes_the_policy(server, canaries, speech, tmp_path):
    """HLS segments, media URLs and redirects that yt-dlp follows on its own."""
    c = cfg(tmp_path)
    for can in canaries:
        playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n{can.url}/seg0.ts\n#EXT-X-ENDLIST\n"
        url = server.add(f"/hls-{can.port}.m3u8", Route(playlist.encode(),
                                                        headers={"Content-Type": "application/vnd.apple.mpegurl"}))
        r = acquire(src(url, extractor="generic", kind="ytdlp"), c)
        assert isinstance(r, Rejection) and r.reason == "private_address", r
    hop = server.add("/hop.mp3", Route(status=302, headers={"Location": canaries[0].url + "/x.mp3"}))
    page = server.add("/page.html", Route(f'<html><body><audio src="{hop}"></audio></body></html>'.encode(),
                                          headers={"Content-Type": "text/html"}))
    [item] = [i for i in expand(src(page), c)]
    r = acquire(item, c)
    assert isinstance(r, Rejection) and r.reason == "private_address"
    assert no_requests(canaries)


@pytest.fixture()
def rebinding(monkeypatch):
    """A name server whose answer for rebind.test changes: 127.0.0.1 first, then 127.0.0.2."""
    real = socket.getaddrinfo
    answers = {"n": 0}

    def lookup(host, port, *args, **kw):
        if str(host).rstrip(".") != "rebind.test":
            return real(host, port, *args, **kw)
        answers["n"] += 1
        addr = "127.0.0.1" if answers["n"] == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, int(port or 80)))]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(safety, "RESOLVER", lookup)
    return answers


def test_dns_rebinding_gains_nothing(server, speech, tmp_path, rebinding):
    wav = open(speech["a"][1], "rb").read()
    server.add("/a.wav", Route(wav, headers={"Content-Type": "audio/wav"}))
    canary = ScriptedServer("127.0.0.2", default=Route(b"canary"), port=server.port)  # where the name turns
    try:
        c = cfg(tmp_path)
        got = acquire(src(f"http://rebind.test:{server.port}/a.wav"), c)
        assert isinstance(got, AudioFile) and open(got.path, "rb").read() == wav
        got2 = acquire(src(f"http://rebind.test:{server.port}/a.wav?again=1", extractor="generic", kind="ytdlp"),
                       cfg(tmp_path / "y"))
        assert isinstance(got2, (AudioFile, Rejection))
        assert canary.log == []
    finally:
        canary.close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{p}\\@127.0.0.2:{c}/a.wav",
    "http://127.0.0.2:{c}\\.127.0.0.1:{p}/a.wav",
    "http://127.0.0.1:{p}@127.0.0.2:{c}@x/a.wav",
    "http://127.0.0.1:{p} @127.0.0.2:{c}/a.wav",
    "http://127.0.0.1:{p}\t/a.wav",
    "http://[::ffff:127.0.0.2]:{c}/a.wav",
    "http://0x7f.0.0.2:{c}/a.wav",
    "http://2130706434:{c}/a.wav",
])
def test_urls_that_parsers_read_differently_are_refused(server, canaries, tmp_path, url):
    server.add("/a.wav", Route(b"RIFF" + b"\x00" * 100))
    u = url.format(p=server.port, c=canaries[0].port)
    r = acquire(src(u), cfg(tmp_path))
    assert isinstance(r, Rejection) and r.reason in ("bad_url", "ambiguous_url", "private_address", "dns_error"), r
    assert no_requests(canaries)


@pytest.mark.parametrize("addr,public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("169.254.169.254", False),
    ("100.64.0.1", False), ("192.0.2.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("2002:7f00:1::1", False), ("2002:a9fe:a9fe::", False),
    ("2002:808:808::1", True), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::808:808", True), ("64:ff9b:1::a00:1", False),
    ("::127.0.0.1", False), ("2001:0:4136:e378:8000:63bf:80ff:fffe", False), ("fec0::1", False), ("ff02::1", False),
    ("224.0.0.251", False), ("0.0.0.0", False), ("255.255.255.255", False),
    ("::ffff:0:10.0.0.1", False), ("::ffff:0:127.0.0.1", False), ("::ffff:0:8.8.8.8", True),  # SIIT
])
def test_non_global_ranges_and_embedded_ipv4(addr, public):
    assert is_public(ipaddress.ip_address(addr)) is public


def test_ipv6_literals_and_metadata_names_are_refused():
    for url in ("http://[::ffff:169.254.169.254]/latest", "http://[2002:a9fe:a9fe::1]/", "http://[64:ff9b::a9fe:a9fe]/",
                "http://metadata.google.internal/computeMetadata/v1/", "http://[::1]:8080/"):
        with pytest.raises(UnsafeURL) as e:
            check_url(url, NetworkPolicy.parse(ONLY_LOCALHOST))
        assert e.value.reason == "private_address", url


SECRETS = ("s3cr3tpw", "t0k3nvalue", "sigsecret", "keyvalue123")


def test_credentials_never_reach_what_is_written(server, speech, tmp_path, tiny_model, capfd):
    wav = open(speech["a"][1], "rb").read()
    server.add("/a.wav", Route(wav, headers={"Content-Type": "audio/wav"}))
    port = server.port
    good = f"http://alice:s3cr3tpw@127.0.0.1:{port}/a.wav?token=t0k3nvalue&episode=7"
    bad = f"http://alice:s3cr3tpw@127.0.0.1:{port}/gone.wav?X-Amz-Signature=sigsecret&api_key=keyvalue123"
    out, report, rows = build(tmp_path, tiny_model, [good, bad])
    assert sorted(r["status"] for r in rows.values()) == ["failed", "ok"]
    assert redact_url(good) in rows and "episode=7" in redact_url(good)
    written = []
    for name in ("manifest", "sources", "rejected"):
        written += [json.dumps(r, default=str) for r in table(out, name)]
    for tar in (out / "shards").glob("*.tar"):
        with tarfile.open(tar) as tf:
            written += [tf.extractfile(m).read().decode("utf-8", "replace") for m in tf if m.name.endswith((".json", ".txt"))]
    written += [p.read_text() for p in (out / "runs").glob("*.json")] + [(out / "report.json").read_text()]
    written.append(capfd.readouterr().err)
    assert len(written) > 6
    for text in written:
        assert not any(s in text for s in SECRETS), text[:300]
    assert redact_text(f"HTTP 404 for {bad}").count("REDACTED") == 3


def test_lone_surrogates_in_titles_do_not_crash_the_run(server, speech, tmp_path, tiny_model):
    wav = open(speech["a"][1], "rb").read()
    server.add("/m/a.wav", Route(wav, headers={"Content-Type": "audio/wav"}))
    page = server.add("/p.html", Route(b'<html><head><title>Bad &#xD800; title</title></head><body>'
                                       b'<audio src="/m/a.wav"></audio></body></html>',
                                       headers={"Content-Type": "text/html"}))
    direct = server.add("/m/b.wav", Route(wav, headers={"Content-Type": "audio/wav"}))
    lines = [json.dumps({"uri": page}), json.dumps({"uri": direct, "title": "lone \ud800 surrogate",
                                                    "note\udc80": "x\udfff"})]
    out, report, rows = build(tmp_path, tiny_model, lines, name="s.jsonl")
    manifest = table(out, "manifest")
    titles = {m["title"] for m in manifest}
    assert "lone \ufffd surrogate" in titles and any("\ufffd" in t for t in titles if t.startswith("Bad"))
    assert report["sources"]["ok"] == 2


def test_a_trickling_server_hits_the_total_deadline(server, speech, tmp_path, tiny_model):
    body = open(speech["a"][1], "rb").read()[:400]
    slow = server.add("/slow.wav", Route(body, headers={"Content-Type": "audio/wav"}, trickle_s=0.05))
    page = server.add("/slowpage.html", Route(b'<html><body><audio src="/slow.wav"></audio></body></html>',
                                              headers={"Content-Type": "text/html"}))
    fine = server.add("/fine.wav", Route(open(speech["a"][1], "rb").read(), headers={"Content-Type": "audio/wav"}))
    out, report, rows = build(tmp_path, tiny_model, [slow, page, fine], "--download_timeout_s", "1",
                              "--http_retries", "0")
    assert rows[fine]["status"] == "ok"
    # the direct link (our own HTTP client) and the page (yt-dlp, through the checking proxy) both stop
    assert (rows[slow]["reason"], rows[page]["reason"]) == ("download_timeout", "download_timeout")
    assert rows[slow]["retryable"] and report["sources"]["failed"] == 2
