import subprocess
import sys

import pytest

from schemas.keys import MAX_KEY_LEN, is_valid_key, segment_key, source_id_for_extractor, source_id_for_uri


def test_source_ids_are_safe_and_stable():
    uris = ["file:///data/a b.wav", "https://x.org/p?q=1&r=ü", "gs://bucket/x.mp3", "s3://b/k.flac"]
    ids = [source_id_for_uri(u) for u in uris]
    assert [i.split("-")[0] for i in ids] == ["file", "http", "gs", "s3"]
    assert all(is_valid_key(segment_key(i, 123_456_789)) for i in ids)
    assert len(set(ids)) == len(ids)
    # the same in another interpreter (hash() would not be)
    out = subprocess.run([sys.executable, "-c", "from schemas.keys import source_id_for_uri as f;"
                          f"print([f(u) for u in {uris!r}])"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == repr(ids)


def test_segment_key_format():
    assert segment_key("youtube-dQw4w9WgXcQ", 1500) == "youtube-dQw4w9WgXcQ_000001500"
    with pytest.raises(ValueError):
        segment_key("bad.id", 0)  # a dot would split the WebDataset sample
    with pytest.raises(ValueError):
        segment_key("x", -1)


def test_extractor_ids():
    assert source_id_for_extractor("Youtube", "dQw4w9WgXcQ") == "youtube-dQw4w9WgXcQ"
    odd = source_id_for_extractor("generic", "a/b c.mp3")
    assert is_valid_key(odd) and "/" not in odd
    long = source_id_for_extractor("generic", "x" * 200)
    assert len(segment_key(long, 0)) <= MAX_KEY_LEN
