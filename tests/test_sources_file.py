import pytest

from acquisition.sources_file import SourcesFileError, parse_sources, read_sources


def test_text_lines_resolve_relative_to_the_file(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("# comment\n\na.wav\n/abs/b.mp3\nhttps://h.org/c.mp3\ngs://bkt/d.flac\na.wav\nftp://x/y\n")
    parsed = read_sources(str(f))
    assert [s.uri for s in parsed.sources] == [
        f"file://{tmp_path}/a.wav", "file:///abs/b.mp3", "https://h.org/c.mp3", "gs://bkt/d.flac"]
    assert parsed.duplicates == 1
    assert len(parsed.bad_lines) == 1
    src, bad = parsed.bad_lines[0]
    assert src.origin == "list.txt:8" and bad.source_id == src.source_id
    assert bad.reason == "bad_source_line" and "list.txt:8" in bad.detail and "ftp" in bad.detail
    assert parsed.sources[0].origin == "list.txt:3"


def test_csv_with_metadata_and_extra_columns(tmp_path):
    text = "uri,speaker,title,license,lang\nx.wav,alice,Talk,CC-BY,en\ny.wav,,,,\n"
    parsed = parse_sources(text, name="s.csv", base_dir=str(tmp_path))
    a, b = parsed.sources
    assert (a.speaker, a.title, a.license, a.extra) == ("alice", "Talk", "CC-BY", (("lang", "en"),))
    assert a.speaker_id == "alice"
    assert b.speaker is None and b.speaker_id == b.source_id


def test_csv_without_uri_column_is_refused():
    with pytest.raises(SourcesFileError, match="'uri' column"):
        parse_sources("path,speaker\nx.wav,a\n", name="s.csv")


def test_jsonl_bad_lines_are_rejected_not_fatal(tmp_path):
    text = '{"uri": "a.wav", "speaker": "bob"}\nnot json\n{"title": "no uri"}\n'
    parsed = parse_sources(text, name="s.jsonl", base_dir=str(tmp_path))
    assert [s.speaker for s in parsed.sources] == ["bob"]
    assert sorted(s.origin for s, _ in parsed.bad_lines) == ["s.jsonl:2", "s.jsonl:3"]


def test_missing_sources_file(tmp_path):
    with pytest.raises(SourcesFileError, match="not found"):
        read_sources(str(tmp_path / "nope.txt"))
