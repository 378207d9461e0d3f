"""A corpus is untrusted input: tampered journals, links, keys, shard names and run tags are refused by
every command that opens an output, and nothing outside the corpus is read, written, moved or deleted."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import compact as compact_cli
from pipelines import export_lhotse as export_cli
from pipelines import report as report_cli
from pipelines import verify as verify_cli
from pipelines.build_corpus import run
from tests.conftest import REPO, permissive
from tts.training.data import expand_urls


@pytest.fixture(scope="module")
def built(built_corpus, tiny_model):
    """Two runs, each leaving a partial shard (so compaction has work); built once, copied per case."""
    out = built_corpus("ab", "--samples_per_shard", "8", "--speakers", "off", one_run_each=True)
    return {"out": out, "sources": [str(out.parent / f"s{i}.txt") for i in range(2)], "model": tiny_model}


def digests(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() and not p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def tar_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture()
def case(tmp_path, built):
    """(a copy of the built corpus, a sentinel folder beside it that must come out byte-identical)."""
    out = tmp_path / "corpus"
    shutil.copytree(built["out"], out, symlinks=True)
    sentinel = tmp_path / "sentinel"
    (sentinel / "sub" / "deeper").mkdir(parents=True)
    (sentinel / "victim.json").write_text('{"mine": true}')
    (sentinel / "notes.txt").write_text("the user's own file")
    (sentinel / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (sentinel / "sub" / "deeper" / "c.txt").write_text("deep")
    (sentinel / "shard-000099.tar").write_bytes(tar_bytes({"foreign_000000001.flac": b"fLaC", "foreign_000000001.json": b"{}"}))
    (sentinel / ".dl-x").write_text("a staged download of someone else")
    before = digests(sentinel)
    yield out, sentinel
    assert digests(sentinel) == before, "a command changed files outside the corpus"


def reseal(out: Path) -> None:
    """Make the run records' checksums agree with the (tampered) files, as a careful tamperer would."""
    for rec_path in (out / "runs").glob("*.json"):
        rec = json.loads(rec_path.read_text())
        for rel in rec.get("checksums", {}):
            p = out / rel
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                rec["checksums"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        rec_path.write_text(json.dumps(rec))


def rewrite_manifest(out: Path, change) -> Path:
    part = sorted((out / "manifest").glob("*.parquet"))[0]
    rows = pq.read_table(part).to_pylist()
    change(rows[0])
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(part)), part)
    reseal(out)
    return part


def a_tag(out: Path) -> str:
    return sorted(p.stem for p in (out / "runs").glob("*.json"))[0]


def journal_deletes_outside(out, sentinel):
    (out / "_journal").mkdir(exist_ok=True)
    (out / "_journal" / "t1.json").write_text(json.dumps(
        {"run": "t1", "moves": [], "deletes": [str(sentinel / "notes.txt")], "record": {"run": "t1"}}))


def journal_moves_outside(out, sentinel):
    (out / "_journal").mkdir(exist_ok=True)
    (out / "_journal" / "t2.json").write_text(json.dumps(
        {"run": "t2", "moves": [[str(sentinel / "sub" / "b.bin"), str(out / "shards" / "shard-000050.tar")],
                                [str(out / "_work" / "t2" / "x.tar"), str(sentinel / "notes.txt")]],
         "deletes": [], "record": {"run": "t2"}}))
    (out / "_work" / "t2").mkdir(parents=True)
    (out / "_work" / "t2" / "x.tar").write_bytes(b"overwrites the user's file")


def journal_run_tag_escapes(out, sentinel):
    (out / "_journal").mkdir(exist_ok=True)
    (out / "_journal" / "victim.json").write_text(json.dumps(
        {"run": "../../sentinel/victim", "deletes": [], "record": {"run": "../../sentinel/victim"},
         "moves": [[str(out / "_work" / "gone" / "shard-000070.tar"), str(out / "shards" / "shard-000070.tar")]]}))


def report_audio_links_outside(out, sentinel):
    shutil.rmtree(out / "report_audio", ignore_errors=True)
    (out / "report_audio").symlink_to(sentinel, target_is_directory=True)


def work_links_outside(out, sentinel):
    shutil.rmtree(out / "_work", ignore_errors=True)
    (out / "_work").symlink_to(sentinel, target_is_directory=True)


def staging_links_outside(out, sentinel):
    shutil.rmtree(out / "_staging", ignore_errors=True)
    (out / "_staging").symlink_to(sentinel, target_is_directory=True)


def shard_links_outside(out, sentinel):
    shard = sorted((out / "shards").glob("*.tar"))[0]
    shard.unlink()
    shard.symlink_to(sentinel / "shard-000099.tar")


def key_escapes(out, sentinel):
    rewrite_manifest(out, lambda r: r.update(key="../../../sentinel/notes"))


def manifest_shard_escapes(out, sentinel):
    rewrite_manifest(out, lambda r: r.update(shard="../../sentinel/shard-000099"))


def run_record_shard_escapes(out, sentinel):
    rec_path = out / "runs" / f"{a_tag(out)}.json"
    rec = json.loads(rec_path.read_text())
    rec["files"]["shards"].append("../../sentinel/shard-000099.tar")
    rec["checksums"]["shards/../../sentinel/shard-000099.tar"] = {"sha256": "0" * 64, "size": 1}
    rec_path.write_text(json.dumps(rec))


def run_record_tag_escapes(out, sentinel):
    rec_path = out / "runs" / f"{a_tag(out)}.json"
    rec = json.loads(rec_path.read_text())
    rec["run"] = "../../sentinel/victim"
    rec_path.write_text(json.dumps(rec))


TAMPERS = [journal_deletes_outside, journal_moves_outside, journal_run_tag_escapes, report_audio_links_outside,
           work_links_outside, staging_links_outside, shard_links_outside, key_escapes, manifest_shard_escapes,
           run_record_shard_escapes, run_record_tag_escapes]


def build_rc(built, out, *extra) -> int:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            run(["--sources", built["sources"][0], "--output", str(out), *permissive(built["model"]),
                 "--samples_per_shard", "8", "--speakers", "off", *extra])
    except SystemExit as e:
        return e.code
    return 0


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.__name__ for t in TAMPERS])
def test_every_command_refuses_a_tampered_corpus_and_stays_inside_it(case, built, tamper, capsys, tmp_path):
    out, sentinel = case
    tamper(out, sentinel)
    capsys.readouterr()
    assert report_cli.main([str(out)]) == 2
    assert compact_cli.main([str(out), "--samples_per_shard", "64"]) == 2
    assert export_cli.main([str(out), "--out", str(tmp_path / "lhotse")]) == 2
    assert verify_cli.main([str(out)]) == 1
    err = capsys.readouterr()
    assert "Traceback" not in err.err
    problems = err.out.strip().splitlines()
    assert problems and all(str(out) in line for line in problems), problems
    with pytest.raises(ValueError):  # CorpusDamaged, or an unfinished commit for a journal
        expand_urls(str(out))
    with pytest.raises(ValueError):
        expand_urls(str(out / "shards" / "*.tar"))
    assert build_rc(built, out) == 2
    assert build_rc(built, out, "--redo", "all") == 2


def test_verify_passes_a_clean_corpus_and_every_command_opens_it(case, built, tmp_path, capsys):
    out, _ = case
    assert verify_cli.main([str(out)]) == 0
    assert expand_urls(str(out)) == expand_urls(str(out / "shards" / "*.tar"))
    assert export_cli.main([str(out), "--out", str(tmp_path / "lhotse")]) == 0
    assert report_cli.main([str(out)]) == 0
    assert compact_cli.main([str(out), "--samples_per_shard", "64"]) == 0
    assert verify_cli.main([str(out)]) == 0  # the compaction's commit recorded its own checksums


def _part_of(out: Path, shard: Path) -> Path:
    return out / "manifest" / (shard.stem + ".parquet")


def deleted_shard(out):
    p = sorted((out / "shards").glob("*.tar"))[0]
    p.unlink()
    return p, "missing"


def deleted_manifest_part(out):
    p = sorted((out / "manifest").glob("*.parquet"))[0]
    p.unlink()
    return p, "missing"


def truncated_shard(out):
    p = sorted((out / "shards").glob("*.tar"))[0]
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p, "bytes"


def same_size_corruption(out):
    p = sorted((out / "shards").glob("*.tar"))[-1]
    data = bytearray(p.read_bytes())
    data[700] ^= 0xFF
    p.write_bytes(bytes(data))
    return p, "sha256"


def truncated_run_record(out):
    p = sorted((out / "runs").glob("*.json"))[0]
    p.write_text(p.read_text()[:40])
    return p, "not a readable run record"


def corrupt_parquet(out):
    p = sorted((out / "sources").glob("*.parquet"))[0]
    p.write_bytes(b"PAR1" + b"\0" * 20)
    return p, "bytes"


def orphan_manifest_part(out):
    src = sorted((out / "manifest").glob("*.parquet"))[0]
    p = out / "manifest" / "shard-000077.parquet"
    shutil.copy(src, p)
    return p, "published by no committed run"


def row_without_sample(out):
    part = sorted((out / "manifest").glob("*.parquet"))[0]
    rows = pq.read_table(part).to_pylist()
    rows.append({**rows[0], "key": rows[0]["key"][:-3] + "999"})
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(part)), part)
    reseal(out)
    return part, "has no sample"


def open_journal(out):
    (out / "_journal").mkdir(exist_ok=True)
    p = out / "_journal" / "t9.json"
    p.write_text(json.dumps({"run": "t9", "moves": [], "deletes": [], "record": {"run": "t9"}}))
    return p, "unfinished commit"


DAMAGES = [deleted_shard, deleted_manifest_part, truncated_shard, same_size_corruption, truncated_run_record,
           corrupt_parquet, orphan_manifest_part, row_without_sample, open_journal]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.__name__ for d in DAMAGES])
def test_verify_names_each_damage_and_commands_refuse_it(case, built, damage, capsys, tmp_path):
    out, _ = case
    path, words = damage(out)
    capsys.readouterr()
    assert verify_cli.main([str(out)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(str(path) in line and words in line for line in lines), lines
    before = digests(out)
    if damage in (same_size_corruption, row_without_sample):  # the checks at opening look at sizes, not bytes ...
        assert compact_cli.main([str(out), "--samples_per_shard", "64"]) == 2  # ... but nothing is merged around it
        assert str(path) in capsys.readouterr().err and digests(out) == before
        return
    if damage in (orphan_manifest_part, open_journal):
        return  # found by verify; a journal is finished or undone by the next command, an orphan is not read
    assert compact_cli.main([str(out), "--samples_per_shard", "64"]) == 2
    assert report_cli.main([str(out)]) == 2
    assert export_cli.main([str(out), "--out", str(tmp_path / "lhotse")]) == 2
    assert build_rc(built, out) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    assert digests(out) == before  # refused before anything was written: no merge around the hole




def test_the_page_shows_no_file_links_and_caps_what_a_feed_wrote(case):
    out, _ = case
    for part in (out / "sources").glob("*.parquet"):
        rows = pq.read_table(part).to_pylist()
        for r in rows:
            r.update(title="T" * 1_000_000, original_url="file:///etc/passwd")
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(part)), part)
    for part in (out / "manifest").glob("*.parquet"):
        rows = pq.read_table(part).to_pylist()
        for r in rows:
            r.update(title="T" * 1_000_000, original_url="file:///etc/passwd")
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(part)), part)
    reseal(out)
    assert report_cli.main([str(out)]) == 0
    page = (out / "report.html").read_text()
    assert len(page) < 1_000_000 and "T" * 400 not in page and "T" * 250 in page
    assert "file:" not in page.lower()


def test_compaction_on_a_full_disk_prints_one_line(case):
    out, _ = case
    before = digests(out / "shards")
    # files larger than 4 kB cannot be written: the disk is full as far as the new shards are concerned
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); from pipelines.compact import main; "
            f"sys.exit(main([{str(out)!r}, '--samples_per_shard', '64']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "File too large" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "failed" in line]) == 1
    assert digests(out / "shards") == before
    assert verify_cli.main([str(out)]) == 0
