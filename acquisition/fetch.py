"""Make a source's media readable: check local files, stage downloads, check object-store URIs.

``acquire`` returns an ``AudioFile`` or a ``Rejection``; it never raises for a bad source. It
dispatches on the scheme: local files and object-store URIs are checked where they are; web
sources are downloaded into the staging store (``acquisition.staging``), by plain HTTP
(``acquisition.http``) or by yt-dlp for pages a site extractor understands (``acquisition.ytdlp``).

Only the sources file may name local paths and buckets. A source found in remote content (a feed's
enclosure, a page's media, a playlist entry) is fetched only over http(s), through the network
policy: ``file://``, ``s3://`` or ``gs://`` there would let a stranger's feed read the worker's
files or the operator's buckets. Whether a failure that persists is tried again on the next run
follows ``schemas.outcomes``.
"""
from __future__ import annotations

import os
from typing import Union

from acquisition import http, ytdlp
from acquisition.config import AcquireConfig
from acquisition.errors import FetchError
from acquisition.safety import WEB_SCHEMES, check_remote_item
from acquisition.staging import find_staged
from schemas.errors import SpeechmillError
from schemas.outcomes import Stage
from schemas.records import AudioFile, Rejection, Source
from storage import fs

STAGE = Stage.ACQUIRE


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
                return http.with_retries(lambda: ytdlp.download_item(source, cfg), cfg)
            return http.with_retries(lambda: http.download(source, cfg), cfg)
        raise FetchError("unsupported_scheme", f"cannot fetch {scheme}:// sources")
    except SpeechmillError as e:
        return Rejection.for_error(source, STAGE, e)
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
