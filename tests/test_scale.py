"""Sizes users bring: feeds of 100,000 episodes, many URLs that differ only in a secret, long lists."""
from __future__ import annotations

import gzip
import os

from acquisition.expand import expand_source
from acquisition.fetch import AcquireConfig
from acquisition.sources_file import read_sources
from acquisition.ytdlp import item_source
from corpus import identity_key
from pipelines.build_corpus import run
from run import waves
from schemas.keys import source_id_for_uri
from schemas.records import Rejection, Source, SourceResult
from tests.conftest import ONLY_LOCALHOST, Route, ffmpeg, rss
from tests.test_build_corpus import table
from tests.test_no_loss import corpus_args
from transforms.expand import expand_records

LOCAL = "127.0.0.0/8"
N_EPISODES = 100_000


def cfg(tmp_path, **kw):
    return AcquireConfig(staging_dir=str(tmp_path / "staging"), allow_private_networks=LOCAL, http_timeout_s=30, **kw)


def big_feed(base: str, n: int) -> bytes:
    days = ["Mon, 01 Jan 2024", "Tue, 02 Jan 2024", "Wed, 03 Jan 2024"]
    return rss([(f"Ep {i}", f"g{i}", f"{days[i % 3]} {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d} GMT",
                 f"{base}/e{i}.mp3", "30:00" if i % 2 else None) for i in range(n)])


def test_every_episode_of_a_100000_item_gzip_feed_gets_one_row_per_run(server, tmp_path):
    body = big_feed(server.url, N_EPISODES)
    assert len(body) > 8 << 20  # twice what the listing used to read
    url = server.add("/feed", Route(gzip.compress(body, 1), headers={"Content-Type": "application/rss+xml",
                                                                      "Content-Encoding": "gzip"}))
    parent = Source(url, source_id_for_uri(url), origin="s.txt:1")
    c = cfg(tmp_path, max_items_per_source=60_000)
    done, taken_by_run = set(), []
    for _ in range(2):
        taken, deferred_rows = [], set()
        for out in expand_records(parent, c, frozenset(done)):
            if isinstance(out, tuple):
                taken.append(out[0])
            elif isinstance(out, SourceResult):
                assert out.status == "deferred" and out.source.source_id not in deferred_rows
                deferred_rows.add(out.source.source_id)
            else:
                assert isinstance(out, Rejection) and out.reason == "over_items_limit"
        assert len(set(taken) | deferred_rows) == len(taken) + len(deferred_rows) == N_EPISODES - len(done)
        assert not set(taken) & done  # one row per pending item, none for a done one
        taken_by_run.append(taken)
        done |= set(taken)
    assert [len(t) for t in taken_by_run] == [60_000, 40_000] and len(done) == N_EPISODES


def test_a_feed_served_as_a_gz_file_is_read(server, tmp_path):
    body = big_feed(server.url, 50)
    url = server.add("/feed.xml.gz", Route(gzip.compress(body), headers={"Content-Type": "application/gzip"}))
    items = expand_source(Source(url, source_id_for_uri(url), origin="s.txt:1"), cfg(tmp_path))
    assert len({s.source_id for s in items}) == 50 and sum(s.declared_duration_s == 1800.0 for s in items) == 25


def test_urls_differing_only_in_a_secret_are_distinct_sources_with_stable_ids(tmp_path):
    lines = [f"https://cdn.example/ep.mp3?key=ep{101 + i}" for i in range(7)]
    (tmp_path / "s.txt").write_text("\n".join(lines + lines[:2]) + "\n")  # two true duplicates among them
    key = identity_key.read_or_create(str(tmp_path / "corpus"))
    first = read_sources(str(tmp_path / "s.txt"), key)
    assert len({s.source_id for s in first.sources}) == 7 and first.duplicates == 2
    assert identity_key.read_or_create(str(tmp_path / "corpus")) == key  # kept in the corpus, not made again
    again = read_sources(str(tmp_path / "s.txt"), identity_key.read(str(tmp_path / "corpus")))
    assert [s.source_id for s in again.sources] == [s.source_id for s in first.sources]
    other = read_sources(str(tmp_path / "s.txt"), identity_key.read_or_create(str(tmp_path / "other")))
    assert not {s.source_id for s in other.sources} & {s.source_id for s in first.sources}  # keyed per corpus
    plain = "https://cdn.example/ep.mp3?n=1"
    assert source_id_for_uri(plain, key) == source_id_for_uri(plain)  # a URL without secrets keeps its id


def test_links_found_by_yt_dlp_differing_only_in_a_secret_are_distinct_sources(tmp_path):
    """A page's or playlist's generic entries (no extractor id) are told apart by their whole URL,
    keyed with the corpus's identity key like the sources file's lines."""
    parent = Source("https://site.example/show", source_id_for_uri("https://site.example/show"), origin="s.txt:1")
    entries = [{"url": f"https://cdn.example/ep.mp3?key=ep{101 + i}", "ie_key": "Generic"} for i in range(3)]
    key = identity_key.read_or_create(str(tmp_path / "corpus"))
    ids = [item_source(e, parent, i, "generic", id_key=key).source_id for i, e in enumerate(entries)]
    assert len(set(ids)) == 3
    assert ids == [item_source(e, parent, i, "generic", id_key=key).source_id for i, e in enumerate(entries)]
    other = identity_key.read_or_create(str(tmp_path / "other"))
    assert not set(ids) & {item_source(e, parent, i, "generic", id_key=other).source_id
                           for i, e in enumerate(entries)}
    assert all("ep10" not in item_source(e, parent, i, "generic", id_key=key).uri.split("?")[0]
               for i, e in enumerate(entries))


def test_a_build_keeps_every_line_that_differs_only_in_a_secret(server, tmp_path, tiny_model):
    url = server.add("/ep.mp3", Route(b"not audio", status=404))
    out = tmp_path / "corpus"
    args = corpus_args(tmp_path, tiny_model, [f"{url}?key=ep{101 + i}" for i in range(7)], out,
                       "--allow_private_networks", ONLY_LOCALHOST, "--http_retries", "0")
    assert run(args)["sources"]["total"] == 7
    rows = table(out, "sources")
    assert len({r["source_id"] for r in rows}) == 7 and all("ep10" not in r["uri"] for r in rows)
    run(args)  # a 404 is tried again: under the same ids, from the key kept in the corpus
    again = table(out, "sources")
    assert len(again) == 14 and {r["source_id"] for r in again} == {r["source_id"] for r in rows}


def decoded_s(path) -> float:
    """The truth: what ffmpeg decodes, as 16 kHz mono 16-bit samples."""
    raw = str(path) + ".raw"
    ffmpeg("-i", str(path), "-ac", "1", "-ar", "16000", "-f", "s16le", raw)
    return os.path.getsize(raw) / 32000


def test_the_progress_total_of_local_files_is_their_decoded_length(speech, tmp_path):
    files = [tmp_path / "a44k_stereo.wav", tmp_path / "b48k.flac", tmp_path / "a16k.wav", tmp_path / "a.ogg",
             tmp_path / "b64k.mp3"]
    for (src_key, args), out in zip([("a", ["-ac", "2", "-ar", "44100"]), ("b", ["-ar", "48000"]),
                                     ("a", ["-ar", "16000"]), ("a", ["-c:a", "libvorbis"]),
                                     ("b", ["-b:a", "64k", "-ac", "1"])], files):
        ffmpeg("-i", speech[src_key][1], *args, str(out))
    items = [Source(f"file://{p}", f"file-{i}", origin=f"s.txt:{i}") for i, p in enumerate(files)]
    estimate = sum(waves.estimated_s(s) for s in items)
    truth = sum(decoded_s(p) for p in files)
    assert 0.98 < estimate / truth < 1.02
    assert sum(os.path.getsize(p) for p in files) / waves.BYTES_PER_S / truth > 2  # what the size said


def test_waves_are_bounded_by_item_count_when_lengths_are_unknown():
    links = [Source(f"https://cdn.example/{i}.mp3", f"http-{i}", origin=f"s.txt:{i}") for i in range(20_000)]
    assert len(waves.cut(links, 4.0)) == 20_000 // waves.WAVE_MIN_ITEMS  # not 20,000 × 15 min / 4 h = 1,250
    hour_long = [Source(f"https://cdn.example/h{i}.mp3", f"http-h{i}", origin=f"t.txt:{i}", declared_duration_s=3600.0)
                 for i in range(10)]
    assert [len(w) for w in waves.cut(hour_long, 2.0)] == [2] * 5  # known lengths: cut by hours alone
    sized = [Source(f"https://cdn.example/s{i}.mp3", f"http-s{i}", origin=f"u.txt:{i}",
                    size_bytes=waves.BYTES_PER_S * 1800) for i in range(8)]
    assert [len(w) for w in waves.cut(sized, 1.0)] == [2] * 4  # a feed's stated size is a length too


def test_a_long_sources_file_is_read_with_progress_lines_and_not_held_as_objects(tmp_path):
    n = 120_000
    (tmp_path / "s.txt").write_text("".join(f"https://cdn.example/show/ep{i}.mp3\n" for i in range(n)))
    said = []
    parsed = read_sources(str(tmp_path / "s.txt"), log=said.append)
    assert parsed.count == n and len(said) == 1 and "100,000 of 120,000 lines" in said[0]
    got = parsed.iter_sources()
    assert [next(got).origin for _ in range(3)] == ["s.txt:1", "s.txt:2", "s.txt:3"]
    assert sum(1 for _ in parsed.iter_sources()) == n  # read back again, from the start


def test_the_plan_is_cut_from_the_listing_in_file_order_and_saved_a_wave_at_a_time(tmp_path):
    import random

    from corpus.layout import Layout
    from corpus.shards import table_bytes
    from schemas import tables
    from storage import fs
    items = [Source(f"https://cdn.example/{i}.mp3", f"http-{i:05d}", origin=f"s.txt:{i + 1}",
                    declared_duration_s=600.0 if i % 3 else None) for i in range(1_000)]
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    layout = Layout(str(tmp_path / "corpus"))
    listing = layout.work(waves.expansion_tag("k")).path("items-00000-of-00001.parquet")
    fs.atomic_write_bytes(listing, table_bytes([tables.item_row(s) for s in shuffled], tables.ITEMS))
    plan = waves.make_plan(layout, "k", [listing], 1.0, "")
    expected = waves.cut(items, 1.0)
    assert plan.sizes == [len(w) for w in expected] and len(plan.tags) == len(set(plan.tags)) > 1
    assert [s for i in range(len(plan.tags)) for s in plan.items(i)] == items  # s.txt:2 before s.txt:10
    again = waves.load(layout, "k")
    assert (again.tags, again.sizes, again.items(1)) == (plan.tags, plan.sizes, plan.items(1))
    assert waves.make_plan(layout, "k", [listing], 1.0, "").tags == plan.tags  # stable across reruns


def test_a_download_under_the_minimum_rate_ends_as_a_retryable_row(server, tmp_path):
    from acquisition.fetch import acquire
    from schemas.outcomes import retryable
    slow = server.add("/slow.mp3", Route(b"s" * 2000, trickle_s=0.05))  # 20 bytes/s: 100 s for the whole body
    fast = server.add("/fast.mp3", Route(os.urandom(300_000)))
    c = cfg(tmp_path, min_download_kbps=1.0, http_retries=0)  # 125 bytes/s
    got = acquire(Source(slow, source_id_for_uri(slow), origin="s.txt:1"), c)
    assert isinstance(got, Rejection) and got.reason == "too_slow" and retryable(got.reason)
    ok = acquire(Source(fast, source_id_for_uri(fast), origin="s.txt:2"), c)
    assert open(ok.path, "rb").read() == server.routes["/fast.mp3"].body
