"""A long source is worked in parts: a build killed inside it carries on after its last saved part,
and the corpus is the one an uninterrupted build makes, byte for byte."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from acquisition.config import AcquireConfig
from audio.ffmpeg import ffmpeg_binary
from corpus.parts import PartStore, decode, encode
from pipelines.build_corpus import run
from run.waves import part_count
from schemas.outcomes import Stage, Status
from schemas.records import ClipScores, Rejection, Segment, Source, Transcript
from tests.conftest import REPO, SHARED_SPEECH, corpus_digests, file_digests, local_files, permissive
from tests.test_build_corpus import write_sources
from transforms.parts import PART, PartSpec, part_records
from transforms.routing import REJECTED, SOURCES
from transforms.segment import SegmentConfig

READINGS = ["multilingual.mp3", "jfk.flac", "lj_1.wav", "lj_2.wav", "stereo_diarization.wav"]
PARTS = ["--commit_every_hours", "0.02"]  # 72 s: the 189 s source below is 3 parts
needs_speech = pytest.mark.skipif(not all((SHARED_SPEECH / n).exists() for n in READINGS),
                                  reason="needs ../shared/data/real_speech")


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """Three minutes of real speech in one file: the shared recordings read end to end, twice."""
    pieces = [np.frombuffer(subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-i", str(SHARED_SPEECH / n), "-ac", "1", "-ar", "16000",
         "-f", "s16le", "-"], check=True, capture_output=True).stdout, np.int16) for n in READINGS]
    path = tmp_path_factory.mktemp("book") / "book.wav"
    sf.write(str(path), np.concatenate(pieces * 2), 16000, subtype="PCM_16")
    return path


def book_args(tmp_path: Path, book: Path, tiny_model: str, out: Path, *extra) -> list:
    # small ASR batches, so each part has batches of its own to transcribe
    return ["--sources", write_sources(tmp_path / "s.txt", [book]), "--output", str(out), *permissive(tiny_model),
            "--samples_per_shard", "2", "--asr_batch_seconds", "20", "--keep_work", *extra]


@pytest.fixture(scope="module")
def parted(tmp_path_factory, book, tiny_model) -> Path:
    """A clean build of the book in three parts."""
    d = tmp_path_factory.mktemp("parted")
    run(book_args(d, book, tiny_model, d / "corpus", *PARTS))
    return d / "corpus"


def checkpoints(out: Path) -> dict:
    """{file name: (inode, mtime)} of the parts' saved work."""
    return {Path(p).name: (os.stat(p).st_ino, os.stat(p).st_mtime_ns)
            for p in glob.glob(str(out / "_work" / "plan-*" / "parts" / "*" / "*.jsonl"))}


@needs_speech
def test_a_long_source_killed_in_a_part_carries_on_after_its_saved_parts(tmp_path, book, tiny_model, parted, capfd):
    assert len(list((parted / "runs").glob("*.json"))) == 1  # parts before the last are never published
    out = tmp_path / "corpus"
    args = book_args(tmp_path, book, tiny_model, out, *PARTS)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.build_corpus", *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "wave 2 of 3: part 2 of 3" in line:  # the first part is saved, the second is running
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = checkpoints(out)  # part 2 may have been saved too before the kill landed
    assert {"first.jsonl", "asr-0000.jsonl"} <= set(saved) and not list((out / "runs").glob("*.json"))

    capfd.readouterr()
    run(args)
    err = capfd.readouterr().err
    assert f"going on with {4 - len(saved)} of 3 waves" in err and "part 1 of 3" not in err
    after = checkpoints(out)
    assert {n: after[n] for n in saved} == saved  # neither the pass over the source nor part 1 was done again
    assert set(after) == {"first.jsonl", "asr-0000.jsonl", "asr-0001.jsonl"}
    assert corpus_digests(local_files(out)) == corpus_digests(local_files(parted))


@needs_speech
def test_the_parts_make_the_corpus_one_piece_makes(tmp_path, book, tiny_model, parted):
    one = tmp_path / "one"
    run(book_args(tmp_path, book, tiny_model, one))  # the default 4 h: the source in one wave
    assert not list((one / "_work").glob("plan-*/parts"))
    for sub in ("shards", "manifest"):  # the same samples, byte for byte
        assert file_digests(one / sub) == file_digests(parted / sub) != {}
    for table in ("sources", "rejected", "speakers"):  # the same rows; only the run that published them differs
        a, b = (pq.read_table(next((d / table).glob("*.parquet"))) for d in (parted, one))
        assert a.drop_columns(["run"]).equals(b.drop_columns(["run"])) and a.num_rows


def test_only_a_long_source_of_known_length_is_cut_into_parts(tmp_path):
    wav = tmp_path / "long.wav"
    sf.write(str(wav), np.zeros(16000 * 200, np.int16), 16000, subtype="PCM_16")
    local = Source(wav.as_uri(), "long")
    assert part_count(local, 0.02) == 3  # 200 s in waves of 72 s
    assert part_count(local, 1.0) == 1
    assert part_count(local, 0.001) == 3  # parts of at least a minute
    assert part_count(Source("https://example.org/x.mp3", "x"), 0.001) == 1  # unknown length: one piece
    assert part_count(Source("https://example.org/x.mp3", "x", declared_duration_s=36000.0), 4.0) == 3


def test_checkpoint_records_read_back_equal():
    src = Source("file:///a.wav", "a", extra=(("k", "v"),), declared_duration_s=1.5)
    seg = Segment("a-000001000", src, 1.0, 2.5, 22050, "/p/a.clips", 10, 200,
                  ClipScores(speech_ratio=0.9, snr_db=float(np.float32(21.3)), rt60_s=None),
                  embedding=np.arange(4, dtype=np.float16).tobytes(), fingerprint=b"\x00\x01")
    records = [seg, Transcript(seg, "hello.", 0.8125, "tiny", (("hello", 0.0, 0.4, 0.9),), (1, 2, 3)),
               Rejection.for_segment(seg, Stage.TRANSCRIBE, "asr_error", "boom"),
               replace(Rejection.for_source(src, Stage.ACQUIRE, "http_404"), duration_s=float("inf"))]
    back = [decode(encode(r)) for r in records]
    assert back == records and back[2].segment == seg and type(back[2].stage) is Stage
    with pytest.raises(TypeError):
        encode(object())
    with pytest.raises(KeyError):  # only the record types a checkpoint holds are ever built from one
        decode({"@": "Popen", "args": "ls"})


def test_a_long_source_that_cannot_be_fetched_gets_its_row_from_the_last_part(tmp_path):
    src = Source((tmp_path / "gone.wav").as_uri(), "gone")
    folder = str(tmp_path / "parts" / "gone")
    first = list(part_records(src, PartSpec(0, 3, folder), AcquireConfig(str(tmp_path / "staging")), SegmentConfig(pack_dir="")))
    assert first == [(PART, 0)]  # nothing to transcribe, and no row published by a part before the last
    PartStore(folder).write_asr(0, [])
    PartStore(folder).write_asr(1, [])
    last = list(part_records(src, PartSpec(2, 3, folder), AcquireConfig(str(tmp_path / "staging")), SegmentConfig(pack_dir="")))
    rows = [r for tag, r in last if tag == SOURCES]
    assert [(r.source.source_id, r.status) for r in rows] == [("gone", Status.FAILED)]
    assert [r.reason for tag, r in last if tag == REJECTED] == [rows[0].reason] and rows[0].reason
