"""Nothing lost, nothing doubled: crashes while publishing, two writers, decode bombs, inputs that
used to vanish, infrastructure failures and leftovers."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from audio.ffmpeg import DecodeError, DecodeLimits, classify_error, decode_to_file
from corpus import commit
from pipelines.build_corpus import run
from run.lock import OutputLock
from schemas.outcomes import retryable
from storage import fs
from tests.conftest import (
    ONLY_LOCALHOST,
    REPO,
    Route,
    copy_corpus,
    copy_shared,
    corpus_digests,
    ffmpeg,
    have_shared_speech,
    local_files,
    permissive,
    rss,
)
from tests.test_build_corpus import read_shards, table, write_sources

DAYS = [f"{d}, 0{i + 1} Jan 2024 08:00:00 GMT" for i, d in enumerate(["Mon", "Tue", "Wed", "Thu", "Fri"])]


def corpus_args(tmp_path, tiny_model, lines, out=None, *extra):
    out = out or tmp_path / "corpus"
    return ["--sources", write_sources(tmp_path / "s.txt", lines), "--output", str(out),
            *permissive(tiny_model), "--samples_per_shard", "2", *extra]


def keys_in_shards(out: Path) -> list:
    return [s["__key__"] for s in read_shards(out)]


def test_a_crash_while_publishing_is_finished_by_the_next_run(tmp_path, tiny_model, speech, monkeypatch,
                                                             built_corpus):
    lines = [speech["a"][1], speech["b"][1]]
    reference = built_corpus("ab", "--samples_per_shard", "3")  # uninterrupted (keys and sources: any shard size)
    expected = sorted(keys_in_shards(reference))

    out = tmp_path / "corpus"
    real_move, moves = fs.move, []

    def dying_move(src, dst):
        if len(moves) == 3:
            raise KeyboardInterrupt  # the process dies here: three files moved, the rest not
        moves.append(dst)
        real_move(src, dst)

    monkeypatch.setattr(fs, "move", dying_move)
    with pytest.raises(KeyboardInterrupt):
        run(corpus_args(tmp_path, tiny_model, lines, out))
    monkeypatch.setattr(fs, "move", real_move)
    assert list((out / "_journal").glob("*.json")) and not list((out / "runs").glob("*.json"))
    assert list((out / "shards").glob("*.tar"))  # some tars were visible without their run's record ...
    from run.state import CorpusState
    assert CorpusState.read(commit_layout(out)).done() == set()  # ... and nothing counts as done

    report = run(corpus_args(tmp_path, tiny_model, lines, out))  # finishes the commit, adds nothing
    keys = keys_in_shards(out)
    assert sorted(keys) == expected and len(keys) == len(set(keys)) == report["kept"]
    assert Counter(r["source_id"] for r in table(out, "sources")) == Counter(
        r["source_id"] for r in table(reference, "sources"))
    assert not (out / "_journal").exists() or not list((out / "_journal").iterdir())


def commit_layout(out):
    from corpus.layout import Layout
    return Layout(str(out))


def test_an_interrupted_commit_whose_files_are_gone_is_undone(tmp_path):
    root = tmp_path / "c"
    for d in ("_work/t1", "shards"):
        (root / d).mkdir(parents=True)
    (root / "_work" / "t1" / "shard-000000.tar").write_bytes(b"a")
    plan_moves = [(str(root / "_work" / "t1" / "shard-000000.tar"), str(root / "shards" / "shard-000000.tar")),
                  (str(root / "_work" / "t1" / "shard-000001.tar"), str(root / "shards" / "shard-000001.tar"))]
    fs.atomic_write_bytes(str(root / "_journal" / "t1.json"), json.dumps(
        {"run": "t1", "moves": plan_moves, "deletes": [], "record": {"run": "t1"}}).encode())
    fs.move(*plan_moves[0])
    done = commit.recover(str(root))
    assert done == {"finished": [], "undone": ["t1"]}
    assert not (root / "shards" / "shard-000000.tar").exists() and not (root / "runs" / "t1.json").exists()


def test_a_second_writer_is_refused_and_a_stale_lock_is_broken(tmp_path, tiny_model, speech, capsys):
    out = tmp_path / "corpus"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "_lock.json").write_text(json.dumps({"token": "x", "host": os.uname().nodename, "pid": holder.pid,
                                                    "command": "build_corpus", "started": time.time(),
                                                    "heartbeat": time.time()}))
        with pytest.raises(SystemExit) as e:
            run(corpus_args(tmp_path, tiny_model, [speech["a"][1]], out))
        assert e.value.code == 2
        assert f"another run is writing to {out}: pid {holder.pid}" in capsys.readouterr().err
        assert not (out / "shards").exists()
    finally:
        holder.kill()
        holder.wait()
    report = run(corpus_args(tmp_path, tiny_model, [speech["a"][1]], out))  # its holder is gone: stale
    assert report["kept"] > 0 and "breaking a stale lock" in capsys.readouterr().err
    assert not (out / "_lock.json").exists()


def test_two_runs_at_once_into_one_output(tmp_path, tiny_model, speech):
    out = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    args = corpus_args(tmp_path, tiny_model, [speech["a"][1], speech["b"][1]], out)
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.build_corpus", *args], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "another run is writing to" in loser and "Traceback" not in loser
    keys = keys_in_shards(out)
    assert keys and len(keys) == len(set(keys))


def test_the_lock_holds_on_an_object_store(tmp_path):
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import PipelineOptions

        from run.lock import LockedError
        from storage import object_store
        opts = PipelineOptions(["--s3_endpoint_url", endpoint, "--s3_access_key_id", "k", "--s3_secret_access_key",
                                "s", "--s3_region_name", "us-east-1"])
        FileSystems.set_options(opts)
        object_store.set_options(opts)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key="s").create_bucket(Bucket="corpora")
        first = OutputLock("s3://corpora/c1", "a").acquire()
        with pytest.raises(LockedError, match="another run is writing to s3://corpora/c1"):
            OutputLock("s3://corpora/c1", "b").acquire()
        first.release()
        OutputLock("s3://corpora/c1", "b").acquire().release()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def silent_hour(tmp_path_factory):
    """One hour of digital silence as FLAC: a few kB that decode to 160 MB at 22.05 kHz."""
    path = tmp_path_factory.mktemp("bomb") / "hour.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "3600", "-c:a", "flac", str(path))
    return path


def test_decode_bombs_are_bounded_while_decoding(silent_hour, tmp_path):
    assert silent_hour.stat().st_size < 2_000_000
    out = tmp_path / "pcm"
    with pytest.raises(DecodeError) as e:
        decode_to_file(str(silent_hour), str(out), 22050, limits=DecodeLimits(max_bytes=5_000_000))
    assert e.value.reason == "too_long" and "--max_scratch_gb" in e.value.detail
    assert out.stat().st_size < 5_100_000  # ffmpeg stopped at the limit, not after the hour
    with pytest.raises(DecodeError) as e:
        decode_to_file(str(silent_hour), str(out), 22050, limits=DecodeLimits(max_duration_s=60))
    assert e.value.reason == "too_long" and out.stat().st_size <= 2 * 22050 * 62


def dead(proc) -> bool:
    """Gone, or a zombie: killed, waiting for the machine's init (its new parent) to reap it."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_killed_worker_leaves_no_ffmpeg_and_no_scratch(silent_hour, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code = ("import sys; from audio.decoded import decode_to_scratch; "
            f"decode_to_scratch({str(silent_hour)!r}, 96000, scratch_dir={str(scratch)!r})")
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        child = None
        for _ in range(200):
            kids = psutil.Process(worker.pid).children()
            child = next((k for k in kids if "ffmpeg" in k.name()), None)
            if child:
                break
            time.sleep(0.05)
        assert child is not None
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        gone, alive = psutil.wait_procs([child], timeout=5)
        assert [p for p in alive if not dead(p)] == []
        assert list(scratch.iterdir()) == []
    finally:
        if worker.poll() is None:
            worker.kill()


def test_items_past_the_limit_are_deferred_and_taken_later(server, speech, tmp_path, tiny_model):
    wav = open(speech["a"][1], "rb").read()
    eps = [server.add(f"/ep{i}.wav", Route(wav + bytes([i]), headers={"Content-Type": "audio/wav"})) for i in range(5)]
    feed = server.add("/feed.xml", Route(gzip.compress(rss([(f"Ep {i}", f"g{i}", DAYS[i], eps[i], None)
                                                            for i in range(5)])),
                                         headers={"Content-Type": "application/rss+xml", "Content-Encoding": "gzip"}))
    args = corpus_args(tmp_path, tiny_model, [feed], None, "--max_items_per_source", "2",
                       "--allow_private_networks", ONLY_LOCALHOST)
    first = run(args)
    assert first["sources"] == {"total": 5, "ok": 2, "failed": 0, "rejected": 0, "deferred": 3}
    rows = table(tmp_path / "corpus", "rejected")
    assert sorted(r["reason"] for r in rows if r["key"] is None) == ["over_items_limit"] * 3
    run(args)
    third = run(args)
    assert third["sources"]["ok"] == 5 and third["sources"]["deferred"] == 0
    by_source = Counter(m["source_uri"] for m in table(tmp_path / "corpus", "manifest"))
    assert set(by_source) == set(eps) and len(set(by_source.values())) == 1


def test_odd_file_names_each_get_a_row(tmp_path, tiny_model, speech):
    folder = tmp_path / "odd[1]"
    folder.mkdir()
    wav = open(speech["a"][1], "rb").read()
    names = [b"caf\xe9.wav", b"q?x.wav", b"100%.wav", b"#1 intro.wav", b"tab\tname.wav"]
    for i, n in enumerate(names):
        (folder / os.fsdecode(n)).write_bytes(wav + bytes([i]))  # a name that is not UTF-8 among them
    out = tmp_path / "out[1]"
    report = run(corpus_args(tmp_path, tiny_model, [str(folder)], out))
    rows = table(out, "sources")
    assert len(rows) == len(names) and {r["status"] for r in rows} == {"ok"}
    assert report["sources"]["ok"] == len(names) and report["kept"] > 0
    assert len(list((out / "shards").glob("*.tar"))) == report["shards"] > 0  # a '[1]' in a path is not a glob
    assert all("%" in r["uri"] or "?" not in r["uri"] for r in rows)
    assert any(r["uri"].endswith("caf%E9.wav") for r in rows)


def test_csv_problems_stay_on_their_line(tmp_path, tiny_model, speech):
    huge = "x" * 300_000
    text = ("uri,title\n"
            f"{speech['a'][1]},first\n"
            f'"{speech["b"][1]},unclosed quote\n'
            f"{speech['b'][1]},third\n"
            f'"{huge},also unclosed\n')
    (tmp_path / "s.csv").write_text(text)
    out = tmp_path / "corpus"
    report = run(["--sources", str(tmp_path / "s.csv"), "--output", str(out), *permissive(tiny_model)])
    rows = {r["origin"]: r for r in table(out, "sources")}
    assert {o: (r["status"], r["reason"]) for o, r in rows.items()} == {
        "s.csv:2": ("ok", ""), "s.csv:3": ("failed", "bad_source_line"), "s.csv:4": ("ok", ""),
        "s.csv:5": ("failed", "bad_source_line")}
    assert report["sources"]["ok"] == 2


def test_a_csv_header_that_names_a_column_twice_is_refused(tmp_path, tiny_model, speech, capsys):
    (tmp_path / "s.csv").write_text(f"uri,title,uri\n{speech['a'][1]},t,/elsewhere.wav\n")
    with pytest.raises(SystemExit) as e:
        run(["--sources", str(tmp_path / "s.csv"), "--output", str(tmp_path / "c"), *permissive(tiny_model)])
    assert e.value.code == 2 and "names 'uri' more than once" in capsys.readouterr().err


def test_infrastructure_failures_are_retried(tmp_path, tiny_model, speech):
    out = tmp_path / "corpus"
    args = corpus_args(tmp_path, tiny_model, [speech["a"][1]], out)
    run(args + ["--decode_timeout_s", "0.001"])
    [row] = table(out, "sources")
    assert (row["status"], row["reason"], row["retryable"]) == ("failed", "decode_timeout", True)
    report = run(args)
    assert report["sources"]["ok"] == 1 and report["kept"] > 0
    assert classify_error("Error writing trailer: No space left on device")[0] == "scratch_full"
    assert retryable("scratch_full") and retryable("decode_timeout") and not retryable("undecodable")


def test_leftovers_of_dead_runs_are_cleaned(tmp_path, tiny_model, speech, built_corpus):
    out = copy_corpus(built_corpus("a", "--samples_per_shard", "2"), tmp_path / "corpus")
    leftovers = [out / "_work" / "deadbeef0000" / "packs" / "x.clips", out / "shards" / ".shard-000009.tar.tmp-abc",
                 out / "manifest" / ".m.parquet.tmp-1", out / "_staging" / ".dl-zzz" / "media.part",
                 out / "_staging" / ".http-1.mp3.tmp-9"]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"junk")
    (out / "report.json").unlink()
    run(corpus_args(tmp_path, tiny_model, [speech["a"][1], speech["b"][1]], out))
    assert not any(p.exists() for p in leftovers)
    assert not (out / "_work" / "deadbeef0000").exists()
    assert json.loads((out / "report.json").read_text())["sources"]["ok"] == 2


@pytest.mark.skipif(not have_shared_speech(), reason="needs ../shared/data/real_speech")
def test_a_dc_offset_does_not_hide_real_speech(tmp_path, tiny_model):
    x, sr = sf.read(str(copy_shared("jfk.flac", tmp_path)), dtype="float32")
    x = x.mean(axis=1) if x.ndim > 1 else x
    sf.write(str(tmp_path / "dc.wav"), np.clip(x * 0.7 + 0.2, -1, 1), sr, subtype="PCM_16")
    out = tmp_path / "corpus"
    # the 1961 broadcast stops at 5.2 kHz: the bandwidth gate is off, the offset is what is tested
    report = run(corpus_args(tmp_path, tiny_model, [tmp_path / "dc.wav"], out) + ["--min_bandwidth_hz", "none"])
    [row] = table(out, "sources")
    assert row["status"] == "ok" and report["kept"] >= 1


def test_reject_details_are_readable(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:d=1", str(tmp_path / "v.mp4"))
    with pytest.raises(DecodeError) as e:
        decode_to_file(str(tmp_path / "v.mp4"), str(tmp_path / "o.pcm"), 16000)
    assert e.value.reason == "no_audio_stream" and "no audio stream" in e.value.detail
    assert "trailing '?'" not in e.value.detail
    (tmp_path / "bad.flac").write_bytes(b"fLaC" + os.urandom(3000))
    with pytest.raises(DecodeError) as e:
        decode_to_file(str(tmp_path / "bad.flac"), str(tmp_path / "o.pcm"), 16000)
    assert e.value.detail and not e.value.detail.startswith("ffmpeg exit")


def test_waves_are_committed_as_they_finish_and_a_killed_run_carries_on(tmp_path, tiny_model, speech, bad_inputs):
    lines = [speech["a"][1], speech["b"][1], bad_inputs / "stereo48k.mp3", tmp_path / "missing.wav"]
    wave = ["--commit_every_hours", "0.002"]  # ≈ 7 s of estimated audio: every source is a wave of its own
    reference = tmp_path / "reference"
    run(corpus_args(tmp_path, tiny_model, lines, reference, *wave))
    assert len(list((reference / "runs").glob("*.json"))) == 4

    out = tmp_path / "corpus"
    args = corpus_args(tmp_path, tiny_model, lines, out, *wave)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.build_corpus", *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "wave 3 of 4" in line:  # two waves are published, the third is running
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list((out / "runs").glob("*.json"))) == 2 and len(keys_in_shards(out)) > 0
    run(args)  # carries on with waves 3 and 4
    assert corpus_digests(local_files(out)) == corpus_digests(local_files(reference))
    assert len(list((out / "runs").glob("*.json"))) == 4
    assert not (out / "_work").exists() or not list((out / "_work").iterdir())
