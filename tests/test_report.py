"""report.html: built at every publish from committed tables, and checked in a real headless Chromium.

The corpus comes from two real pipeline runs: the first (a missing file and speech under loud noise,
rejected clips' audio not kept) publishes while ``report.html`` cannot be written; the second (clean
and clipped speech, silence, with ``--keep_rejected_audio``) publishes normally.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from audio.synth import mix, pink_noise
from corpus.layout import Layout
from pipelines.build_corpus import run
from pipelines.report import main as report_main
from report import DISTRIBUTIONS, data, page, page_context
from schemas import tables
from schemas.outcomes import NO_CLIP_AUDIO
from tests.conftest import REPO, copy_shared, have_shared_speech, permissive
from tests.test_build_corpus import table, write_sources

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model, speech):
    d = tmp_path_factory.mktemp("report")
    rec = speech["a"][0]
    noisy = mix(rec, pink_noise(40, seed=9), 0.0).write(str(d / "noisy.wav"))
    x = rec.audio / np.abs(rec.audio).max()
    sf.write(str(d / "clipped.wav"), np.clip(x, -0.4, 0.4) / 0.4 * 0.999, rec.sample_rate)
    sf.write(str(d / "silence.wav"), np.zeros(22050 * 6, dtype=np.float32), 22050, subtype="PCM_16")
    out = d / "corpus"
    (out / "report.html").mkdir(parents=True)  # the page cannot be written: publishing must go on
    first = [d / "missing.wav", noisy]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run(["--sources", write_sources(d / "one.txt", first), "--output", str(out), *permissive(tiny_model),
             "--speakers", "off"])  # speakers off: one voice per source, twice as fast
    runs_after_first = sorted(p.name for p in (out / "runs").glob("*.json"))
    (out / "report.html").rmdir()
    second = [speech["a"][1], d / "clipped.wav", d / "silence.wav", *first]
    if have_shared_speech():
        second.append(copy_shared("jfk.flac", d))
    run(["--sources", write_sources(d / "two.txt", second), "--output", str(out), *permissive(tiny_model),
         "--keep_rejected_audio", "--samples_per_shard", "3", "--speakers", "off"])
    return {"out": out, "stderr": err.getvalue(), "runs_after_first": runs_after_first}


def test_a_page_that_cannot_be_written_does_not_stop_publishing(corpus):
    assert "warning: report.html was not rebuilt" in corpus["stderr"], corpus["stderr"][-2000:]
    assert len(corpus["runs_after_first"]) == 1  # the run was committed all the same
    runs = [json.loads(p.read_text()) for p in (corpus["out"] / "runs").glob("*.json")]
    assert len(runs) == 2 and all(r["elapsed_s"] > 0 for r in runs)


def test_funnel_and_tables_agree_with_the_committed_tables(corpus):
    out = corpus["out"]
    c = data.read_corpus(Layout(str(out)))
    manifest = table(out, "manifest")
    assert c.manifest.num_rows == len(manifest) > 0
    reasons = {(r["stage"], r["reason"]) for r in c.rejected if r["key"]}
    assert {("quality", "noisy"), ("quality", "clipped")} <= reasons
    assert len(c.rejected_audio) > 0 and all(r["reason"] != "noisy" for r in c.rejected if r["key"] in c.rejected_audio)

    kept_h = sum(m["duration_s"] for m in manifest) / 3600
    steps = {s.label: s for s in data.funnel(c.sources, c.rejected, c.manifest.num_rows, kept_h)}
    clip_rejects = [r for r in c.rejected if r["key"]]
    assert steps["sources listed"].sources == len(c.sources) == len({r["source_id"] for r in table(out, "sources")})
    assert steps["cut into clips"].clips == len(manifest) + len(clip_rejects)
    ordered = data.funnel(c.sources, c.rejected, c.manifest.num_rows, kept_h)
    for before, after in zip(ordered, ordered[1:]):  # each gate takes out exactly its reason's clips
        if after.label.startswith("past "):
            gone = [r for r in clip_rejects if r["reason"] == after.label[5:]]
            assert before.clips - after.clips == len(gone) > 0
            assert before.hours - after.hours == pytest.approx(sum(r["duration_s"] for r in gone) / 3600)
    assert {"past noisy", "past clipped"} <= steps.keys()
    assert steps["transcribed"].clips == steps["kept"].clips == len(manifest)  # nothing is rejected after ASR here
    assert steps["kept"].hours == pytest.approx(kept_h)
    report = json.loads((out / "report.json").read_text())
    assert steps["decoded"].hours == pytest.approx(report["hours_in"], abs=1e-3)
    assert "not_found" in steps["decoded"].removed and "silent" in steps["with speech"].removed

    lines = {x.source_id: x for x in data.source_lines(c.sources, c.manifest, c.rejected)}
    for sid in {m["source_id"] for m in manifest}:
        ours = [m for m in manifest if m["source_id"] == sid]
        assert lines[sid].clips == len(ours) and lines[sid].speakers == len({m["speaker"] for m in ours})
    html = (out / "report.html").read_text()
    assert all(line.source_id in html for line in lines.values())
    assert "quality/noisy" in html and "--keep_rejected_audio" in html  # noisy clips' audio was not kept


def test_rejected_audio_is_kept_for_every_clip_but_the_pieces_cut_before_any_audio(corpus):
    """What the audit view says of a clip with no audio (``report.no_audio_note``) rests on this."""
    c = data.read_corpus(Layout(str(corpus["out"])))
    flagged = {tag for tag, r in c.runs.items() if r["settings"]["keep_rejected_audio"]}
    rows = [r for r in c.rejected if r["key"] and r["run"] in flagged]
    assert rows and flagged
    for r in rows:
        assert (r["key"] in c.rejected_audio) == ((r["stage"], r["reason"]) not in NO_CLIP_AUDIO), r


def _driver():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the report test needs Debian's chromium and "
                    f"chromium-driver packages (scripts/setup.sh installs them: apt-get install chromium "
                    f"chromium-driver)", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -r requirements-dev.txt", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--mute-audio"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


WAIT_FOR_AUDIO = """
const done = arguments[arguments.length - 1];
Promise.all(Array.from(document.querySelectorAll('audio')).map(a => new Promise(resolve => {
  const report = () => resolve({key: a.closest('.clip').dataset.key, src: a.currentSrc,
                               finite: Number.isFinite(a.duration), duration: a.duration || 0,
                               error: a.error ? a.error.code : null});
  if (a.readyState >= 1 || a.error) { report(); return; }
  a.addEventListener('loadedmetadata', report, {once: true});
  a.addEventListener('error', report, {once: true});
}))).then(done);
"""

IMAGES = """return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, natural: i.naturalWidth,
  width: i.getBoundingClientRect().width, height: i.getBoundingClientRect().height}));"""


def test_page_in_a_real_browser(corpus, tmp_path):
    out = corpus["out"]
    durations = {m["key"]: m["duration_s"] for m in table(out, "manifest")}
    durations.update({r["key"]: r["duration_s"] for r in table(out, "rejected") if r["key"]})
    measured = [name for name, _, _ in DISTRIBUTIONS
                if any(r.get(name) is not None for r in table(out, "manifest") + table(out, "rejected"))]
    driver = _driver()
    try:
        driver.set_script_timeout(60)
        driver.get((out / "report.html").as_uri())
        images = driver.execute_script(IMAGES)
        players = driver.execute_async_script(WAIT_FOR_AUDIO)
        notes = driver.execute_script(
            "return Array.from(document.querySelectorAll('.noaudio')).map(e => e.closest('.clip').dataset.key)")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(height, 12000))
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    print(f"screenshot of the report: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert errors == [], errors
    # the funnel, one histogram per measured score and two speaker plots, all decoded and drawn
    assert len(images) == 1 + len(measured) + 2, [i["alt"] for i in images]
    assert all(i["complete"] and i["natural"] > 0 and i["width"] > 0 and i["height"] > 0 for i in images), images

    kept_keys = {m["key"] for m in table(out, "manifest")}
    heard = {p["key"]: p for p in players}
    assert heard and all(p["error"] is None and p["finite"] and p["duration"] > 0 for p in players), players
    assert all(p["src"].startswith((out / "report_audio").as_uri()) for p in players)
    for key, p in heard.items():  # each player holds its own clip
        assert p["duration"] == pytest.approx(durations[key], abs=0.05), (key, p)
    assert heard.keys() & kept_keys, "no kept clip can be played"
    clipped = {r["key"] for r in table(out, "rejected") if r["reason"] == "clipped"}
    noisy = {r["key"] for r in table(out, "rejected") if r["reason"] == "noisy"}
    assert heard.keys() & clipped, "rejected clips kept with --keep_rejected_audio must be playable"
    assert notes and set(notes) <= noisy  # their audio was not kept: the page says so
    assert sorted(os.listdir(out / "report_audio")) == sorted(p["src"].rsplit("/", 1)[-1] for p in players)


def test_cli_rebuilds_the_same_page_and_samples_by_seed(corpus):
    out = corpus["out"]
    page, audio = (out / "report.html").read_bytes(), sorted(os.listdir(out / "report_audio"))
    assert report_main([str(out), "--seed", "1", "--kept_samples", "1", "--rejected_per_reason", "1"]) == 0
    small = sorted(os.listdir(out / "report_audio"))
    assert (out / "report.html").read_bytes() != page
    assert len([n for n in small if n.startswith("kept_")]) == 1  # files no longer on the page were removed
    assert report_main([str(out)]) == 0
    assert (out / "report.html").read_bytes() == page  # same corpus, same seed: the same bytes
    assert sorted(os.listdir(out / "report_audio")) == audio


def test_cli_refuses_what_is_not_a_corpus(tmp_path):
    (tmp_path / "some_folder").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "pipelines.report", str(tmp_path / "some_folder")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    lines = [line for line in p.stderr.splitlines() if line.startswith("[report]")]
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert lines == [lines[0]] and "is not a speechmill corpus" in lines[0]
    assert not (tmp_path / "some_folder" / "report.html").exists()
    assert report_main([str(tmp_path), "--kept_samples", "-3"]) == 2


def test_funnel_orders_reasons_as_the_pipeline_meets_them():
    rows = [{"key": f"s_{i:09d}", "source_id": "s", "stage": st, "reason": rs, "duration_s": 5.0}
            for i, (st, rs) in enumerate([("quality", "low_confidence"), ("transcribe", "asr_error"),
                                          ("segment", "multi_speaker"), ("quality", "noisy"),
                                          ("segment", "too_short"), ("quality", "speaking_rate_outlier"),
                                          ("quality", "not_speech")])]
    sources = [{"source_id": "s", "status": "ok", "duration_s": 100.0, "reason": ""},
               {"source_id": "t", "status": "failed", "duration_s": 0.0, "reason": "http_error"}]
    steps = data.funnel(sources, rows, kept_clips=3, kept_hours=15 / 3600)
    assert [s.label for s in steps] == [
        "sources listed", "decoded", "with speech", "cut into clips", "past too_short", "past not_speech",
        "past noisy", "past multi_speaker", "past asr_error", "transcribed", "past low_confidence",
        "past speaking_rate_outlier", "kept"]
    assert [s.clips for s in steps[3:]] == [10, 9, 8, 7, 6, 5, 5, 4, 3, 3]
    assert steps[3].removed_hours == pytest.approx((100 - 50) / 3600)


def test_sample_is_fixed_by_the_seed_and_links_are_safe():
    a = data.sample_indices(1000, 12, seed=13, salt="kept")
    assert a == data.sample_indices(1000, 12, seed=13, salt="kept") and len(set(a)) == 12 and a == sorted(a)
    assert a != data.sample_indices(1000, 12, seed=14, salt="kept")
    assert a != data.sample_indices(1000, 12, seed=13, salt="quality/noisy")
    assert data.sample_indices(5, 12, seed=1) == [0, 1, 2, 3, 4] and data.sample_indices(0, 3, seed=1) == []
    assert data.safe_link("javascript:alert(1)") is None and data.safe_link("JavaScript:x") is None
    assert data.safe_link("data:text/html,x") is None and data.safe_link("https://a.org/x") == "https://a.org/x"
    with pytest.raises(ValueError, match="kept_samples"):
        data.ReportConfig(kept_samples=-1)
    with pytest.raises(ValueError, match="low_word_confidence"):
        data.ReportConfig(low_word_confidence=2.0)


def test_hostile_metadata_is_escaped_and_an_empty_corpus_renders(tmp_path):
    hostile = '<script>alert(1)</script>'
    sources = [{"source_id": "x", "uri": "https://a.org/x.mp3", "title": hostile, "original_url": "javascript:alert(2)",
                "status": "failed", "reason": "http_error", "duration_s": 0.0, "run": "r"}]
    corpus = data.Corpus(str(tmp_path), {}, sources, [], tables.MANIFEST.empty_table().select(data.MANIFEST_COLUMNS))
    html = page.render(page_context(corpus, data.ReportConfig(), Layout(str(tmp_path))))
    assert hostile not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "javascript:" not in html and "<script" not in html
    assert "No clips kept yet." in html and "not measured in this corpus" in html
