"""End-to-end runs of ``pipelines.build_corpus`` on the real DirectRunner."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from audio.flac import decode_flac
from pipelines.build_corpus import run
from tests.conftest import REPO, copy_corpus, copy_shared, file_digests, have_shared_speech, permissive


def table(out: Path, name: str) -> list:
    files = sorted((out / name).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(str(f)).to_pylist()]


def read_shards(out: Path) -> list:
    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    return list(wds.WebDataset(shards, shardshuffle=False)) if shards else []


def write_sources(path: Path, lines) -> str:
    path.write_text("\n".join(str(x) for x in lines) + "\n")
    return str(path)


def test_mixed_input_every_source_accounted_for(tmp_path, tiny_model, speech, bad_inputs, http_root):
    www, base = http_root
    shutil.copy(speech["a"][1], www / "talk.wav")
    lines = [speech["a"][1], bad_inputs / "corrupt.flac", bad_inputs / "empty.wav", bad_inputs / "notes.wav",
             bad_inputs / "silence.wav", tmp_path / "missing.wav", f"{base}/gone.mp3",
             bad_inputs / "stereo48k.mp3", f"{base}/talk.wav", "ftp://example.org/x.wav"]
    out = tmp_path / "corpus"
    report = run(["--sources", write_sources(tmp_path / "sources.txt", lines), "--output", str(out),
                  *permissive(tiny_model), "--allow_private_networks", "127.0.0.0/8"])

    rows = {r["origin"]: r for r in table(out, "sources")}
    assert len(rows) == len(lines)  # every line has exactly one outcome
    outcome = {int(o.split(":")[1]): (r["status"], r["reason"]) for o, r in rows.items()}
    assert outcome == {
        1: ("ok", ""), 2: ("failed", "undecodable"), 3: ("failed", "empty_file"),
        4: ("failed", "unknown_format"), 5: ("rejected", "silent"), 6: ("failed", "not_found"),
        7: ("failed", "http_error"), 8: ("ok", ""), 9: ("ok", ""), 10: ("failed", "bad_source_line")}

    rejected = table(out, "rejected")
    source_rejects = [r for r in rejected if r["key"] is None]
    assert sorted(r["reason"] for r in source_rejects) == sorted(
        ["undecodable", "empty_file", "unknown_format", "silent", "not_found", "http_error", "bad_source_line"])
    assert all(r["detail"] for r in rejected)  # each says why
    assert "404" in next(r["detail"] for r in rejected if r["reason"] == "http_error")

    manifest = table(out, "manifest")
    ok_ids = {r["source_id"] for r in rows.values() if r["status"] == "ok"}
    assert {m["source_id"] for m in manifest} == ok_ids
    # the stereo 48 kHz MP3 and the downloaded copy give the same clips as the WAV
    per_source = Counter(m["source_id"] for m in manifest)
    assert len(set(per_source.values())) == 1
    assert report["sources"] == {"total": 10, "ok": 3, "failed": 6, "rejected": 1, "deferred": 0}
    assert not (out / "_staging").exists() or not list((out / "_staging").iterdir())  # staged copies cleaned
    assert not (out / "_work").exists() or not list((out / "_work").iterdir())


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, tiny_model, speech):
    """One corpus from the synthesised recordings plus the shared real speech."""
    d = tmp_path_factory.mktemp("e2e")
    lines = [speech["a"][1], speech["b"][1]]
    if have_shared_speech():
        lines += [copy_shared(n, d) for n in ("jfk.flac", "lj_1.wav", "multilingual.mp3", "stereo_diarization.wav")]
    sources = write_sources(d / "sources.txt", lines)
    out = d / "corpus"
    args = ["--sources", sources, *permissive(tiny_model), "--samples_per_shard", "3"]
    report = run([*args, "--output", str(out)])
    return {"dir": d, "out": out, "args": args, "report": report, "sources": sources}


def test_shards_and_manifest_agree(e2e):
    out = e2e["out"]
    samples = read_shards(out)
    manifest = table(out, "manifest")
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) and len(keys) >= 8
    assert set(keys) == {m["key"] for m in manifest} and len(manifest) == len(keys)
    by_key = {m["key"]: m for m in manifest}
    shard_of = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            shard_of[s["__key__"]] = tar.stem
    assert all(by_key[k]["shard"] == shard_of[k] for k in keys)
    assert max(Counter(shard_of.values()).values()) <= 3
    for s in samples:
        m = by_key[s["__key__"]]
        audio, sr = decode_flac(s["flac"])
        meta = json.loads(s["json"])
        assert sr == 22050 and audio.ndim == 1
        assert abs(len(audio) / sr - m["duration_s"]) < 0.002
        assert 4.0 - 0.01 <= m["duration_s"] <= 20.0 + 0.01
        assert s["txt"].decode() == m["text"] == meta["text"]
        assert meta["source_id"] == m["source_id"] and meta["speaker"] == m["speaker"]
        assert m["asr_model"] and 0.0 <= m["confidence"] <= 1.0


def test_no_clip_boundary_inside_a_sentence(e2e, speech):
    out = e2e["out"]
    manifest, rejected = table(out, "manifest"), table(out, "rejected")
    uris = {r["uri"]: r["source_id"] for r in table(out, "sources")}
    for name in ("a", "b"):
        rec, path = speech[name]
        sid = uris["file://" + path]
        clips = [(m["start_s"], m["end_s"]) for m in manifest if m["source_id"] == sid]
        for r in rejected:
            if r["source_id"] == sid and r["key"]:
                start = int(r["key"].rsplit("_", 1)[1]) / 1000
                clips.append((start, start + r["duration_s"]))
        assert clips, name
        for start, end in clips:
            for s, e in rec.spans:
                assert not (s < start < e) and not (s < end < e), (name, start, end, s, e)
        # and every sentence is inside exactly one kept clip
        kept = [(m["start_s"], m["end_s"]) for m in manifest if m["source_id"] == sid]
        for s, e in rec.spans:
            assert sum(1 for a, b in kept if a <= s and e <= b) == 1, (name, s, e, kept)


def test_quiet_long_recording_is_split_by_its_own_level(e2e, speech):
    manifest = table(e2e["out"], "manifest")
    uris = {r["uri"]: r["source_id"] for r in table(e2e["out"], "sources")}
    rec, path = speech["b"]
    clips = sorted((m["start_s"], m["end_s"]) for m in manifest if m["source_id"] == uris["file://" + path])
    # 35 dB quieter than the other recording, it is still speech; its first ~25 s have only short
    # pauses, so they must have been cut at a quiet point to stay under 20 s
    assert len(clips) >= 2 and all(e - s <= 20.0 for s, e in clips)
    assert clips[0][0] < rec.spans[0][0] and clips[-1][1] > rec.spans[-1][1]


def test_accounting_and_report(e2e):
    out = e2e["out"]
    sources, manifest, rejected = table(out, "sources"), table(out, "manifest"), table(out, "rejected")
    for s in sources:
        kept = sum(1 for m in manifest if m["source_id"] == s["source_id"])
        rej = sum(1 for r in rejected if r["source_id"] == s["source_id"] and r["key"])
        assert s["status"] == "ok" and s["n_segments"] == kept + rej
    report = json.loads((out / "report.json").read_text())
    assert report == e2e["report"]
    assert report["kept"] == len(manifest)
    assert abs(report["hours_kept"] - sum(m["duration_s"] for m in manifest) / 3600) < 1e-3
    assert abs(report["hours_in"] - sum(s["duration_s"] for s in sources) / 3600) < 1e-3
    [run_file] = list((out / "runs").glob("*.json"))
    run_info = json.loads(run_file.read_text())
    assert 0.0 <= run_info["asr_padding_fraction"] < 0.5 and run_info["kept"] == len(manifest)


def test_rerun_adds_nothing_and_changes_no_byte(e2e):
    out = e2e["out"]
    before = file_digests(out)
    report = run([*e2e["args"], "--output", str(out)])
    assert file_digests(out) == before
    assert report == e2e["report"]


def test_multiprocessing_workers_give_identical_shards_and_the_cli_speaks_for_itself(e2e):
    """Worker processes make the same shards as one process; and what the command prints is the
    user's: no library log line, from the driver or from a worker, and a missing file named once."""
    out2 = e2e["dir"] / "corpus_mp"
    lines = Path(e2e["sources"]).read_text().splitlines()
    sources = write_sources(e2e["dir"] / "with_missing.txt", [*lines, e2e["dir"] / "missing.wav"])
    args = [sources if a == e2e["sources"] else a for a in e2e["args"]]
    res = subprocess.run([sys.executable, "-m", "pipelines.build_corpus", *map(str, args), "--output", str(out2),
                          "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    # the manifests hold every clip's scores (SNR, bandwidth, speech ratio, ...): they too come out the same
    a = {k: v for k, v in file_digests(e2e["out"]).items() if k.startswith(("shards/", "manifest/"))}
    b = {k: v for k, v in file_digests(out2).items() if k.startswith(("shards/", "manifest/"))}
    assert a and a == b
    printed = res.stderr.splitlines()
    assert not [l for l in printed if l.startswith(("INFO:", "WARNING:", "Loading weights"))], printed
    assert all(l.startswith(("[speechmill", " ")) for l in printed if l.strip()), printed
    assert any(f"with_missing.txt:{len(lines) + 1}" in l and "missing.wav" in l and "not_found" in l for l in printed)
    # periodic progress lines come as often as the run takes (more on a loaded machine); the rest is short
    assert len([l for l in printed if not l.startswith("[speechmill] progress:")]) < 40


def test_new_sources_are_added_after_existing_shards(tmp_path, tiny_model, speech, built_corpus):
    out = copy_corpus(built_corpus("a", "--samples_per_shard", "2"), tmp_path / "corpus")
    base = [*permissive(tiny_model), "--output", str(out), "--samples_per_shard", "2"]
    first = file_digests(out / "shards")
    run(["--sources", write_sources(tmp_path / "two.txt", [speech["a"][1], speech["b"][1]]), *base])
    second = file_digests(out / "shards")
    assert all(second[k] == v for k, v in first.items())  # earlier shards untouched
    assert sorted(second) == [f"shard-{i:06d}.tar" for i in range(len(second))] and len(second) > len(first)
    keys = [s["__key__"] for s in read_shards(out)]
    assert len(keys) == len(set(keys)) == len(table(out, "manifest"))
    assert json.loads((out / "report.json").read_text())["sources"]["total"] == 2


def test_quality_rejections_are_recorded(tmp_path, tiny_model, speech):
    out = tmp_path / "corpus"
    report = run(["--sources", write_sources(tmp_path / "s.txt", [speech["a"][1]]), "--output", str(out),
                  "--asr_model", tiny_model, "--min_confidence", "1.0", "--min_chars_per_s", "0",
                  "--max_chars_per_s", "1000"])
    assert report["kept"] == 0 and not read_shards(out)
    reasons = {r["reason"] for r in table(out, "rejected")}
    assert reasons == {"low_confidence"}
    assert report["rejected_segments"] == table(out, "sources")[0]["n_segments"] > 0


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.build_corpus", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_help_and_clear_errors(tmp_path, tiny_model):
    h = cli("--help")
    assert h.returncode == 0
    for opt in ("--sources", "--output", "--asr_model", "--min_confidence", "--min_chars_per_s",
                "--max_chars_per_s", "--min_clip_s", "--max_clip_s", "--min_silence_ms",
                "--output_sample_rate", "--direct_running_mode"):
        assert opt in h.stdout
    missing = cli("--sources", str(tmp_path / "nope.txt"), "--output", str(tmp_path / "o"),
                  "--asr_model", tiny_model)
    assert missing.returncode == 2 and "sources file not found" in missing.stderr
    bad = cli("--sources", "x", "--output", "o", "--min_clip_s", "30", "--max_clip_s", "20")
    assert bad.returncode == 2 and "min_clip_s" in bad.stderr
    sources = tmp_path / "s.txt"  # the sources file is checked first: give one, to hear about the model
    sources.write_text(str(tmp_path / "a.wav") + "\n")
    no_model = cli("--sources", str(sources), "--output", "o", "--asr_model", str(tmp_path / "no-model"))
    assert no_model.returncode == 2 and "no-model" in no_model.stderr


def test_cli_run_shows_progress_and_summary(tmp_path, tiny_model, speech):
    import os
    sources = write_sources(tmp_path / "s.txt", [speech["a"][1], tmp_path / "missing.wav"])
    env = dict(os.environ, SPEECHMILL_PROGRESS_S="0")
    r = subprocess.run([sys.executable, "-m", "pipelines.build_corpus", "--sources", sources,
                        "--output", str(tmp_path / "c"), *permissive(tiny_model)],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    progress = [l for l in r.stderr.splitlines() if l.startswith("[speechmill pid")]
    assert any("1 ok" in l and "h decoded" in l for l in progress)
    assert any("kept" in l and "rejected" in l for l in progress)
    assert "hours in" in r.stderr and "hours kept" in r.stderr and "acquire/not_found" in r.stderr
    assert r.stderr.count("hours in") == 1  # one wave: its summary is the corpus's, printed once


def test_decoded_duration_over_the_limit_is_rejected(tmp_path, tiny_model, speech):
    out = tmp_path / "corpus"
    report = run(["--sources", write_sources(tmp_path / "s.txt", [speech["a"][1]]), "--output", str(out),
                  *permissive(tiny_model), "--max_duration_s", "10"])
    [row] = table(out, "sources")
    assert (row["status"], row["reason"]) == ("rejected", "too_long") and report["kept"] == 0
    assert "over --max_duration_s 10" in table(out, "rejected")[0]["detail"]
