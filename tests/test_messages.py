"""Messages that tell the fix where the user is looking: a failure that a rerun cured is not listed
again, the synthesizer names what its tokenizer lacks, the report advises only flags not yet used."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

from corpus.layout import Layout
from pipelines import synthesize as synth_cli
from pipelines.build_corpus import run
from report import audit_clips, data, page, page_context
from run.console import short_uri
from schemas import tables
from schemas.records import SCORE_FIELDS
from tests.conftest import ONLY_LOCALHOST, Route, permissive, rss
from tests.test_build_corpus import table, write_sources
from tests.test_trainers import TOKENIZER
from transforms.progress import progress
from tts.frontends.text import TextTokenizer


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


def test_synthesize_names_the_characters_its_tokenizer_lacks_and_where_it_came_from(tmp_path, capsys):
    """Checked before any model is loaded (the model files here do not even exist)."""
    if not TOKENIZER.exists():
        pytest.skip("../shared/data not present")
    models = ["--dvae", str(tmp_path / "dvae.pth"), "--ar", str(tmp_path / "ar" / "model.pth"),
              "--diffusion", str(tmp_path / "diffusion.pth"), "--output", str(tmp_path / "out")]
    text = "Fifty % of ☃ snowmen melt at 9 & more #hot"
    assert synth_cli.run(["--text", text, *models, "--tokenizer", str(TOKENIZER)]) == 2
    err = capsys.readouterr().err
    assert f"the tokenizer {TOKENIZER} (--tokenizer) has no" in err, err
    named = err.split(" has no ", 1)[1].split(":", 1)[0]
    assert "'%'" in named and "'&'" in named and "'#'" in named and "'☃' (U+2603, dropped)" in named, named
    assert "'o'" not in named and "'9'" not in named  # letters and digits (spelled out) are fine
    assert "Traceback" not in err and not (tmp_path / "out").exists()

    (tmp_path / "ar").mkdir()
    beside = tmp_path / "ar" / "tokenizer.json"
    shutil.copy(TOKENIZER, beside)
    assert synth_cli.run(["--text", "a ≤ b", *models]) == 2
    err = capsys.readouterr().err
    assert f"the tokenizer {beside} (found beside --ar) has no '≤' (read as '<=')" in err, err

    # a text it can spell gets past the check (and then stops at the missing models); another script is noted
    assert synth_cli.run(["--text", "Hello, Tokyo (東京).", *models, "--tokenizer", str(TOKENIZER)]) == 2
    err = capsys.readouterr().err
    assert "has no" not in err and "'東' is read as 'dong'" in err, err


def test_a_tokenizer_that_is_not_one_is_named():
    with pytest.raises(ValueError, match="cannot read the tokenizer .*nope.json"):
        TextTokenizer("/nonexistent/nope.json")


def test_the_audit_view_advises_keep_rejected_audio_only_where_it_would_keep_the_audio(tmp_path):
    with_flag, without = {"settings": {"keep_rejected_audio": True}}, {"settings": {"keep_rejected_audio": False}}
    row = lambda key, stage, reason, run: {"source_id": "s", "source_uri": "/a.wav", "key": f"s_{key:09d}",
                                           "stage": stage, "reason": reason, "detail": "", "duration_s": 1.0,
                                           "run": run, "text": None, **dict.fromkeys(SCORE_FIELDS)}
    rejected = [row(0, "segment", "too_short", "new"), row(5000, "segment", "too_quiet", "old"),
                row(9000, "quality", "noisy", "old"), row(19000, "quality", "clipped", "new")]
    corpus = data.Corpus(str(tmp_path), {"old": without, "new": with_flag},
                         [{"source_id": "s", "uri": "/a.wav", "status": "ok", "duration_s": 30.0, "run": "new"}],
                         rejected, tables.MANIFEST.empty_table().select(data.MANIFEST_COLUMNS))
    _, groups = audit_clips(corpus, data.ReportConfig(), Layout(str(tmp_path)))
    notes = {reason: clip.audio_note for reason, clips in groups for clip in clips}
    assert set(notes) == {("segment", "too_short"), ("segment", "too_quiet"), ("quality", "noisy"),
                          ("quality", "clipped")}
    for cut in (("segment", "too_short"), ("segment", "too_quiet")):  # never has audio: nothing to advise
        assert "never kept" in notes[cut] and "built with" not in notes[cut], notes[cut]
    assert "built with --keep_rejected_audio" in notes[("quality", "noisy")]  # its run did not use the flag
    assert "built with" not in notes[("quality", "clipped")]  # its run did: advising it again would mislead
    html = page.render(page_context(corpus, data.ReportConfig(), Layout(str(tmp_path))))
    assert html.count("built with --keep_rejected_audio") == 1


def test_a_long_uri_in_the_summary_keeps_its_file_name():
    """The summary cuts long URIs in the middle: the file name at the end is what names the source."""
    uri = "file:///tmp/" + "deep/" * 30 + "missing.wav"
    assert short_uri(uri).endswith("/missing.wav") and short_uri(uri).startswith("file:///tmp/")
    assert len(short_uri(uri)) == 90 and short_uri("file:///a.wav") == "file:///a.wav"
