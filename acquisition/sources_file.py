"""Read the ``--sources`` file: plain text (one source per line), CSV or JSONL with a ``uri`` column.

Optional columns ``speaker``, ``title``, ``license`` fill the record; any other column is kept as
extra metadata. Relative local paths are resolved against the sources file's own folder, so a
list can travel with its audio. A line that cannot be used becomes a rejection with its line
number; a file that cannot be read at all raises ``SourcesFileError``.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from corpus import fs
from schemas.keys import source_id_for_uri, stable_hash
from schemas.records import Rejection, Source

SUPPORTED_SCHEMES = ("file", "http", "https", "gs", "s3")
KNOWN_COLUMNS = ("uri", "speaker", "title", "license", "kind")
KINDS = ("auto", "direct", "feed", "ytdlp", "folder")


class SourcesFileError(ValueError):
    pass


@dataclass
class ParsedSources:
    sources: List[Source] = field(default_factory=list)
    bad_lines: List[Tuple[Source, Rejection]] = field(default_factory=list)  # unusable lines, as sources
    duplicates: int = 0


def normalize_uri(raw: str, base_dir: str) -> str:
    """A canonical URI: ``file:///abs/path`` for local paths, the URL itself otherwise.

    Raises ``ValueError`` naming the problem for an unsupported scheme.
    """
    uri = raw.strip()
    if not uri:
        raise ValueError("empty uri")
    if "://" in uri:
        scheme = uri.split("://", 1)[0].lower()
        if scheme not in SUPPORTED_SCHEMES:
            raise ValueError(f"unsupported scheme {scheme!r} (supported: {', '.join(SUPPORTED_SCHEMES)})")
        if scheme == "file":
            return "file://" + os.path.normpath(os.path.join(base_dir, uri[len("file://"):]))
        return scheme + uri[len(scheme):]
    if ":" in uri.split("/", 1)[0] and not os.path.exists(uri):
        raise ValueError(f"unsupported uri {uri!r}")
    return "file://" + os.path.normpath(os.path.join(base_dir, os.path.expanduser(uri)))


def _clean(value) -> Optional[str]:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def make_source(row: dict, base_dir: str, origin: str) -> Source:
    uri = normalize_uri(str(row.get("uri") or ""), base_dir)
    kind = (_clean(row.get("kind")) or "auto").lower()
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (one of: {', '.join(KINDS)})")
    extra = tuple(sorted((str(k), str(v)) for k, v in row.items()
                         if k not in KNOWN_COLUMNS and k is not None and _clean(v) is not None))
    return Source(uri=uri, source_id=source_id_for_uri(uri), speaker=_clean(row.get("speaker")),
                  title=_clean(row.get("title")), license=_clean(row.get("license")),
                  origin=origin, extra=extra, kind="auto" if kind == "folder" else kind)


def _format_of(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "txt"


def _rows(fmt: str, text: str, name: str):
    """(line number, row dict or error string) for each non-blank, non-comment line."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "uri" not in [f.strip() for f in reader.fieldnames]:
            raise SourcesFileError(f"{name}: a CSV sources file needs a 'uri' column "
                                   f"(found columns: {reader.fieldnames})")
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            if not any(_clean(v) for v in row.values() if not isinstance(v, list)):
                continue
            yield reader.line_num, row
        return
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if fmt == "txt":
            yield i, {"uri": s}
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            yield i, f"not valid JSON: {e.msg}"
            continue
        if not isinstance(obj, dict) or not _clean(obj.get("uri")):
            yield i, "a JSONL line must be an object with a 'uri' field"
            continue
        yield i, obj


def parse_sources(text: str, name: str = "sources", base_dir: str = ".") -> ParsedSources:
    """Sources from the text of a sources file; bad lines become rejections, duplicates are dropped."""
    out = ParsedSources()
    seen = set()
    for line_no, row in _rows(_format_of(name), text, name):
        origin = f"{os.path.basename(name)}:{line_no}"
        if isinstance(row, str):
            out.bad_lines.append(_bad_line(origin, row, text_of_line(text, line_no)))
            continue
        try:
            src = make_source(row, base_dir, origin)
        except ValueError as e:
            out.bad_lines.append(_bad_line(origin, str(e), str(row.get("uri"))))
            continue
        if src.source_id in seen:
            out.duplicates += 1
            continue
        seen.add(src.source_id)
        out.sources.append(src)
    return out


def text_of_line(text: str, line_no: int) -> str:
    lines = text.splitlines()
    return lines[line_no - 1] if 0 < line_no <= len(lines) else ""


def _bad_line(origin: str, why: str, raw: str) -> Tuple[Source, Rejection]:
    """An unusable line as a pseudo-source (so it is recorded once, like any source) and its rejection."""
    src = Source(uri=raw.strip()[:500], source_id=f"line-{stable_hash(origin + raw)}", origin=origin)
    return src, Rejection.for_source(src, "sources", "bad_source_line", f"{origin}: {why}")


def read_sources(path: str) -> ParsedSources:
    """Parse the sources file at ``path`` (local or any ``FileSystems`` path)."""
    if fs.is_local(path) and not os.path.isfile(fs.local_path(path)):
        raise SourcesFileError(f"sources file not found: {path}")
    try:
        data = fs.read_bytes(path)
    except Exception as e:
        raise SourcesFileError(f"cannot read sources file {path}: {e}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourcesFileError(f"sources file {path} is not UTF-8 text: {e}") from e
    base = os.path.dirname(os.path.abspath(fs.local_path(path))) if fs.is_local(path) else os.getcwd()
    return parse_sources(text, name=path, base_dir=base)
