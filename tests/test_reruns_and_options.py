"""How the build behaves for a user: reruns that retry, settings a corpus holds to, moved folders,
compaction, Ctrl-C, options that are checked before any work, and output worth reading."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import webdataset as wds

from corpus.layout import Layout
from pipelines.build_corpus import run
from pipelines.compact import compact
from run.state import CorpusState
from tests.conftest import ONLY_LOCALHOST, REPO, Route, copy_corpus, permissive
from tests.test_build_corpus import read_shards, table, write_sources

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipelines.build_corpus", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def refused(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        run([str(a) for a in argv])
    assert e.value.code == 2
    return capsys.readouterr().err


def test_new_thresholds_are_refused_until_redo_says_what_to_reprocess(tmp_path, tiny_model, speech, capsys):
    out = tmp_path / "corpus"
    sources = write_sources(tmp_path / "s.txt", [speech["a"][1], speech["b"][1]])
    strict = run(["--sources", sources, "--output", str(out), "--asr_model", tiny_model])
    assert strict["kept"] == 0 and strict["rejected_segments"] > 0  # the random model's text fails the defaults
    capsys.readouterr()

    err = refused(capsys, "--sources", sources, "--output", out, *permissive(tiny_model))
    assert "--min_confidence 0 (corpus: 0.6)" in err and "--max_chars_per_s 1000 (corpus: 25)" in err
    assert "--redo" in err and "new --output" in err and "Traceback" not in err

    reasons = {r["reason"] for r in table(out, "rejected")}
    redo = run(["--sources", sources, "--output", str(out), *permissive(tiny_model),
                "--redo", ",".join(f"reason:{r}" for r in sorted(reasons))])
    assert redo["kept"] > 0 and redo["sources"]["ok"] == 2
    again = run(["--sources", sources, "--output", str(out), *permissive(tiny_model)])
    assert again == redo and "nothing to do" in capsys.readouterr().err


def test_redo_replaces_a_sources_samples_without_duplicates(tmp_path, tiny_model, speech, built_corpus):
    out = copy_corpus(built_corpus("ab", "--samples_per_shard", "3"), tmp_path / "corpus")
    sources = write_sources(tmp_path / "s.txt", [speech["a"][1], speech["b"][1]])
    base = ["--sources", sources, "--output", str(out), *permissive(tiny_model), "--samples_per_shard", "3"]
    first = json.loads((out / "report.json").read_text())
    keys = sorted(s["__key__"] for s in read_shards(out))
    changed = run(base[:-6] + ["--asr_model", tiny_model, "--min_confidence", "0", "--min_chars_per_s", "0",
                              "--max_chars_per_s", "999", "--samples_per_shard", "3", "--redo", "all"])
    after = [s["__key__"] for s in read_shards(out)]
    assert sorted(after) == keys and len(after) == len(set(after)) == changed["kept"] == first["kept"]
    manifest = table(out, "manifest")
    assert sorted(m["key"] for m in manifest) == keys
    for tar in (out / "shards").glob("*.tar"):  # manifests and shards agree after the rewrite
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            assert next(m["shard"] for m in manifest if m["key"] == s["__key__"]) == tar.stem


def test_redo_selectors(tmp_path, tiny_model, speech, bad_inputs):
    out = tmp_path / "corpus"
    lines = [speech["a"][1], bad_inputs / "corrupt.flac", bad_inputs / "silence.wav", tmp_path / "missing.wav"]
    run(["--sources", write_sources(tmp_path / "s.txt", lines), "--output", str(out), *permissive(tiny_model)])
    state = CorpusState.read(Layout(str(out)))
    by_reason = {r["reason"]: r["source_id"] for r in state.rows}
    assert state.select(["failed"]) == {by_reason["undecodable"], by_reason["not_found"]}
    assert state.select(["rejected"]) == {by_reason["silent"]}
    assert state.select(["reason:undecodable"]) == {by_reason["undecodable"]}
    assert state.select(["all"]) == set(by_reason.values())
    with pytest.raises(ValueError, match="no source of the corpus matches"):
        state.select(["reason:no_such_reason"])
    # final failures are skipped by a plain rerun, retried on request
    assert by_reason["undecodable"] in state.done() and by_reason["not_found"] not in state.done()


def test_world_and_setting_failures_are_retried(tmp_path, tiny_model, speech, server):
    out = tmp_path / "corpus"
    late = tmp_path / "late.wav"
    url = server.add("/talk.wav", Route(open(speech["a"][1], "rb").read(), headers={"Content-Type": "audio/wav"}))
    sources = write_sources(tmp_path / "s.txt", [late, url])
    first = run(["--sources", sources, "--output", str(out), *permissive(tiny_model)])
    assert first["sources"]["failed"] == 2
    reasons = sorted(r["reason"] for r in table(out, "sources"))
    assert reasons == ["not_found", "private_address"]
    shutil.copy(speech["b"][1], late)  # the file appears; the user follows the error's advice
    second = run(["--sources", sources, "--output", str(out), *permissive(tiny_model),
                  "--allow_private_networks", ONLY_LOCALHOST])
    assert second["sources"] == {"total": 2, "ok": 2, "failed": 0, "rejected": 0, "deferred": 0}
    assert second["kept"] > 0


def test_a_moved_folder_is_the_same_sources(tmp_path, tiny_model, speech):
    data = tmp_path / "mnt1" / "books"
    data.mkdir(parents=True)
    shutil.copy(speech["a"][1], data / "ch1.wav")
    shutil.copy(speech["b"][1], data / "ch2.wav")
    out = tmp_path / "corpus"
    first = run(["--sources", str(data), "--output", str(out), *permissive(tiny_model)])
    moved = tmp_path / "mnt2" / "library" / "books"
    moved.parent.mkdir(parents=True)
    shutil.move(str(data), str(moved))
    (moved / "ch1.wav").rename(moved / "chapter-one.wav")
    again = run(["--sources", str(moved), "--output", str(out), *permissive(tiny_model)])
    assert again["kept"] == first["kept"] and again["sources"]["total"] == 2
    keys = [s["__key__"] for s in read_shards(out)]
    assert len(keys) == len(set(keys)) == first["kept"]


def test_compaction_merges_partial_shards_atomically(tmp_path, tiny_model, bad_inputs, built_corpus):
    options = ["--samples_per_shard", "8", "--speakers", "off"]
    out = copy_corpus(built_corpus("ab", *options, one_run_each=True), tmp_path / "corpus")  # two runs
    run(["--sources", write_sources(tmp_path / "s2.txt", [bad_inputs / "stereo48k.mp3"]), "--output", str(out),
         *permissive(tiny_model), *options])  # and a third
    before = sorted(s["__key__"] for s in read_shards(out))
    n_before = len(list((out / "shards").glob("*.tar")))
    sizes = Counter(m["shard"] for m in table(out, "manifest"))
    assert sum(1 for n in sizes.values() if n < 8) >= 2
    result = compact(str(out))
    after = read_shards(out)
    assert sorted(s["__key__"] for s in after) == before
    assert len(list((out / "shards").glob("*.tar"))) < n_before
    sizes_after = Counter(m["shard"] for m in table(out, "manifest"))
    assert sum(1 for n in sizes_after.values() if n < 8) <= 1 and result["new_shards"]
    import json
    for s in after:  # each sample's own metadata names the shard it is in now
        assert json.loads(s["json"])["shard"] in sizes_after
    assert compact(str(out))["new_shards"] == []  # nothing left to merge
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == len(before) and report["shards"] == len(sizes_after)
    assert subprocess.run([sys.executable, "-m", "pipelines.compact", "--help"], cwd=REPO, env=ENV,
                          capture_output=True, text=True).returncode == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped one, on purpose
def test_ctrl_c_swallowed_by_a_finalizer_is_raised_again():
    """Python drops an exception raised in a ``__del__`` (or a weakref callback): a Ctrl-C landing
    there must still stop the run."""
    from pipelines.build_corpus import _Interrupt

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the finalizer

    interrupt = _Interrupt()
    previous = signal.signal(signal.SIGINT, interrupt)
    caught = False
    try:
        try:
            Finalized()  # collected at once: the KeyboardInterrupt it raises is dropped
            assert interrupt.seen
            for _ in range(6000):  # until the interrupt is raised again (no clock in the verdict)
                time.sleep(0.01)
        except KeyboardInterrupt:
            caught = True
    finally:
        interrupt.taken()
        signal.signal(signal.SIGINT, previous)
    assert caught


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, tiny_model, speech, server):
    body = open(speech["a"][1], "rb").read()
    slow = server.add("/slow.wav", Route(body[:2000], headers={"Content-Type": "audio/wav"}, trickle_s=0.02))
    out = tmp_path / "corpus"
    sources = write_sources(tmp_path / "s.txt", [speech["a"][1], slow])
    args = ["--sources", sources, "--output", out, *permissive(tiny_model), "--allow_private_networks", ONLY_LOCALHOST]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.build_corpus", *map(str, args)], cwd=REPO, env=ENV,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "writing to" in line:
            break
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
    rest = proc.stderr.read().splitlines()
    assert proc.wait(timeout=60) == 130
    rest = [l for l in rest if not l.startswith(("[speechmill pid", "[speechmill] progress:"))]  # progress may still come
    assert len(rest) == 1 and rest[0].startswith("[speechmill] interrupted"), rest
    assert not (out / "_lock.json").exists() and not list((out / "shards").glob("*.tar"))
    server.routes["/slow.wav"] = Route(body, headers={"Content-Type": "audio/wav"})  # the server recovers
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and len(list((out / "shards").glob("*.tar"))) > 0


@pytest.mark.parametrize("bad,expect", [
    (["--sampels_per_shard", "5"], "unknown option --sampels_per_shard; did you mean --samples_per_shard?"),
    (["--min_clip", "3"], "unknown option --min_clip"),
    (["--samples_per_shard", "-1"], "--samples_per_shard must be >= 1"),
    (["--output_sample_rate", "0"], "--output_sample_rate must be 8000..192000"),
    (["--asr_batch_seconds", "-1"], "--asr_batch_seconds (-1) must be at least --max_clip_s"),
    (["--asr_batch_seconds", "5"], "--asr_batch_seconds (5) must be at least --max_clip_s (20)"),
    (["--decode_timeout_s", "-1"], "--decode_timeout_s must be > 0"),
    (["--download_timeout_s", "0"], "--download_timeout_s must be > 0"),
    (["--max_scratch_gb", "0"], "--max_scratch_gb must be at least"),
    (["--asr_tokenizer", "/nonexistent/tok"], "cannot load ASR tokenizer '/nonexistent/tok'"),
    (["--asr_feature_extractor", "/nonexistent/fe"], "cannot load ASR feature extractor"),
    (["--output", "/proc/x"], "--output /proc/x: cannot"),
    (["--shard_prefix", "a.b"], "--shard_prefix 'a.b'"),
    (["--speaker_link_similarity", "1.5"], "--speaker_link_similarity must be within 0..1, got 1.5"),
    (["--voice_change_evidence_s", "-1"], "--voice_change_evidence_s must be >= 0"),
    (["--speaker_precision", "float16"], "--speaker_precision: invalid choice: 'float16'"),
])
def test_bad_options_fail_before_any_work(tmp_path, tiny_model, speech, capsys, bad, expect):
    out = tmp_path / "corpus"
    argv = ["--sources", write_sources(tmp_path / "s.txt", [speech["a"][1]]), "--output", str(out),
            *permissive(tiny_model), *bad]
    err = refused(capsys, *argv)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and expect in lines[0], err
    assert not (out / "_work").exists()


def test_beam_options_still_pass_and_folders_are_sources(tmp_path, tiny_model, speech):
    folder = tmp_path / "audio"
    folder.mkdir()
    shutil.copy(speech["a"][1], folder / "a.wav")
    report = run(["--sources", str(folder), "--output", str(tmp_path / "corpus"), *permissive(tiny_model),
                  "--direct_num_workers", "1", "--runner", "DirectRunner"])
    assert report["sources"]["ok"] == 1 and report["kept"] > 0


def test_object_store_without_credentials_fails_fast(tmp_path, tiny_model, speech, monkeypatch, capsys):
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        err = refused(capsys, "--sources", write_sources(tmp_path / "s.txt", [speech["a"][1]]),
                      "--output", "s3://corpora/c1", *permissive(tiny_model),
                      "--s3_endpoint_url", f"http://{host}:{port}", "--s3_region_name", "us-east-1")
        assert "listing the items" not in err  # refused before any work, not after retries
        assert "AWS_ACCESS_KEY_ID" in err and "--s3_access_key_id" in err and "Traceback" not in err
    finally:
        server.stop()


def test_verbose_shows_the_libraries_log_lines(tmp_path, tiny_model, speech):
    """Without ``--verbose`` every printed line is speechmill's (checked with worker processes in
    test_build_corpus); with it the libraries' own log lines come through as well."""
    sources = write_sources(tmp_path / "s.txt", [speech["a"][1]])
    verbose = cli("--sources", sources, "--output", tmp_path / "c", *permissive(tiny_model), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert [l for l in verbose.stderr.splitlines() if l.strip() and not l.startswith(("[speechmill", " "))]


def test_no_speech_is_final_and_a_rerun_with_nothing_to_do_writes_no_record(tmp_path, tiny_model, capsys):
    import soundfile as sf

    from audio.synth import music
    path = tmp_path / "music.wav"
    sf.write(str(path), music(25, seed=3), 22050)
    out = tmp_path / "corpus"
    args = ["--sources", write_sources(tmp_path / "s.txt", [path]), "--output", str(out), *permissive(tiny_model)]
    run(args)
    [row] = table(out, "sources")
    assert (row["status"], row["reason"]) == ("rejected", "no_speech")
    records = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert len(records) == 1
    capsys.readouterr()
    run(args)  # a verdict on the content itself: nothing is decoded again, no new run record
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == records
    assert "0 to process" in capsys.readouterr().err
    assert len(table(out, "sources")) == 1


def test_a_missing_sources_file_comes_first_and_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "new" / "corpus"
    err = refused(capsys, "--sources", tmp_path / "nope.txt", "--output", out,
                  "--asr_model", tmp_path / "no-such-model")
    assert "nope.txt" in err and "no-such-model" not in err
    assert not (tmp_path / "new").exists()


def test_a_refused_run_leaves_no_empty_output_folder(tmp_path, capsys):
    sources = write_sources(tmp_path / "s.txt", [tmp_path / "a.wav"])
    out = tmp_path / "corpus"
    err = refused(capsys, "--sources", sources, "--output", out, "--asr_model", tmp_path / "no-such-model")
    assert "no-such-model" in err and not out.exists()


def test_the_terminal_summary_shows_what_to_do_about_a_failed_source(capsys):
    import pyarrow as pa

    from corpus.summary import summarise
    from run.console import print_summary
    sources = [{"source_id": "s1", "uri": "http://10.0.0.7/a.mp3", "origin": "s.txt:1", "status": "failed",
                "reason": "private_address", "retryable": True, "duration_s": 0.0, "n_segments": 0}]
    rejected = [{"source_id": "s1", "key": None, "stage": "acquire", "reason": "private_address",
                 "detail": "10.0.0.7 resolves to 10.0.0.7, a non-public address (pass --allow_private_networks "
                           "to allow it)", "duration_s": 0.0}]
    manifest = pa.table({"key": pa.array([], pa.string()), "duration_s": pa.array([], pa.float64())})
    print_summary("corpus", summarise(sources, manifest, rejected, 0))
    err = capsys.readouterr().err
    assert "private_address" in err and "--allow_private_networks" in err


def test_a_stricter_gate_needs_every_source_again(tmp_path, tiny_model, speech, capsys, built_corpus):
    out = copy_corpus(built_corpus("ab", "--samples_per_shard", "3"), tmp_path / "corpus")
    base = ["--sources", write_sources(tmp_path / "s.txt", [speech["a"][1], speech["b"][1]]), "--output", str(out),
            *permissive(tiny_model), "--samples_per_shard", "3"]
    first = json.loads((out / "report.json").read_text())
    assert first["kept"] > 0
    capsys.readouterr()
    err = refused(capsys, *base, "--min_snr_db", "200", "--redo", "reason:noisy")
    assert "--min_snr_db" in err and "--redo all" in err  # kept clips were judged with 15 dB
    stricter = run([*base, "--min_snr_db", "200", "--redo", "all"])
    assert stricter["kept"] == 0 and all(m["snr_db"] >= 200 for m in table(out, "manifest"))
    assert stricter["rejects_by_reason"]["quality/noisy"]["count"] >= first["kept"]
    # looser again: only the sources with noisy rejects come back, and saying so is enough
    looser = run([*base, "--redo", "reason:noisy"])
    assert looser["kept"] == first["kept"]
