"""Direct HTTP downloads into the staging store, through the network policy.

Every connection is checked and pinned (``guarded_http``), redirects are followed by hand so each
hop is checked too, and a download has a total deadline (``--download_timeout_s``) besides the
per-read timeout. Transient failures (timeouts, resets, 5xx, 429) are retried within the run with
exponential backoff (``with_retries``).
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator, Optional
from urllib.parse import urljoin

import requests
import urllib3

from acquisition import guarded_http
from acquisition.config import AcquireConfig
from acquisition.errors import FetchError, UnsafeURL
from acquisition.safety import parse_checked
from acquisition.staging import staged_path, write_staged
from schemas.records import AudioFile, Source

USER_AGENT = "speechmill/0.1 (speech corpus builder)"
MAX_REDIRECTS = 5


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


def with_retries(fn, cfg: AcquireConfig):
    """Call ``fn()``; retry transient ``FetchError``s with exponential backoff."""
    for attempt in range(cfg.http_retries + 1):
        try:
            return fn()
        except FetchError as e:
            if not e.transient or attempt == cfg.http_retries:
                raise
            time.sleep(cfg.retry_backoff_s * (2 ** attempt))


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


def download(source: Source, cfg: AcquireConfig) -> AudioFile:
    """Download a direct link into the staging store within ``--download_timeout_s``."""
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
        write_staged(dest, write)
        return AudioFile(source, dest, total)
