"""Make a source's media readable: check local files, stage downloads, check object-store URIs.

``acquire`` returns an ``AudioFile`` or a ``Rejection``; it never raises for a bad source.

Only the sources file may name local paths and buckets. A source found in remote content (a feed's
enclosure, a page's media, a playlist entry) is fetched only over http(s), through the network
policy: ``file://``, ``s3://`` or ``gs://`` there would let a stranger's feed read the worker's
files or the operator's buckets.

Downloads (plain HTTP, or yt-dlp for pages a site extractor understands) land in the staging store
under ``{source_id}.{ext}``, written under a temporary name and renamed when complete: a rerun
finds a staged source by its id and skips the download, and an interrupted download is never taken
for a finished one. Every connection is checked and pinned (``guarded_http``), and a download has
a total deadline (``--download_timeout_s``) besides the per-read timeout. Transient failures
(timeouts, resets, 5xx, 429) are retried within the run with exponential backoff; whether a
failure that persists is tried again on the next run follows ``schemas.outcomes``.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Union
from urllib.parse import urljoin, urlparse

import requests
import urllib3

from acquisition import guarded_http
from acquisition.safety import WEB_SCHEMES, NetworkPolicy, UnsafeURL, parse_checked
from schemas.records import AudioFile, Rejection, Source
from storage import fs

STAGE = "acquire"
_EXT = re.compile(r"^\.[A-Za-z0-9]{1,5}$")
USER_AGENT = "speechmill/0.1 (speech corpus builder)"
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class AcquireConfig:
    staging_dir: str
    max_download_mb: float = 2048.0
    max_duration_s: Optional[float] = None
    http_timeout_s: float = 30.0
    download_timeout_s: float = 3600.0
    http_retries: int = 3
    retry_backoff_s: float = 0.5
    allow_private_networks: Optional[str] = None  # None: public only; "all"; or "CIDR,CIDR"
    max_items_per_source: int = 1000
    max_listed_items: int = 100_000
    max_hours_total: Optional[float] = None
    ytdlp_format: str = "bestaudio/best"
    min_download_kbps: Optional[float] = None  # a download slower than this (after RATE_GRACE_S) ends, retryable
    id_key: str = ""  # the corpus's identity key (hex): ids of URLs with secrets are keyed with it

    def validate(self) -> "AcquireConfig":
        if self.max_download_mb <= 0:
            raise ValueError(f"--max_download_mb must be > 0, got {self.max_download_mb:g}")
        if self.http_timeout_s <= 0:
            raise ValueError(f"--http_timeout_s must be > 0, got {self.http_timeout_s:g}")
        if self.download_timeout_s <= 0:
            raise ValueError(f"--download_timeout_s must be > 0, got {self.download_timeout_s:g}")
        if self.min_download_kbps is not None and self.min_download_kbps <= 0:
            raise ValueError(f"--min_download_kbps must be > 0, got {self.min_download_kbps:g}")
        if self.http_retries < 0:
            raise ValueError(f"--http_retries must be >= 0, got {self.http_retries}")
        if self.max_items_per_source < 1:
            raise ValueError(f"--max_items_per_source must be >= 1, got {self.max_items_per_source}")
        if self.max_listed_items < self.max_items_per_source:
            raise ValueError(f"--max_listed_items ({self.max_listed_items}) must be at least "
                             f"--max_items_per_source ({self.max_items_per_source})")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(f"--max_duration_s must be > 0, got {self.max_duration_s:g}")
        if self.max_hours_total is not None and self.max_hours_total <= 0:
            raise ValueError(f"--max_hours_total must be > 0, got {self.max_hours_total:g}")
        self.policy  # parses, raising on a bad network list
        return self

    @property
    def policy(self) -> NetworkPolicy:
        return NetworkPolicy.parse(self.allow_private_networks)

    @property
    def max_bytes(self) -> int:
        return int(self.max_download_mb * 1024 * 1024)


class FetchError(Exception):
    """A source could not be fetched; ``transient`` failures are retried within the run."""

    def __init__(self, reason: str, detail: str, transient: bool = False):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.transient = reason, detail, transient


def with_retries(fn, cfg: AcquireConfig):
    """Call ``fn()``; retry transient ``FetchError``s with exponential backoff."""
    for attempt in range(cfg.http_retries + 1):
        try:
            return fn()
        except FetchError as e:
            if not e.transient or attempt == cfg.http_retries:
                raise
            time.sleep(cfg.retry_backoff_s * (2 ** attempt))


def check_remote_item(source: Source) -> None:
    """Refuse a source named by remote content unless it is an http(s) URL."""
    if source.remote:
        scheme = source.uri.split("://", 1)[0].lower() if "://" in source.uri else ""
        if scheme not in WEB_SCHEMES:
            raise UnsafeURL("unsupported_scheme",
                            f"a feed, page or playlist named a {scheme or 'non-URL'} location; only "
                            f"http(s) links found in remote content are fetched")


def acquire(source: Source, cfg: AcquireConfig) -> Union[AudioFile, Rejection]:
    scheme = source.uri.split("://", 1)[0].lower()
    try:
        check_remote_item(source)
        if source.declared_duration_s and cfg.max_duration_s and source.declared_duration_s > cfg.max_duration_s:
            raise FetchError("too_long", f"{source.declared_duration_s:.0f} s stated, over the "
                             f"--max_duration_s limit of {cfg.max_duration_s:g} s")
        if scheme == "file":
            return _acquire_local(source)
        if scheme in ("gs", "s3"):
            return _acquire_object(source)
        if scheme in WEB_SCHEMES:
            staged = find_staged(source, cfg.staging_dir)
            if staged:
                return AudioFile(source, staged, fs.size(staged))
            if source.extractor:
                from acquisition.ytdlp import download_item
                return with_retries(lambda: download_item(source, cfg), cfg)
            return with_retries(lambda: _download(source, cfg), cfg)
        raise FetchError("unsupported_scheme", f"cannot fetch {scheme}:// sources")
    except FetchError as e:
        return Rejection.for_source(source, STAGE, e.reason, e.detail)
    except UnsafeURL as e:
        return Rejection.for_source(source, STAGE, e.reason, e.detail)
    except Exception as e:  # an unexpected failure of one source must not stop the others
        return Rejection.for_source(source, STAGE, "acquire_error", f"{type(e).__name__}: {e}")


def _acquire_local(source: Source) -> AudioFile:
    path = fs.local_path(source.uri)
    if not os.path.exists(path):
        raise FetchError("not_found", f"no such file: {path}")
    if os.path.isdir(path):
        raise FetchError("is_directory", f"{path} is a folder, not a media file")
    if not os.access(path, os.R_OK):
        raise FetchError("unreadable", f"permission denied: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise FetchError("empty_file", f"{path} is empty (0 bytes)")
    return AudioFile(source, path, size)


def _acquire_object(source: Source) -> AudioFile:
    try:
        if not fs.exists(source.uri):
            raise FetchError("not_found", f"no such object: {source.uri}")
        size = fs.size(source.uri)
    except FetchError:
        raise
    except Exception as e:
        raise FetchError("storage_error", fs.describe_storage_error(e, source.uri)) from e
    if size == 0:
        raise FetchError("empty_file", f"{source.uri} is empty (0 bytes)")
    return AudioFile(source, source.uri, size)


def staged_path(source: Source, staging_dir: str, ext: Optional[str] = None) -> str:
    if ext is None:
        ext = os.path.splitext(urlparse(source.uri).path)[1]
    ext = ext if ext.startswith(".") else "." + ext
    return fs.join(staging_dir, source.source_id + (ext.lower() if _EXT.match(ext) else ".media"))


def find_staged(source: Source, staging_dir: str) -> Optional[str]:
    """The staged file of this source id, if a finished download is there."""
    if not source.extractor:  # a direct link's staged name is known: no directory listing
        path = staged_path(source, staging_dir)
        return path if fs.exists(path) else None
    found = fs.list_dir(staging_dir, prefix=source.source_id + ".")  # yt-dlp chose the extension
    return found[0] if found else None


@contextlib.contextmanager
def open_checked(url: str, cfg: AcquireConfig, stream: bool = True) -> Iterator[requests.Response]:
    """GET ``url``, following redirects by hand; every hop's connection is checked and pinned.

    Each call has its own session, closed on exit, so no connection outlives the download (and its
    deadline) that opened it.
    """
    with guarded_http.session(cfg.policy) as http:
        resp = _get_following(http, url, cfg, stream)
        with resp:
            yield resp


def _get_following(http: requests.Session, url: str, cfg: AcquireConfig, stream: bool) -> requests.Response:
    for _ in range(MAX_REDIRECTS + 1):
        parse_checked(url)  # scheme, and a URL every parser reads the same way
        try:
            resp = http.get(url, stream=stream, timeout=cfg.http_timeout_s, allow_redirects=False,
                            headers={"User-Agent": USER_AGENT})
        except UnsafeURL:
            raise
        except requests.Timeout as e:
            raise FetchError("http_timeout", f"{url}: no answer within {cfg.http_timeout_s:g} s",
                             transient=True) from e
        except requests.ConnectionError as e:
            raise FetchError("connection_error", f"{url}: {_short(e)}", transient=True) from e
        except requests.RequestException as e:
            raise FetchError("http_error", f"{url}: {_short(e)}") from e
        if resp.is_redirect:
            target = resp.headers.get("Location", "")
            resp.close()
            url = urljoin(url, target)
            continue
        if resp.status_code >= 400:
            transient = resp.status_code >= 500 or resp.status_code in (408, 429)
            resp.close()
            raise FetchError("http_error", f"HTTP {resp.status_code} {resp.reason} for {url}", transient)
        return resp
    raise FetchError("too_many_redirects", f"more than {MAX_REDIRECTS} redirects from {url}")


def _short(e: Exception) -> str:
    """The innermost useful message of a requests/urllib3 error (not its repr chain)."""
    inner = e
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__
    text = str(inner) or type(inner).__name__
    return text.split(": ", 1)[-1] if text.startswith("<") else text


RATE_GRACE_S = 5.0  # a download's rate is judged only after this long (connection set-up, slow start)


def _chunks(resp: requests.Response, min_kbps: Optional[float], url: str) -> Iterator[bytes]:
    """The body as it arrives (each read returns what is there, up to 64 KiB). With ``min_kbps``, a
    body that comes slower than that on average once ``RATE_GRACE_S`` have passed ends as a
    retryable ``too_slow`` failure, so one straggling server does not hold a finished wave."""
    if min_kbps is None:
        yield from resp.iter_content(chunk_size=1 << 16)
        return
    started, total = time.monotonic(), 0
    while True:
        chunk = resp.raw.read1(1 << 16, decode_content=True)
        if not chunk:
            return
        total += len(chunk)
        yield chunk
        elapsed = time.monotonic() - started
        if elapsed > RATE_GRACE_S and total * 8 / 1000 / elapsed < min_kbps:
            raise FetchError("too_slow", f"{url}: {total * 8 / 1000 / elapsed:.2f} kbit/s after {elapsed:.0f} s, "
                             f"under --min_download_kbps {min_kbps:g}", transient=True)


def _download(source: Source, cfg: AcquireConfig) -> AudioFile:
    url, limit = source.uri, cfg.max_bytes
    with guarded_http.Deadline(cfg.download_timeout_s) as deadline:
        try:
            return _download_within(source, cfg, url, limit)
        except FetchError as e:
            if deadline.expired:
                raise FetchError("download_timeout", f"{url} took longer than --download_timeout_s "
                                 f"{cfg.download_timeout_s:g} s", transient=False) from e
            raise


def _download_within(source: Source, cfg: AcquireConfig, url: str, limit: int) -> AudioFile:
    with open_checked(url, cfg) as resp:
        declared = resp.headers.get("Content-Length")
        declared = int(declared) if declared and declared.isdigit() else None
        if declared is not None and declared > limit:
            raise FetchError("too_large", f"{url} is {declared} bytes, over the --max_download_mb "
                             f"limit of {cfg.max_download_mb:g} MB")
        total = 0

        def write(f):
            nonlocal total
            try:
                for chunk in _chunks(resp, cfg.min_download_kbps, url):
                    total += len(chunk)
                    if total > limit:
                        raise FetchError("too_large", f"{url} passed the --max_download_mb limit of "
                                         f"{cfg.max_download_mb:g} MB while downloading")
                    f.write(chunk)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                raise FetchError("connection_error", f"download of {url} interrupted: {_short(e)}",
                                 transient=True) from e
            if declared is not None and total != declared:
                raise FetchError("connection_error", f"download of {url} incomplete: {total} of "
                                 f"{declared} bytes", transient=True)
            if total == 0:
                raise FetchError("empty_file", f"{url} returned no data")

        dest = staged_path(source, cfg.staging_dir)
        fs.atomic_write(dest, write)
        return AudioFile(source, dest, total)
