"""Read the ``--sources`` file: plain text (one source per line), CSV or JSONL with a ``uri`` column.

Optional columns ``speaker``, ``title``, ``license``, ``kind`` fill the record; any other column is
kept as extra metadata. Relative local paths are resolved against the sources file's own folder,
so a list can travel with its audio. ``--sources`` may also be a folder: it stands for a list with
that one folder in it.

Every line ends somewhere: a line that cannot be used becomes a rejection with its line number and
the reason, and the lines after it are read as usual. CSV records are one per line (a quoted field
cannot span lines), so an unclosed quote spoils only its own line. A file that cannot be read at
all, or a CSV header that is ambiguous (no ``uri`` column, a column named twice), raises
``SourcesFileError`` before any work starts.

A local file's id is a fingerprint of its content (``acquisition.identity``), so moving or
remounting the audio does not make it new. A URL's id is keyed with the corpus's identity key
(``id_key``) when it carries a secret, so lines that differ only in a token are distinct sources.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

from acquisition.identity import legacy_id, local_source_id
from schemas.errors import SpeechmillError
from schemas.keys import source_id_for_uri, stable_hash
from schemas.outcomes import Stage
from schemas.records import Rejection, Source
from schemas.redact import clean_text
from storage import fs

SPOOL_BYTES = 16 << 20
PROGRESS_LINES = 100_000  # a progress line every this many lines read
SUPPORTED_SCHEMES = ("file", "http", "https", "gs", "s3")
KNOWN_COLUMNS = ("uri", "speaker", "title", "license", "kind")
KINDS = ("auto", "direct", "feed", "ytdlp", "folder")


class SourcesFileError(SpeechmillError, ValueError):
    """The sources file as a whole cannot be used (missing, unreadable, no ``uri`` column): the run stops."""

    reason = "bad_sources_file"


@dataclass
class ParsedSources:
    """The usable sources (kept as JSON lines in a spooled file: in memory while small, on local disk
    beyond ``SPOOL_BYTES``, so a list of millions of lines is never a list of millions of objects),
    the unusable lines as rejections, and how many lines repeated an earlier one."""
    bad_lines: List[Tuple[Source, Rejection]] = field(default_factory=list)  # unusable lines, as sources
    duplicates: int = 0
    count: int = 0
    _spool: object = field(default=None, repr=False)

    def add(self, src: Source) -> None:
        if self._spool is None:
            self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, prefix="speechmill-sources-")
        self._spool.write(src.to_json().encode("utf-8", "surrogatepass") + b"\n")
        self.count += 1

    def iter_sources(self) -> Iterator[Source]:
        """The usable sources in file order, read back one at a time."""
        if self._spool is None:
            return
        self._spool.seek(0)
        for line in self._spool:
            yield Source.from_json(line.decode("utf-8", "surrogatepass"))
        self._spool.seek(0, 2)

    @property
    def sources(self) -> List[Source]:
        return list(self.iter_sources())


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
            literal = os.path.join(base_dir, uri[len("file://"):])
            path = literal if os.path.exists(literal) else os.path.join(base_dir, fs.local_path(uri))
            return fs.file_uri(os.path.normpath(path))
        return scheme + uri[len(scheme):]
    if ":" in uri.split("/", 1)[0] and not os.path.exists(uri):
        raise ValueError(f"unsupported uri {uri!r}")
    return fs.file_uri(os.path.normpath(os.path.join(base_dir, os.path.expanduser(uri))))


def _clean(value) -> Optional[str]:
    if value is None:
        return None
    value = clean_text(str(value)).strip()
    return value or None


def make_source(row: dict, base_dir: str, origin: str, id_key: str = "") -> Source:
    uri = normalize_uri(str(row.get("uri") or ""), base_dir)
    kind = (_clean(row.get("kind")) or "auto").lower()
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (one of: {', '.join(KINDS)})")
    extra = tuple(sorted((_clean(k), _clean(v)) for k, v in row.items()
                         if k not in KNOWN_COLUMNS and k is not None and _clean(v) is not None))
    sid, alias = source_id_for_uri(uri, id_key), None
    if uri.startswith("file://"):
        path = fs.local_path(uri)
        if not os.path.isdir(path):
            sid, alias = local_source_id(path), legacy_id(path)
    return Source(uri=uri, source_id=sid, speaker=_clean(row.get("speaker")),
                  title=_clean(row.get("title")), license=_clean(row.get("license")),
                  origin=origin, extra=extra, kind="auto" if kind == "folder" else kind, alias=alias)


def _format_of(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "txt"


def _csv_header(lines: List[str], name: str) -> Tuple[int, List[str]]:
    for i, line in enumerate(lines, start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                header = [h.strip() for h in next(csv.reader([line], strict=True))]
            except csv.Error as e:
                raise SourcesFileError(f"{name}:{i}: the CSV header cannot be read: {e}") from e
            if "uri" not in header:
                raise SourcesFileError(f"{name}: a CSV sources file needs a 'uri' column (found columns: {header})")
            dupes = sorted({h for h in header if header.count(h) > 1 and h})
            if dupes:
                raise SourcesFileError(f"{name}:{i}: the CSV header names {', '.join(map(repr, dupes))} more than "
                                       f"once; which column is meant is ambiguous")
            return i, header
    raise SourcesFileError(f"{name}: the CSV sources file is empty (no header line)")


def _csv_rows(lines: List[str], name: str):
    header_line, header = _csv_header(lines, name)
    for i, line in enumerate(lines[header_line:], start=header_line + 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            values = next(csv.reader([line], strict=True))
        except csv.Error as e:
            yield i, f"cannot read the CSV line ({e}); a quoted field must close on its own line"
            continue
        if line.count('"') % 2:
            yield i, "unclosed quote: a quoted field must close on its own line"
            continue
        if len(values) > len(header):
            yield i, f"{len(values)} fields for {len(header)} columns"
            continue
        row = dict(zip(header, values))
        if not any(_clean(v) for v in row.values()):
            continue
        if not _clean(row.get("uri")):
            yield i, "no uri in this line"
            continue
        yield i, row


def _rows(fmt: str, lines: List[str], name: str):
    """(line number, row dict or error string) for each non-blank, non-comment line."""
    if fmt == "csv":
        yield from _csv_rows(lines, name)
        return
    for i, line in enumerate(lines, start=1):
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


def parse_sources(text: str, name: str = "sources", base_dir: str = ".", id_key: str = "",
                  log: Optional[Callable[[str], None]] = None) -> ParsedSources:
    """Sources from the text of a sources file; bad lines become rejections, duplicates are dropped.
    With ``log``, a progress line every ``PROGRESS_LINES`` lines."""
    out = ParsedSources()
    seen = set()
    lines = text.splitlines()
    for line_no, row in _rows(_format_of(name), lines, name):
        if log and line_no % PROGRESS_LINES == 0:
            log(f"reading {name}: {line_no:,} of {len(lines):,} lines, {out.count:,} sources")
        origin = f"{os.path.basename(name)}:{line_no}"
        if isinstance(row, str):
            out.bad_lines.append(_bad_line(origin, row, lines[line_no - 1]))
            continue
        try:
            src = make_source(row, base_dir, origin, id_key)
        except ValueError as e:
            out.bad_lines.append(_bad_line(origin, str(e), str(row.get("uri"))))
            continue
        if src.source_id in seen:
            out.duplicates += 1
            continue
        seen.add(src.source_id)
        out.add(src)
    return out


def text_of_line(text: str, line_no: int) -> str:
    lines = text.splitlines()
    return lines[line_no - 1] if 0 < line_no <= len(lines) else ""


def _bad_line(origin: str, why: str, raw: str) -> Tuple[Source, Rejection]:
    """An unusable line as a pseudo-source (so it is recorded once, like any source) and its rejection."""
    raw = clean_text(raw)
    src = Source(uri=raw.strip()[:500], source_id=f"line-{stable_hash(origin + raw)}", origin=origin)
    return src, Rejection.for_source(src, Stage.SOURCES, "bad_source_line", f"{origin}: {why}")


def read_sources(path: str, id_key: str = "", log: Optional[Callable[[str], None]] = None) -> ParsedSources:
    """Parse the sources file at ``path`` (local or any ``FileSystems`` path), or take a folder as one source."""
    if fs.is_local(path):
        local = fs.local_path(path)
        if os.path.isdir(local):
            folder = os.path.abspath(local)
            src = make_source({"uri": folder}, folder, f"{os.path.basename(folder) or folder} (folder)")
            out = ParsedSources()
            out.add(src)
            return out
        if not os.path.isfile(local):
            raise SourcesFileError(f"sources file not found: {path} (give a text, CSV or JSONL file listing "
                                   f"sources, or a folder of audio)")
    try:
        data = fs.read_bytes(path)
    except Exception as e:
        raise SourcesFileError(f"cannot read sources file {path}: {fs.describe_storage_error(e, path)}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourcesFileError(f"sources file {path} is not UTF-8 text: {e}") from e
    base = os.path.dirname(os.path.abspath(fs.local_path(path))) if fs.is_local(path) else os.getcwd()
    return parse_sources(text, name=path, base_dir=base, id_key=id_key, log=log)
