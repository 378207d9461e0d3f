"""Make a source's media readable: check local files, stage HTTP downloads, check object-store URIs.

``acquire`` returns an ``AudioFile`` or a ``Rejection``; it never raises for a bad source.
Downloads are streamed to a temporary name in the staging area and renamed when complete, so an
interrupted download is never taken for a finished one, and a staged file is reused on rerun.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Union
from urllib.parse import urlparse

import requests

from corpus import fs
from schemas.records import AudioFile, Rejection, Source

STAGE = "acquire"
_EXT = re.compile(r"^\.[A-Za-z0-9]{1,5}$")
_USER_AGENT = "speechmill/0.1 (+corpus builder)"


@dataclass(frozen=True)
class AcquireConfig:
    staging_dir: str
    max_download_mb: float = 2048.0
    http_timeout_s: float = 30.0
    http_retries: int = 3
    retry_backoff_s: float = 0.5

    def validate(self) -> "AcquireConfig":
        if self.max_download_mb <= 0:
            raise ValueError(f"max_download_mb must be > 0, got {self.max_download_mb}")
        if self.http_retries < 0:
            raise ValueError(f"http_retries must be >= 0, got {self.http_retries}")
        return self


class FetchError(Exception):
    def __init__(self, reason: str, detail: str, transient: bool = False):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.transient = reason, detail, transient


def acquire(source: Source, cfg: AcquireConfig) -> Union[AudioFile, Rejection]:
    scheme = source.uri.split("://", 1)[0].lower()
    try:
        if scheme == "file":
            return _acquire_local(source)
        if scheme in ("http", "https"):
            return _acquire_http(source, cfg)
        if scheme in ("gs", "s3"):
            return _acquire_object(source)
        raise FetchError("unsupported_scheme", f"cannot fetch {scheme}:// sources")
    except FetchError as e:
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
        raise FetchError("storage_error", f"{type(e).__name__}: {e}") from e
    if size == 0:
        raise FetchError("empty_file", f"{source.uri} is empty (0 bytes)")
    return AudioFile(source, source.uri, size)


def staged_path(source: Source, staging_dir: str) -> str:
    ext = os.path.splitext(urlparse(source.uri).path)[1]
    return fs.join(staging_dir, source.source_id + (ext.lower() if _EXT.match(ext) else ".media"))


def _acquire_http(source: Source, cfg: AcquireConfig) -> AudioFile:
    dest = staged_path(source, cfg.staging_dir)
    if fs.exists(dest):
        return AudioFile(source, dest, fs.size(dest))
    last = None
    for attempt in range(cfg.http_retries + 1):
        try:
            size = _download(source.uri, dest, cfg)
            return AudioFile(source, dest, size)
        except FetchError as e:
            last = e
            if not e.transient or attempt == cfg.http_retries:
                raise
            time.sleep(cfg.retry_backoff_s * (2 ** attempt))
    raise last  # pragma: no cover


def _download(url: str, dest: str, cfg: AcquireConfig) -> int:
    limit = int(cfg.max_download_mb * 1024 * 1024)
    try:
        resp = requests.get(url, stream=True, timeout=cfg.http_timeout_s,
                            headers={"User-Agent": _USER_AGENT})
    except requests.Timeout as e:
        raise FetchError("http_timeout", str(e), transient=True) from e
    except requests.ConnectionError as e:
        raise FetchError("connection_error", str(e), transient=True) from e
    except requests.RequestException as e:
        raise FetchError("http_error", str(e)) from e
    with resp:
        if resp.status_code >= 400:
            transient = resp.status_code >= 500 or resp.status_code in (408, 429)
            raise FetchError("http_error", f"HTTP {resp.status_code} {resp.reason} for {url}", transient)
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise FetchError("too_large", f"{url} is {int(declared)} bytes, over the "
                             f"--max_download_mb limit of {cfg.max_download_mb:g} MB")
        total = 0

        def write(f):
            nonlocal total
            try:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    total += len(chunk)
                    if total > limit:
                        raise FetchError("too_large", f"{url} exceeded the --max_download_mb "
                                         f"limit of {cfg.max_download_mb:g} MB while downloading")
                    f.write(chunk)
            except requests.RequestException as e:
                raise FetchError("connection_error", f"download interrupted: {e}", transient=True) from e
            if declared and declared.isdigit() and total != int(declared):
                raise FetchError("connection_error", f"download incomplete: got {total} of "
                                 f"{declared} bytes", transient=True)
            if total == 0:
                raise FetchError("empty_file", f"{url} returned no data")

        fs.atomic_write(dest, write)
        return total
