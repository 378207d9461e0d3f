"""What the README and docs/ state about the files and the rerun rules is what the code does."""
from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from acquisition.config import AcquireConfig
from acquisition.errors import FetchError
from acquisition.http import download, with_retries
from pipelines.build_corpus import run
from schemas.outcomes import FINAL_REASONS, retryable
from schemas.records import Source
from tests.conftest import ONLY_LOCALHOST, REPO, Route, permissive
from tests.test_build_corpus import write_sources

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_table(path, heading: str) -> list:
    """The first column's names (in backticks) of the table under ``heading``."""
    text = path.read_text()
    after = text[text.index(heading):]
    names = []
    for line in after.splitlines()[1:]:
        if line.startswith("#"):
            break
        m = re.match(r"\| `([a-z_]+)` \|", line)
        if m:
            names.append(m.group(1))
    return names


def test_the_sources_columns_in_the_docs_are_those_of_the_file(tmp_path, tiny_model, capsys):
    out = tmp_path / "corpus"
    run(["--sources", write_sources(tmp_path / "s.txt", [tmp_path / "missing.wav"]), "--output", str(out),
         *permissive(tiny_model)])
    [part] = (out / "sources").glob("run-*.parquet")
    written = pq.read_schema(part).names
    documented = doc_table(REPO / "docs" / "report.md", "### The columns of `sources/`")
    assert documented == written


def test_the_404_rule_is_stated_once_and_is_what_the_code_does(tmp_path, server):
    said = [(p.name, para) for p in DOCS for para in re.split(r"\n\s*\n", p.read_text()) if "404" in para]
    assert len(said) == 1, said  # one place states it; the others link there
    name, para = said[0]
    para = " ".join(para.split())
    assert name == "sources.md" and "without retrying within the run" in para and "the next run tries" in para, para

    cfg = AcquireConfig(staging_dir=str(tmp_path / "staging"), allow_private_networks=ONLY_LOCALHOST,
                        retry_backoff_s=0.01, http_timeout_s=5)
    gone = server.add("/gone.wav", Route(b"RIFF", fail_first=10, fail_status=404))
    with pytest.raises(FetchError) as e:
        with_retries(lambda: download(Source(gone, "http-gone", kind="direct"), cfg), cfg)
    assert (e.value.reason, e.value.transient) == ("http_error", False) and "404" in str(e.value)
    assert server.hits("/gone.wav") == 1  # not retried within the run ...
    assert retryable(e.value.reason)  # ... but by the next run
    busy = server.add("/busy.wav", Route(b"RIFF....", fail_first=2, fail_status=503))
    got = with_retries(lambda: download(Source(busy, "http-busy", kind="direct"), cfg), cfg)
    assert server.hits("/busy.wav") == 3 and got is not None  # a 5xx is retried within the run


def test_the_final_reasons_in_the_docs_are_those_of_the_code():
    text = " ".join((REPO / "docs" / "reruns.md").read_text().split())
    listed = text[text.index("a failure that is about the content itself:"):text.index("(`schemas/outcomes.py`)")]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == set(FINAL_REASONS)
