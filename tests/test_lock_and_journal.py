"""A lock is never taken from a live run, and only one run ever holds it; an interrupted commit never
touches files it did not write."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corpus import commit
from run.lock import LockedError, LockLost, OutputLock
from storage import fs

N_BREAKERS = 50
TRIALS = 3


def stale_lock_bytes(pid: int, host: str, heartbeat: float) -> bytes:
    return json.dumps({"token": "old", "host": host, "pid": pid, "command": "build_corpus",
                       "started": heartbeat - 5, "heartbeat": heartbeat}).encode()


@pytest.fixture()
def stalled_holder():
    """A live process on this host whose lock heartbeat is an hour old (stalled, or a laptop that slept)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_live_holder_with_an_old_heartbeat_keeps_its_lock(tmp_path, stalled_holder):
    root = tmp_path / "corpus"
    root.mkdir()
    lock_bytes = stale_lock_bytes(stalled_holder.pid, socket.gethostname(), time.time() - 3600)
    (root / "_lock.json").write_bytes(lock_bytes)
    with pytest.raises(LockedError, match=f"pid {stalled_holder.pid}"):
        OutputLock(str(root), "build_corpus", stale_after_s=600).acquire()
    assert (root / "_lock.json").read_bytes() == lock_bytes  # untouched
    stalled_holder.kill()
    stalled_holder.wait()
    OutputLock(str(root), "build_corpus").acquire().release()  # its process is gone: now it is stale


def test_a_run_that_lost_its_lock_writes_no_journal(tmp_path):
    root = tmp_path / "corpus"
    (root / "_work" / "a" / "shards").mkdir(parents=True)
    (root / "_work" / "a" / "shards" / "shard-000005.tar").write_bytes(b"run a")

    def lost():
        raise LockLost("taken over")

    with pytest.raises(LockLost):
        commit.commit(str(root), "a", [(str(root / "_work/a/shards/shard-000005.tar"),
                                        str(root / "shards/shard-000005.tar"))], {}, before_apply=lost)
    assert not list((root / "_journal").glob("*.json")) if (root / "_journal").exists() else True
    assert not (root / "shards").exists()


def test_a_lock_lost_while_the_journal_is_written_takes_the_journal_back(tmp_path):
    root = tmp_path / "corpus"
    (root / "_work" / "a").mkdir(parents=True)
    (root / "_work" / "a" / "shard-000005.tar").write_bytes(b"run a")
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise LockLost("taken over while the journal was written")

    with pytest.raises(LockLost):
        commit.commit(str(root), "a", [(str(root / "_work/a/shard-000005.tar"), str(root / "shards/shard-000005.tar"))],
                      {}, before_apply=check)
    assert len(calls) == 2 and not list((root / "_journal").glob("*.json"))


def _interrupted_commit(root: Path, monkeypatch) -> None:
    """Run ``a`` journals two shards and dies before moving them."""
    (root / "_work" / "a").mkdir(parents=True)
    for i in (5, 6):
        (root / "_work" / "a" / f"shard-00000{i}.tar").write_bytes(f"run a {i}".encode())

    def dies(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(fs, "move", dies)
    with pytest.raises(KeyboardInterrupt):
        commit.commit(str(root), "a", [(str(root / f"_work/a/shard-00000{i}.tar"), str(root / f"shards/shard-00000{i}.tar"))
                                       for i in (5, 6)], {})
    monkeypatch.undo()
    assert (root / "_journal" / "a.json").exists()


def test_undoing_a_commit_leaves_another_runs_files_alone(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    _interrupted_commit(root, monkeypatch)
    # run b took the lock, cleaned a's work area and published shards with the same names
    for i in (5, 6):
        (root / "_work" / "a" / f"shard-00000{i}.tar").unlink()
        (root / "shards").mkdir(exist_ok=True)
        (root / "shards" / f"shard-00000{i}.tar").write_bytes(f"run b {i}".encode())
    assert commit.recover(str(root)) == {"finished": [], "undone": ["a"]}
    assert [(root / "shards" / f"shard-00000{i}.tar").read_bytes() for i in (5, 6)] == [b"run b 5", b"run b 6"]


def test_finishing_a_commit_never_overwrites_another_runs_files(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    _interrupted_commit(root, monkeypatch)
    (root / "shards").mkdir(exist_ok=True)
    (root / "shards" / "shard-000005.tar").write_bytes(b"run b 5")  # a's source is still there too
    assert commit.recover(str(root))["undone"] == ["a"]
    assert (root / "shards" / "shard-000005.tar").read_bytes() == b"run b 5"
    assert not (root / "runs" / "a.json").exists()


def test_an_interrupted_commit_of_our_own_is_finished(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    _interrupted_commit(root, monkeypatch)
    fs.move(str(root / "_work/a/shard-000005.tar"), str(root / "shards/shard-000005.tar"))  # one move was done
    assert commit.recover(str(root))["finished"] == ["a"]
    record = json.loads((root / "runs" / "a.json").read_text())
    assert sorted(record["checksums"]) == ["shards/shard-000005.tar", "shards/shard-000006.tar"]
    assert (root / "shards" / "shard-000006.tar").read_bytes() == b"run a 6"


def _breaker(root: str, barrier, results) -> None:
    barrier.wait()
    try:
        lock = OutputLock(root, "breaker", stale_after_s=600).acquire()
    except LockedError:
        results.put("refused")
        return
    results.put(lock.token)
    barrier.wait()  # hold the lock until every breaker has tried
    lock.release()


def test_many_processes_breaking_one_stale_lock_give_one_holder(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    ctx = multiprocessing.get_context("fork")
    for trial in range(TRIALS):
        (root / "_lock.json").write_bytes(stale_lock_bytes(12345, "another-host", time.time() - 3600))
        barrier, results = ctx.Barrier(N_BREAKERS), ctx.Queue()
        procs = [ctx.Process(target=_breaker, args=(str(root), barrier, results)) for _ in range(N_BREAKERS)]
        for p in procs:
            p.start()
        got = [results.get(timeout=900) for _ in procs]  # a bound for a loaded machine, not a measurement
        holders = [g for g in got if g != "refused"]
        assert len(holders) == 1, f"trial {trial}: {len(holders)} holders"
        barrier.abort()  # let the holder go
        for p in procs:
            p.join(timeout=60)
        assert not (root / "_lock.json").exists() or json.loads((root / "_lock.json").read_text())["token"] == holders[0]


def test_many_breakers_on_an_object_store_give_one_holder(s3):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from storage import object_store
    client, options = s3
    opts = PipelineOptions(options)
    FileSystems.set_options(opts)
    object_store.set_options(opts)
    root = "s3://talks/corpus"
    client.put_object(Bucket="talks", Key="corpus/_lock.json",
                      Body=stale_lock_bytes(12345, "another-host", time.time() - 3600))
    barrier = threading.Barrier(N_BREAKERS)
    holders, refused, errors = [], [], []

    def breaker():
        barrier.wait()
        try:
            holders.append(OutputLock(root, "breaker", stale_after_s=600).acquire())
        except LockedError:
            refused.append(1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=breaker) for _ in range(N_BREAKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(holders) == 1 and len(refused) == N_BREAKERS - 1
    stored = json.loads(client.get_object(Bucket="talks", Key="corpus/_lock.json")["Body"].read())
    assert stored["token"] == holders[0].token
    holders[0].release()


def test_a_stalled_build_loses_nothing(tmp_path, tiny_model, speech, stalled_holder, capsys):
    from pipelines.build_corpus import run
    from tests.conftest import permissive
    from tests.test_build_corpus import write_sources
    out = tmp_path / "corpus"
    args = ["--sources", write_sources(tmp_path / "s.txt", [speech["a"][1]]), "--output", str(out),
            *permissive(tiny_model), "--speakers", "off"]
    run(args)
    runs_before = sorted(p.name for p in (out / "runs").glob("*.json"))
    shards_before = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    (out / "_lock.json").write_bytes(stale_lock_bytes(stalled_holder.pid, socket.gethostname(), time.time() - 3600))
    for argv in (args, [*args, "--redo", "all"]):
        with pytest.raises(SystemExit) as e:
            run(argv)
        assert e.value.code == 2
    assert f"pid {stalled_holder.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == runs_before
    assert {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")} == shards_before
    assert not (out / "_journal").exists() or not list((out / "_journal").iterdir())
    assert os.path.exists(out / "_lock.json")  # still the stalled run's


def test_a_breaker_that_read_the_stale_lock_before_another_broke_it_does_not_take_it(tmp_path):
    """The interleaving that gave two holders: B reads the stale lock, A breaks it and holds it, then B
    replaces what it read. The replace is conditional on the bytes B read, so it fails."""
    root = tmp_path / "corpus"
    root.mkdir()
    path = root / "_lock.json"
    stale = stale_lock_bytes(12345, "another-host", time.time() - 3600)
    path.write_bytes(stale)
    read_by_b = path.read_bytes()
    a = OutputLock(str(root), "a").acquire()
    assert not fs.replace_if_same(str(path), read_by_b, b'{"token": "b"}')
    assert json.loads(path.read_bytes())["token"] == a.token
    a.release()
