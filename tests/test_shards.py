import hashlib
import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import webdataset as wds

from audio.flac import decode_flac, encode_flac
from corpus.shards import write_shard
from schemas.records import Segment, Source, Transcript
from transforms.shard import ShardConfig, assign_shards, source_offsets


def make_pack(tmp_path, sid, n):
    src = Source(f"file:///{sid}.wav", sid, speaker="spk")
    pack = tmp_path / f"{sid}.clips"
    data, out = b"", []
    rng = np.random.default_rng(len(sid))
    for i in range(n):
        flac = encode_flac((rng.standard_normal(22050 * 4) * 1000).astype(np.int16), 22050)
        seg = Segment(f"{sid}_{i * 5000:09d}", src, i * 5.0, i * 5.0 + 4.0, 22050, str(pack), len(data), len(flac))
        out.append(Transcript(seg, f"sample {i} of {sid}", 0.9, "tiny"))
        data += flac
    pack.write_bytes(data)
    return out


def test_shard_round_trip_and_determinism(tmp_path):
    items = make_pack(tmp_path, "file-b", 3) + make_pack(tmp_path, "file-a", 2)
    info = write_shard(str(tmp_path / "s1"), str(tmp_path / "m1"), "shard-000000", items[::-1])
    write_shard(str(tmp_path / "s2"), str(tmp_path / "m2"), "shard-000000", items)
    b1 = (tmp_path / "s1" / "shard-000000.tar").read_bytes()
    assert b1 == (tmp_path / "s2" / "shard-000000.tar").read_bytes()  # input order does not matter
    assert info.n_samples == 5 and info.n_bytes == len(b1)

    samples = list(wds.WebDataset(str(tmp_path / "s1" / "shard-000000.tar"), shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    assert keys == sorted(t.key for t in items)
    for s in samples:
        audio, sr = decode_flac(s["flac"])
        meta = json.loads(s["json"])
        assert sr == 22050 and len(audio) == 22050 * 4
        assert meta["key"] == s["__key__"] and meta["speaker"] == "spk"
        assert s["txt"].decode() == meta["text"]
    # members of a sample are contiguous, and no temp files are left behind
    names = tarfile.open(fileobj=io.BytesIO(b1)).getnames()
    assert [n.split(".")[0] for n in names] == [k for k in keys for _ in range(3)]
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == ["shard-000000.tar"]
    rows = pq.read_table(str(tmp_path / "m1" / "shard-000000.parquet")).to_pylist()
    assert [r["key"] for r in rows] == keys and {r["shard"] for r in rows} == {"shard-000000"}


def test_assignment_is_global_and_in_key_order(tmp_path):
    a, b = make_pack(tmp_path, "file-a", 3), make_pack(tmp_path, "file-b", 4)
    offs = source_offsets([("file-b", 4), ("file-a", 3)])
    assert offs == {"file-a": 0, "file-b": 3}
    cfg = ShardConfig("s", "m", samples_per_shard=2, first_index=10)
    assigned = assign_shards(a[::-1], offs["file-a"], cfg) + assign_shards(b, offs["file-b"], cfg)
    by_shard = {}
    for idx, t in assigned:
        by_shard.setdefault(idx, []).append(t.key)
    assert sorted(by_shard) == [10, 11, 12, 13]
    flat = [k for i in sorted(by_shard) for k in sorted(by_shard[i])]
    assert flat == sorted(t.key for t in a + b)
    assert all(len(v) <= 2 for v in by_shard.values())


def test_flac_is_deterministic():
    x = (np.random.default_rng(0).standard_normal(30000) * 2000).astype(np.int16)
    assert hashlib.sha1(encode_flac(x, 22050)).digest() == hashlib.sha1(encode_flac(x.copy(), 22050)).digest()
    y, sr = decode_flac(encode_flac(x, 22050))
    np.testing.assert_array_equal(x, y)
