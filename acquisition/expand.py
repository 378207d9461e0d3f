"""Turn one line of the sources file into the media items it stands for.

* a local folder → its audio and video files, recursively (sorted);
* a ``gs://``/``s3://`` prefix (ending in ``/``) or glob → the matching objects;
* a URL a site extractor of yt-dlp knows (YouTube video, playlist, channel …) → its items;
* an HLS or DASH manifest (``.m3u8``, ``.mpd``) → yt-dlp, which fetches and joins the segments
  (and refuses live streams);
* any other ``http(s)`` URL: a media extension means a direct link; otherwise the first bytes
  decide: audio/video → direct link, an RSS/Atom feed → its episodes, an HTML page → whatever
  yt-dlp's generic extractor finds in it.
A ``kind`` column (``direct``, ``feed``, ``ytdlp``, ``folder``) skips the guessing.

A feed is read whole, as a stream (``acquisition.feeds``); playlists, folders and buckets are
listed up to ``--max_listed_items`` items. Which of them a run takes (those not done yet,
at most ``--max_items_per_source``) is decided by the expand transform, which records the rest as
deferred so that later runs reach them. Items named by remote content are marked ``remote``: only
http(s) is ever fetched for them.
"""
from __future__ import annotations

import gzip
import io
import os
from typing import Iterator, List, Tuple, Union

from acquisition import ytdlp
from acquisition.config import AcquireConfig
from acquisition.errors import FetchError, UnsafeURL
from acquisition.feeds import FeedError, feed_items, looks_like_feed
from acquisition.http import open_checked
from acquisition.identity import legacy_id, local_source_id
from acquisition.safety import check_remote_item
from schemas.errors import SpeechmillError
from schemas.keys import source_id_for_uri
from schemas.outcomes import Stage
from schemas.records import Rejection, Source
from schemas.redact import redact_url
from storage import fs

STAGE = Stage.EXPAND
MEDIA_EXTENSIONS = frozenset(
    ".wav .mp3 .flac .m4a .m4b .aac .ogg .oga .opus .wma .aif .aiff .au .amr .caf .mka .ac3 "
    ".mp4 .m4v .mkv .webm .mov .avi .3gp .mpg .mpeg .ts .flv".split())
STREAM_MANIFESTS = (".m3u8", ".mpd")  # HLS / DASH: segments that only yt-dlp can fetch and join
STREAM_TYPES = ("application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl",
                "application/dash+xml")
SNIFF_BYTES = 64 << 10  # what the first bytes of a response must tell: media, feed or page
GZIP_MAGIC = b"\x1f\x8b"


def is_media_path(path: str) -> bool:
    """A URL or object path with a media extension (a query string is not part of the name)."""
    return os.path.splitext(path.split("?", 1)[0])[1].lower() in MEDIA_EXTENSIONS


def is_media_name(name: str) -> bool:
    """A local file name with a media extension (``?`` and ``#`` are ordinary characters here)."""
    return os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS


def _child(parent: Source, uri: str, index: int, source_id: str = None, alias: str = None) -> Source:
    return Source(uri=uri, source_id=source_id or source_id_for_uri(uri), speaker=parent.speaker,
                  title=parent.title, license=parent.license, origin=f"{parent.origin} > {index + 1}",
                  extra=parent.extra, kind="direct", alias=alias, parent=parent.parent or redact_url(parent.uri))


def folder_items(parent: Source, max_items: int) -> List[Source]:
    """Media files under a local folder, sorted; any file name the OS allows (bytes included)."""
    root = fs.local_path(parent.uri)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if is_media_name(f)]
    found.sort(key=os.fsencode)
    return [_child(parent, fs.file_uri(p), i, local_source_id(p), legacy_id(p))
            for i, p in enumerate(found[:max_items])]


def object_items(parent: Source, max_items: int) -> List[Source]:
    if parent.uri.endswith("/"):
        pattern = fs.escape_glob(parent.uri) + "**"  # a prefix is a prefix, whatever its characters
    else:
        pattern = parent.uri  # a glob the user wrote
    paths = [p for p in fs.glob(pattern) if is_media_path(p)]
    return [_child(parent, p, i) for i, p in enumerate(paths[:max_items])]


class _Body(io.RawIOBase):
    """The response body as a stream: the sniffed head first, then the rest as it arrives (content
    encodings such as gzip undone); more than ``limit`` bytes is an error, not a silent cut."""

    def __init__(self, head: bytes, raw, limit: int, url: str):
        self.head, self.raw, self.limit, self.url, self.total = head, raw, limit, url, 0

    def readable(self):
        return True

    def readinto(self, b):
        if self.head:
            data, self.head = self.head[:len(b)], self.head[len(b):]
        else:
            data = self.raw.read(len(b), decode_content=True)
        self.total += len(data)
        if self.total > self.limit:
            raise FetchError("too_large", f"{self.url}: the listing is larger than --max_download_mb "
                                          f"({self.limit >> 20} MiB)")
        b[:len(data)] = data
        return len(data)


def _probe_http(parent: Source, cfg: AcquireConfig) -> List[Source]:
    with open_checked(parent.uri, cfg) as resp:
        ctype = resp.headers.get("Content-Type", "").lower()
        if ctype.split(";")[0].strip() in STREAM_TYPES:
            return ytdlp.expand(parent, cfg)
        if ctype.startswith(("audio/", "video/")):
            return [parent]
        body = io.BufferedReader(_Body(resp.raw.read(SNIFF_BYTES, decode_content=True), resp.raw,
                                       int(cfg.max_download_mb * (1 << 20)), redact_url(parent.uri)), 1 << 16)
        if body.peek(2)[:2] == GZIP_MAGIC:  # a feed served as a .gz file rather than gzip-encoded
            body = io.BufferedReader(gzip.GzipFile(fileobj=body), 1 << 16)
        try:
            head = body.peek(SNIFF_BYTES)[:SNIFF_BYTES]
        except (OSError, EOFError) as e:
            raise FeedError(f"{redact_url(parent.uri)}: cannot be decompressed ({e})") from e
        if parent.kind == "feed" or looks_like_feed(ctype, head):
            return feed_items(body, parent.uri, parent, id_key=cfg.id_key)  # every episode, read as a stream
    if "html" in ctype or head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return ytdlp.expand(parent, cfg)
    return [parent]


def is_own_item(source: Source) -> bool:
    """True when ``source`` is its one item and telling so needs no network: ``kind`` direct, a local
    file, a bucket object that is no prefix or glob. The driver lists these itself (no pipeline)."""
    scheme = source.uri.split("://", 1)[0].lower()
    if source.kind == "direct":
        return True
    if scheme == "file":
        return not os.path.isdir(fs.local_path(source.uri))
    if scheme in ("gs", "s3"):
        return not (source.uri.endswith("/") or any(c in source.uri for c in "*?["))
    return False


def expand_source(source: Source, cfg: AcquireConfig) -> List[Source]:
    """The media items of ``source``; raises ``FetchError``/``UnsafeURL``/``FeedError`` on failure."""
    scheme = source.uri.split("://", 1)[0].lower()
    if source.kind == "direct":
        return [source]
    if scheme == "file":
        path = fs.local_path(source.uri)
        if os.path.isdir(path):
            items = folder_items(source, cfg.max_listed_items)
            if not items:
                raise FetchError("empty_folder", f"no audio or video files under {path}")
            return items
        return [source]
    if scheme in ("gs", "s3"):
        if source.uri.endswith("/") or any(c in source.uri for c in "*?["):
            items = object_items(source, cfg.max_listed_items)
            if not items:
                raise FetchError("empty_folder", f"no audio or video objects match {source.uri}")
            return items
        return [source]
    path = source.uri.split("?", 1)[0].lower()
    if source.kind == "ytdlp" or (source.kind == "auto" and (path.endswith(STREAM_MANIFESTS)
                                                             or ytdlp.site_extractor(source.uri))):
        return ytdlp.expand(source, cfg)
    if source.kind == "auto" and is_media_path(source.uri):
        return [source]
    return _probe_http(source, cfg)


def expand(source: Source, cfg: AcquireConfig) -> Iterator[Union[Source, Rejection, Tuple[Source, Rejection]]]:
    """``expand_source`` that turns failures into rejections of ``source``; a remote item that is not
    http(s) comes as ``(item, its rejection)`` (the rest of the feed goes on)."""
    try:
        items = expand_source(source, cfg)
    except SpeechmillError as e:  # FetchError, UnsafeURL, FeedError
        yield Rejection.for_error(source, STAGE, e)
        return
    except Exception as e:
        yield Rejection.for_source(source, STAGE, "expand_error", f"{type(e).__name__}: {e}")
        return
    for item in items:
        try:
            check_remote_item(item)
        except UnsafeURL as e:
            yield item, Rejection.for_source(item, STAGE, e.reason, e.detail)
            continue
        yield item

