"""Make a source's media readable: check local files, stage downloads, check object-store URIs.

``acquire`` returns an ``AudioFile`` or a ``Rejection``; it never raises for a bad source.

Downloads (plain HTTP, or yt-dlp for pages a site extractor understands) land in the staging store
under ``{source_id}.{ext}``, written under a temporary name and renamed when complete: a rerun
finds a staged source by its id and skips the download, and an interrupted download is never taken
for a finished one. Transient failures (timeouts, resets, 5xx, 429) are retried with exponential
backoff a bounded number of times; if they persist the rejection is marked ``retryable`` so the
next run tries again. Permanent failures (404, too large, unsafe address, private or removed video)
are final.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import urljoin, urlparse

import requests

from acquisition.safety import NetworkPolicy, UnsafeURL, check_url
from corpus import fs
from schemas.records import AudioFile, Rejection, Source

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
    http_retries: int = 3
    retry_backoff_s: float = 0.5
    allow_private_networks: Optional[str] = None  # None: public only; "all"; or "CIDR,CIDR"
    max_items_per_source: int = 1000
    max_hours_total: Optional[float] = None
    ytdlp_format: str = "bestaudio/best"

    def validate(self) -> "AcquireConfig":
        if self.max_download_mb <= 0:
            raise ValueError(f"max_download_mb must be > 0, got {self.max_download_mb}")
        if self.http_retries < 0:
            raise ValueError(f"http_retries must be >= 0, got {self.http_retries}")
        if self.max_items_per_source < 1:
            raise ValueError(f"max_items_per_source must be >= 1, got {self.max_items_per_source}")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be > 0, got {self.max_duration_s}")
        if self.max_hours_total is not None and self.max_hours_total <= 0:
            raise ValueError(f"max_hours_total must be > 0, got {self.max_hours_total}")
        self.policy  # parses, raising on a bad network list
        return self

    @property
    def policy(self) -> NetworkPolicy:
        return NetworkPolicy.parse(self.allow_private_networks)

    @property
    def max_bytes(self) -> int:
        return int(self.max_download_mb * 1024 * 1024)


class FetchError(Exception):
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


def acquire(source: Source, cfg: AcquireConfig) -> Union[AudioFile, Rejection]:
    scheme = source.uri.split("://", 1)[0].lower()
    try:
        if source.declared_duration_s and cfg.max_duration_s and source.declared_duration_s > cfg.max_duration_s:
            raise FetchError("too_long", f"{source.declared_duration_s:.0f} s stated, over the "
                             f"--max_duration_s limit of {cfg.max_duration_s:g} s")
        if scheme == "file":
            return _acquire_local(source)
        if scheme in ("gs", "s3"):
            return _acquire_object(source)
        if scheme in ("http", "https"):
            staged = find_staged(source, cfg.staging_dir)
            if staged:
                return AudioFile(source, staged, fs.size(staged))
            if source.extractor:
                from acquisition.ytdlp import download_item
                return with_retries(lambda: download_item(source, cfg), cfg)
            return with_retries(lambda: _download(source, cfg), cfg)
        raise FetchError("unsupported_scheme", f"cannot fetch {scheme}:// sources")
    except FetchError as e:
        return Rejection.for_source(source, STAGE, e.reason, e.detail, retryable=e.transient)
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
        raise FetchError("storage_error", f"{type(e).__name__}: {e}", transient=True) from e
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
    found = fs.glob(fs.join(staging_dir, source.source_id + ".*"))  # yt-dlp chose the extension
    return found[0] if found else None


def open_checked(url: str, cfg: AcquireConfig, stream: bool = True) -> requests.Response:
    """GET ``url``, following redirects by hand so every hop's address is checked first."""
    policy = cfg.policy
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, policy)
        try:
            resp = requests.get(url, stream=stream, timeout=cfg.http_timeout_s, allow_redirects=False,
                                headers={"User-Agent": USER_AGENT})
        except requests.Timeout as e:
            raise FetchError("http_timeout", f"{url}: {e}", transient=True) from e
        except requests.ConnectionError as e:
            raise FetchError("connection_error", f"{url}: {e}", transient=True) from e
        except requests.RequestException as e:
            raise FetchError("http_error", f"{url}: {e}") from e
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


def _download(source: Source, cfg: AcquireConfig) -> AudioFile:
    url, limit = source.uri, cfg.max_bytes
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
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    total += len(chunk)
                    if total > limit:
                        raise FetchError("too_large", f"{url} passed the --max_download_mb limit of "
                                         f"{cfg.max_download_mb:g} MB while downloading")
                    f.write(chunk)
            except requests.RequestException as e:
                raise FetchError("connection_error", f"download of {url} interrupted: {e}", transient=True) from e
            if declared is not None and total != declared:
                raise FetchError("connection_error", f"download of {url} incomplete: {total} of "
                                 f"{declared} bytes", transient=True)
            if total == 0:
                raise FetchError("empty_file", f"{url} returned no data")

        dest = staged_path(source, cfg.staging_dir)
        fs.atomic_write(dest, write)
        return AudioFile(source, dest, total)
