"""Messages that tell the fix where the user is looking: a failure that a rerun cured is not listed
again, the synthesizer names what its tokenizer lacks, the report advises only flags not yet used."""
from __future__ import annotations

import contextlib
import io
import json

from pipelines.build_corpus import run
from tests.conftest import ONLY_LOCALHOST, Route, permissive, rss
from tests.test_build_corpus import table, write_sources
from transforms.progress import progress


def test_a_failure_a_rerun_cured_is_no_longer_listed(tmp_path, tiny_model, speech, server):
    """A feed and a file that answer 404 at first (retried by the next run), then are there."""
    out = tmp_path / "corpus"
    wav = Route(open(speech["a"][1], "rb").read(), headers={"Content-Type": "audio/wav"})
    episode = server.add("/ep1.wav", wav)
    feed = server.add("/feed.xml", Route(rss([("Episode 1", "guid-1", "Mon, 01 Jan 2024 08:00:00 GMT", episode,
                                               None)]), headers={"Content-Type": "application/rss+xml"},
                                         fail_first=1, fail_status=404))
    late = server.add("/late.wav", Route(wav.body, headers=wav.headers, fail_first=1, fail_status=404))
    args = ["--sources", write_sources(tmp_path / "s.txt", [feed, late]), "--output", str(out),
            *permissive(tiny_model), "--speakers", "off", "--allow_private_networks", ONLY_LOCALHOST]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        first = run(args)
    assert first["sources"]["failed"] == 2 and err.getvalue().count("HTTP 404") >= 2, err.getvalue()[-3000:]
    assert {r["reason"] for r in table(out, "sources")} == {"http_error"}

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        second = run(args)
    said = err.getvalue()
    assert second["sources"] == {"total": 2, "ok": 2, "failed": 0, "rejected": 0, "deferred": 0}, second["sources"]
    assert second["failed_examples"] == [] and not second["retried_next_run"]
    assert "404" not in said and "http_error" not in said and "failed or rejected sources" not in said, said
    assert not [line for line in said.splitlines() if " failed" in line and " 0 failed" not in line], said
    assert "0 failed" in progress().line()  # the counts of this run, not of the runs before it in this process
    report = json.loads((out / "report.json").read_text())
    assert report["sources"]["failed"] == 0 and report["failed_examples"] == []
    html = (out / "report.html").read_text()
    assert "http_error" not in html and "HTTP 404" not in html
