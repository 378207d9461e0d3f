"""A corpus built by a real pipeline run opens in other tools: Hugging Face datasets, DuckDB, polars, Lhotse.

Every loader must give back every kept sample with the transcript and duration of the manifest
Parquet and the audio of the shards as the webdataset library reads them.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import webdataset as wds

from corpus.guard import CorpusDamaged
from corpus.published import UnfinishedCommitError, published_shards
from exports.lhotse import sample_cut
from pipelines import export_lhotse
from tests.conftest import REPO, copy_corpus


@pytest.fixture(scope="module")
def built(built_corpus):
    """A corpus of the two synthesised recordings, three samples a shard (shared: read, or copied)."""
    return built_corpus("ab", "--samples_per_shard", "3")


@pytest.fixture(scope="module")
def truth(built):
    """What the corpus holds, from the manifest Parquet and from the shards read with webdataset."""
    manifest = {r["key"]: r for r in pq.read_table(str(built / "manifest")).to_pylist()}
    shards = published_shards(str(built))
    samples = {}
    for s in wds.WebDataset(shards, shardshuffle=False):
        audio, sr = sf.read(io.BytesIO(s["flac"]), dtype="float32")
        samples[s["__key__"]] = {"text": s["txt"].decode("utf-8"), "audio": audio, "sr": sr, "flac": s["flac"]}
    assert len(manifest) >= 6 and len(shards) >= 2
    assert set(samples) == set(manifest)
    for key, s in samples.items():
        assert s["text"] == manifest[key]["text"] and s["sr"] == manifest[key]["sample_rate"]
        assert abs(len(s["audio"]) / s["sr"] - manifest[key]["duration_s"]) < 0.002
    return {"manifest": manifest, "samples": samples, "shards": shards}


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_published_shards_are_the_committed_ones(built, tmp_path):
    names = set()
    for record in (built / "runs").glob("*.json"):
        names |= set(json.loads(record.read_text())["files"]["shards"])
    assert [p.rsplit("/", 1)[-1] for p in published_shards(str(built))] == sorted(names)

    c = copy_corpus(built, tmp_path / "c")
    first = sorted(names)[0][:-len(".tar")]
    shutil.copy(c / "shards" / f"{first}.tar", c / "shards" / "shard-000099.tar")  # a file no run published
    shutil.copy(c / "manifest" / f"{first}.parquet", c / "manifest" / "shard-000099.parquet")
    assert [p.rsplit("/", 1)[-1] for p in published_shards(str(c))] == sorted(names)

    (c / "_journal").mkdir(exist_ok=True)
    (c / "_journal" / "abc123.json").write_text("{}")
    with pytest.raises(UnfinishedCommitError, match="unfinished commit"):
        published_shards(str(c))
    (c / "_journal" / "abc123.json").unlink()
    (c / "shards" / f"{first}.tar").unlink()
    with pytest.raises(CorpusDamaged, match=f"{first}.tar: missing"):
        published_shards(str(c))


def test_datasets_webdataset_loader_reads_every_sample(truth, tmp_path):
    import datasets
    from datasets import Features, Json, Value

    # the audio column as bytes, decoded with soundfile (datasets' Audio feature needs torchcodec)
    features = Features({"__key__": Value("string"), "__url__": Value("string"), "flac": Value("binary"),
                         "txt": Value("string"), "json": Json()})
    ds = datasets.load_dataset("webdataset", data_files={"train": truth["shards"]}, split="train",
                               features=features, cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == len(truth["manifest"])
    seen = set()
    for row in ds:
        key = row["__key__"]
        m, s = truth["manifest"][key], truth["samples"][key]
        audio, sr = sf.read(io.BytesIO(row["flac"]), dtype="float32")
        assert row["txt"] == m["text"] and row["json"]["text"] == m["text"]
        assert row["json"]["duration_s"] == m["duration_s"] and row["json"]["speaker"] == m["speaker"]
        assert sr == s["sr"] and np.array_equal(audio, s["audio"])
        assert abs(len(audio) / sr - m["duration_s"]) < 0.002
        seen.add(key)
    assert seen == set(truth["manifest"])

    streamed = datasets.load_dataset("webdataset", data_files={"train": truth["shards"]}, split="train",
                                     features=features, streaming=True, cache_dir=str(tmp_path / "hf"))
    assert {row["__key__"]: row["txt"] for row in streamed} == {k: m["text"] for k, m in truth["manifest"].items()}


def test_duckdb_queries_the_manifest(built, truth):
    import duckdb

    glob = str(built / "manifest" / "*.parquet")
    con = duckdb.connect()
    rows = con.execute(f"SELECT key, text, duration_s, len(speaker_embedding) FROM read_parquet('{glob}') "
                       f"ORDER BY key").fetchall()
    assert [r[0] for r in rows] == sorted(truth["manifest"])
    for key, text, duration, dims in rows:
        s = truth["samples"][key]
        assert text == s["text"] and dims == 256
        assert abs(duration - len(s["audio"]) / s["sr"]) < 0.002
    per_speaker = dict(con.execute(f"SELECT speaker, sum(duration_s) FROM read_parquet('{glob}') "
                                   f"GROUP BY speaker").fetchall())
    expected = {}
    for m in truth["manifest"].values():
        expected[m["speaker"]] = expected.get(m["speaker"], 0.0) + m["duration_s"]
    assert per_speaker.keys() == expected.keys()
    assert all(abs(per_speaker[k] - v) < 1e-9 for k, v in expected.items())


def test_polars_reads_the_manifest(built, truth):
    import polars as pl

    df = (pl.scan_parquet(str(built / "manifest" / "*.parquet"))
          .select("key", "text", "duration_s", "shard").sort("key").collect())
    assert df["key"].to_list() == sorted(truth["manifest"])
    for key, text, duration, shard in df.iter_rows():
        s = truth["samples"][key]
        assert text == s["text"] and shard == truth["manifest"][key]["shard"]
        assert abs(duration - len(s["audio"]) / s["sr"]) < 0.002


def export(corpus, out, capsys) -> tuple:
    rc = export_lhotse.main([str(corpus), "--out", str(out)])
    return rc, capsys.readouterr().err


def test_lhotse_shar_export_loads_every_sample(built, truth, tmp_path, capsys):
    from lhotse import CutSet
    from lhotse.dataset import SimpleCutSampler
    from lhotse.dataset.collation import collate_audio

    out = tmp_path / "shar"
    rc, err = export(built, out, capsys)
    assert rc == 0, err
    n = len(truth["shards"])
    assert f"shard {n}/{n}: {len(truth['manifest'])} cuts" in err  # the progress line
    assert f"wrote {len(truth['manifest'])} cuts" in err and "from_shar" in err
    assert sorted(os.listdir(out)) == sorted([f"cuts.{i:06d}.jsonl.gz" for i in range(n)]
                                             + [f"recording.{i:06d}.tar" for i in range(n)])
    cuts = CutSet.from_shar(in_dir=str(out))
    seen = set()
    for cut in cuts:
        m, s = truth["manifest"][cut.id], truth["samples"][cut.id]
        sup = cut.supervisions[0]
        assert sup.text == m["text"] and sup.speaker == m["speaker"]
        assert cut.custom["source_id"] == m["source_id"] and cut.custom["shard"] == m["shard"]
        assert cut.sampling_rate == s["sr"] and cut.num_samples == len(s["audio"])
        assert abs(cut.duration - m["duration_s"]) < 0.002
        audio = cut.load_audio()
        assert audio.shape == (1, len(s["audio"])) and np.array_equal(audio[0], s["audio"])
        seen.add(cut.id)
    assert seen == set(truth["manifest"])

    # the audio bytes are the shards' own, copied without re-encoding
    copied = {}
    for tar in sorted(out.glob("recording.*.tar")):
        with tarfile.open(tar) as tf:
            copied.update({m.name[:-len(".flac")]: tf.extractfile(m).read() for m in tf if m.name.endswith(".flac")})
    assert copied == {k: s["flac"] for k, s in truth["samples"].items()}

    # what a training loop does with it: batches by duration, padded audio
    batched = 0
    for batch in SimpleCutSampler(CutSet.from_shar(in_dir=str(out)), max_duration=25.0):
        audio, lens = collate_audio(batch)
        assert audio.shape[0] == len(batch) and sorted(lens.tolist()) == sorted(c.num_samples for c in batch)
        batched += len(batch)
    assert batched == len(truth["manifest"])


def test_export_reads_only_published_shards_and_replaces_atomically(built, truth, tmp_path, capsys):
    from lhotse import CutSet

    c = copy_corpus(built, tmp_path / "c")
    first = truth["shards"][0].rsplit("/", 1)[-1]
    shutil.copy(c / "shards" / first, c / "shards" / "shard-000099.tar")  # not published by any run
    shutil.copy(c / "manifest" / first.replace(".tar", ".parquet"), c / "manifest" / "shard-000099.parquet")
    out = tmp_path / "exports" / "shar"
    rc, err = export(c, out, capsys)
    assert rc == 0, err
    ids = [cut.id for cut in CutSet.from_shar(in_dir=str(out))]
    assert sorted(ids) == sorted(truth["manifest"])
    before = digests(out)

    # an export that fails half way leaves the previous one as it was, and no temporary folder
    last = c / "shards" / truth["shards"][-1].rsplit("/", 1)[-1]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    rc, err = export(c, out, capsys)
    assert rc == 2 and f"{last}: {len(data) // 2} bytes" in err and "Traceback" not in err  # refused before writing
    assert digests(out) == before
    assert sorted(os.listdir(out.parent)) == ["shar"]

    # a good export replaces the previous one
    last.write_bytes(data)
    (c / "shards" / "shard-000099.tar").unlink()
    rc, err = export(c, out, capsys)
    assert rc == 0, err
    assert sorted(os.listdir(out.parent)) == ["shar"]
    assert sorted(cut.id for cut in CutSet.from_shar(in_dir=str(out))) == sorted(truth["manifest"])


def test_export_refuses_bad_input_with_one_line(built, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    rc, err = export(tmp_path / "plain", tmp_path / "o1", capsys)
    assert rc == 2 and "not a speechmill corpus" in err

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    rc, err = export(built, mine, capsys)
    assert rc == 2 and "notes.txt" in err and "not part of a Lhotse Shar export" in err
    assert (mine / "notes.txt").read_text() == "keep me"

    c = copy_corpus(built, tmp_path / "c")
    (c / "_journal").mkdir(exist_ok=True)
    (c / "_journal" / "abc123.json").write_text("{}")
    rc, err = export(c, tmp_path / "o2", capsys)
    assert rc == 2 and "unfinished commit" in err and not (tmp_path / "o2").exists()

    with pytest.raises(SystemExit) as e:
        export_lhotse.main(["--help"])
    assert e.value.code == 0 and "from_shar" in capsys.readouterr().out

    proc = subprocess.run([sys.executable, "-m", "pipelines.export_lhotse", str(tmp_path / "missing")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_sample_cut_keeps_metadata_and_word_alignment():
    from lhotse import MonoCut

    buf = io.BytesIO()
    sf.write(buf, np.zeros(22050 * 2, dtype=np.float32), 22050, format="FLAC", subtype="PCM_16")
    meta = {"key": "k_000000000", "text": "hello world", "speaker": "spk-1", "source_id": "k", "confidence": 0.9,
            "words": [{"word": "hello", "start_s": 0.1, "end_s": 0.5, "confidence": 0.8},
                      {"word": "world", "start_s": 0.6, "end_s": 1.1, "confidence": 0.7}]}
    cut, recording = sample_cut("k_000000000", buf.getvalue(), meta)
    back = MonoCut.from_dict(json.loads(json.dumps(cut.to_dict())))
    assert back.duration == 2.0 and recording.num_samples == 44100
    words = back.supervisions[0].alignment["word"]
    assert [(w.symbol, w.start, w.duration, w.score) for w in words] == [("hello", 0.1, 0.4, 0.8),
                                                                       ("world", 0.6, 0.5, 0.7)]
    assert back.custom == {"source_id": "k", "confidence": 0.9}
    assert back.supervisions[0].text == "hello world" and back.supervisions[0].speaker == "spk-1"
