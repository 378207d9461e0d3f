"""The whole pipeline fed from a local HTTP server: feeds, pages, failures, reruns, budgets."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq

from pipelines.build_corpus import run
from tests.conftest import Route, file_digests, permissive, rss
from tests.test_build_corpus import read_shards, table, write_sources

DAYS = ["Mon, 01 Jan 2024", "Tue, 02 Jan 2024", "Wed, 03 Jan 2024", "Thu, 04 Jan 2024", "Fri, 05 Jan 2024"]


def serve_audio(server, speech, bad_inputs):
    wav = open(speech["a"][1], "rb").read()
    mp3 = open(bad_inputs / "stereo48k.mp3", "rb").read()
    return wav, mp3


def test_feed_and_page_through_the_whole_pipeline(server, tiny_model, speech, bad_inputs, tmp_path):
    wav, mp3 = serve_audio(server, speech, bad_inputs)
    ep = {}
    for i, (name, body) in enumerate([("e1.wav", wav), ("e2.mp3", mp3), ("e3.wav", wav)]):
        ep[name] = server.add(f"/ep/{name}", Route(body, headers={"Content-Type": "audio/mpeg"}))
    ep["e4.mp3"] = f"{server.url}/ep/e4.mp3"  # 404
    feed = server.add("/feed.xml", Route(rss([(f"Episode {i + 1}", f"guid-{i + 1}", f"{DAYS[i]} 08:00:00 GMT",
                                               ep[n], "00:25") for i, n in enumerate(ep)]),
                                         headers={"Content-Type": "application/rss+xml"}))
    server.add("/m/flaky.wav", Route(wav, fail_first=2, headers={"Content-Type": "audio/wav"}))
    server.add("/m/lecture.mp3", Route(mp3, headers={"Content-Type": "audio/mpeg"}))
    page = server.add("/lectures.html", Route(
        b"<!DOCTYPE html><html><head><title>Open lectures</title></head><body>"
        b'<audio src="/m/lecture.mp3" controls></audio><video src="/m/flaky.wav"></video></body></html>',
        headers={"Content-Type": "text/html"}))
    big = server.add("/m/big.wav", Route(os.urandom(3 << 20)))
    sneaky = server.add("/m/redirect.wav", Route(status=302, headers={"Location": "http://169.254.169.254/x.wav"}))

    out = tmp_path / "corpus"
    args = ["--sources", write_sources(tmp_path / "s.txt", [feed, page, big, sneaky]), "--output", str(out),
            *permissive(tiny_model), "--allow_private_networks", "127.0.0.0/8", "--max_download_mb", "2",
            "--http_retries", "3"]
    report = run(args)

    rows = {r["uri"]: r for r in table(out, "sources")}
    assert {u: (r["status"], r["reason"]) for u, r in rows.items()} == {
        ep["e1.wav"]: ("ok", ""), ep["e2.mp3"]: ("ok", ""), ep["e3.wav"]: ("ok", ""),
        ep["e4.mp3"]: ("failed", "http_error"),
        f"{server.url}/m/lecture.mp3": ("ok", ""), f"{server.url}/m/flaky.wav": ("ok", ""),
        big: ("failed", "too_large"), sneaky: ("failed", "private_address")}
    # two 500s, then retried (yt-dlp's generic extractor probes the URL, then downloads it)
    assert server.hits("/m/flaky.wav") >= 3

    manifest = table(out, "manifest")
    e2 = [m for m in manifest if m["source_uri"] == ep["e2.mp3"]]
    assert e2 and all(m["title"] == "Episode 2" and m["uploader"] == "Alice Host" and m["speaker"].startswith("spk-")
                      and m["upload_date"] == "2024-01-02" and m["license"] == "CC BY 4.0"
                      and m["original_url"] == ep["e2.mp3"] + ".html" and m["item_id"] == "guid-2" for m in e2)
    lecture = [m for m in manifest if m["source_uri"].endswith("/m/lecture.mp3")]
    assert lecture and all(m["extractor"] in ("html5", "html5mediaembed") and m["title"].startswith("Open lectures")
                           for m in lecture)
    samples = {s["__key__"]: json.loads(s["json"]) for s in read_shards(out)}
    assert all(samples[m["key"]]["upload_date"] == "2024-01-02" for m in e2)
    assert report["sources"]["ok"] == 5 and not (out / "_staging").exists() or not os.listdir(out / "_staging")

    # a rerun downloads nothing new and changes no sample: only the failures that depend on the world
    # (the 404, the private redirect, the too-large file) are asked again, and recorded again
    samples = lambda: {k: v for k, v in file_digests(out).items() if k.startswith(("shards/", "manifest/"))}
    before, media_hits = samples(), [p for p in server.log if p.startswith(("/ep/", "/m/"))]
    run(args)
    assert samples() == before
    retried = [p for p in server.log if p.startswith(("/ep/", "/m/"))][len(media_hits):]
    assert sorted(set(retried)) == ["/ep/e4.mp3", "/m/big.wav", "/m/redirect.wav"]
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    latest = max(runs, key=lambda r: r["published_at"])["run"]
    assert {r["status"] for r in pq.read_table(str(out / "sources" / f"run-{latest}.parquet")).to_pylist()} == {"failed"}
    media_hits = [p for p in server.log if p.startswith(("/ep/", "/m/"))]

    # a new episode in the feed: only it is fetched and added
    server.add("/ep/e5.wav", Route(wav))
    server.routes["/feed.xml"] = Route(rss(
        [(f"Episode {i + 1}", f"guid-{i + 1}", f"{DAYS[i]} 08:00:00 GMT", ep[n], "00:25") for i, n in enumerate(ep)]
        + [("Episode 5", "guid-5", f"{DAYS[4]} 08:00:00 GMT", f"{server.url}/ep/e5.wav", None)]))
    report2 = run(args)
    fetched = [p for p in server.log if p.startswith(("/ep/", "/m/"))][len(media_hits):]
    assert [p for p in fetched if p not in ("/ep/e4.mp3", "/m/big.wav", "/m/redirect.wav")] == ["/ep/e5.wav"]
    assert report2["sources"]["ok"] == 6 and report2["kept"] > report["kept"]
    keys = [s["__key__"] for s in read_shards(out)]
    assert len(keys) == len(set(keys)) == len(table(out, "manifest"))


def test_transient_failure_is_retried_on_the_next_run(server, tiny_model, speech, bad_inputs, tmp_path):
    wav, _ = serve_audio(server, speech, bad_inputs)
    down = server.add("/a.wav", Route(wav, fail_first=100, fail_status=503))
    ok = server.add("/b.wav", Route(wav))
    out = tmp_path / "corpus"
    args = ["--sources", write_sources(tmp_path / "s.txt", [down, ok]), "--output", str(out),
            *permissive(tiny_model), "--allow_private_networks", "127.0.0.0/8", "--http_retries", "1"]
    first = run(args)
    row = next(r for r in table(out, "sources") if r["uri"] == down)
    assert (row["status"], row["retryable"]) == ("failed", True) and "503" in table(out, "rejected")[0]["detail"]
    assert first["rejects_by_reason"] == {"acquire/http_error": {"count": 1, "hours": 0.0}}

    server.routes["/a.wav"] = Route(wav)  # the server recovers
    second = run(args)
    assert second["sources"] == {"total": 2, "ok": 2, "failed": 0, "rejected": 0, "deferred": 0}
    assert second["rejects_by_reason"] == {}  # the earlier transient failure is history, not a reject
    assert server.hits("/b.wav") == 1  # the finished source was not fetched again
    third = run(args)
    assert third == second and server.hits("/a.wav") == 2 + 1


def test_hours_budget_defers_the_rest(server, tiny_model, speech, bad_inputs, tmp_path):
    wav, _ = serve_audio(server, speech, bad_inputs)
    urls = [server.add(f"/e{i}.wav", Route(wav)) for i in range(3)]
    feed = server.add("/f.rss", Route(rss([(f"E{i}", f"g{i}", f"{DAYS[i]} 08:00:00 GMT", urls[i], "00:25")
                                           for i in range(3)])))
    out = tmp_path / "corpus"
    base = ["--sources", write_sources(tmp_path / "s.txt", [feed]), "--output", str(out),
            *permissive(tiny_model), "--allow_private_networks", "127.0.0.0/8"]
    first = run([*base, "--max_hours_total", str(55 / 3600)])
    assert first["sources"]["ok"] == 2 and first["sources"]["deferred"] == 1
    assert server.hits("/e0.wav") == 0  # the oldest episode waits: newest first
    second = run(base)
    assert second["sources"]["ok"] == 3 and second["sources"]["deferred"] == 0
    assert [server.hits(f"/e{i}.wav") for i in range(3)] == [1, 1, 1]


def test_rerun_after_an_interrupted_run_uses_what_it_staged(server, tiny_model, speech, bad_inputs, tmp_path):
    """Downloads staged by a run that died before publishing are not fetched again by the rerun."""
    from acquisition.config import AcquireConfig
    from acquisition.fetch import acquire
    from acquisition.sources_file import read_sources
    wav, _ = serve_audio(server, speech, bad_inputs)
    urls = [server.add(f"/s{i}.wav", Route(wav)) for i in range(3)]
    out = tmp_path / "corpus"
    sources = write_sources(tmp_path / "s.txt", urls)
    cfg = AcquireConfig(staging_dir=str(out / "_staging"), allow_private_networks="127.0.0.0/8")
    for src in read_sources(sources).sources[:2]:  # what the interrupted run had downloaded
        assert acquire(src, cfg).size_bytes == len(wav)
    for i in range(2):
        del server.routes[f"/s{i}.wav"]  # gone from the server now
    report = run(["--sources", sources, "--output", str(out), *permissive(tiny_model),
                  "--allow_private_networks", "127.0.0.0/8"])
    assert report["sources"]["ok"] == 3
    assert [server.hits(f"/s{i}.wav") for i in range(3)] == [1, 1, 1]
    assert not os.listdir(out / "_staging")  # published, so the staged copies are cleared
