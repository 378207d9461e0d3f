"""s3:// sources through Beam FileSystems, against an S3-compatible server (moto) on 127.0.0.1."""
from __future__ import annotations

from pipelines.build_corpus import run
from tests.conftest import permissive
from tests.test_build_corpus import table, write_sources


def test_s3_objects_and_prefixes(s3, tmp_path, tiny_model, speech, bad_inputs):
    client, opts = s3
    wav = open(speech["a"][1], "rb").read()
    client.put_object(Bucket="talks", Key="one.wav", Body=wav)
    client.put_object(Bucket="talks", Key="season1/ep1.mp3", Body=open(bad_inputs / "stereo48k.mp3", "rb").read())
    client.put_object(Bucket="talks", Key="season1/ep2.wav", Body=wav)
    client.put_object(Bucket="talks", Key="season1/cover.jpg", Body=b"jpeg")
    out = tmp_path / "corpus"
    sources = write_sources(tmp_path / "s.txt", ["s3://talks/one.wav", "s3://talks/season1/", "s3://talks/nope.wav"])
    report = run(["--sources", sources, "--output", str(out), *permissive(tiny_model), *opts])
    rows = {r["uri"]: (r["status"], r["reason"]) for r in table(out, "sources")}
    assert rows == {"s3://talks/one.wav": ("ok", ""), "s3://talks/season1/ep1.mp3": ("ok", ""),
                    "s3://talks/season1/ep2.wav": ("ok", ""), "s3://talks/nope.wav": ("failed", "not_found")}
    assert report["kept"] == len(table(out, "manifest")) > 0
