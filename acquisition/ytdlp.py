"""yt-dlp: expand a video, playlist or channel into items, and download one item's best audio.

Expansion lists entries without downloading (``extract_flat``), up to ``--max_listed_items``. A
download fetches the best audio-only format as is (no re-encode, no post-processing), refuses live
streams and over-long or over-large media, and runs with yt-dlp's safe defaults kept: no external
downloaders (HLS and DASH are fetched by yt-dlp's own code, never handed to ffmpeg), no ``exec``,
``file://`` URLs off, no cache directory.

Every request yt-dlp makes — pages, playlists, segments, media, redirects — goes through a
checking proxy (``acquisition.egress``) that resolves each host once, refuses non-public addresses
and connects to exactly the address it checked; the proxy also bounds the whole download's time
and bytes. Failures are classified by yt-dlp's exception types (HTTP status, transport errors,
extractor "expected" errors), never by the words of a message.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from typing import List, Optional

from acquisition.config import AcquireConfig
from acquisition.egress import CheckingProxy, checking_proxy
from acquisition.errors import FetchError, UnsafeURL
from acquisition.safety import parse_checked
from acquisition.staging import move_staged, staged_path
from schemas.keys import source_id_for_extractor, source_id_for_uri
from schemas.records import AudioFile, Source
from schemas.redact import clean_text, redact_url
from storage import fs

GENERIC = ("generic", "html5", "html5mediaembed")  # their ids ("page-1") are not unique
WEB_PROTOCOLS = ("http", "https", "m3u8", "m3u8_native", "http_dash_segments")


@functools.lru_cache(maxsize=1)
def _site_extractors():
    from yt_dlp.extractor import gen_extractor_classes
    return [ie for ie in gen_extractor_classes() if ie.ie_key() not in ("Generic",)]


def site_extractor(url: str) -> Optional[str]:
    """The name of a site-specific yt-dlp extractor for ``url`` (None when only the generic one fits)."""
    for ie in _site_extractors():
        try:
            if ie.suitable(url) and ie.working():
                return ie.ie_key()
        except Exception:
            continue
    return None


class _Quiet:
    """yt-dlp prints errors itself even when quiet; ours are recorded as rejections instead."""

    def debug(self, msg):
        pass

    info = warning = error = debug


def _base_params(cfg: AcquireConfig, proxy: CheckingProxy) -> dict:
    return {
        "logger": _Quiet(),
        "quiet": True, "no_warnings": True, "noprogress": True, "cachedir": False,
        "socket_timeout": cfg.http_timeout_s, "enable_file_urls": False,
        "external_downloader": {"default": "native"}, "hls_prefer_native": True,
        "postprocessors": [], "extractor_retries": 0, "retries": 0, "fragment_retries": 0,
        "proxy": proxy.url, "geo_bypass": False,
        "http_headers": {"User-Agent": "Mozilla/5.0 (speechmill corpus builder)"},
    }


def _causes(exc: BaseException):
    """The exception and everything it wraps (yt-dlp keeps the original in ``exc_info``/``cause``)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        info = getattr(e, "exc_info", None)
        if isinstance(info, tuple) and len(info) > 1:
            todo.append(info[1])
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]


def classify(exc: BaseException, proxy: Optional[CheckingProxy] = None) -> Exception:
    """A ``FetchError`` (or ``UnsafeURL``) for a yt-dlp failure, judged by exception types."""
    from yt_dlp.networking.exceptions import HTTPError, IncompleteRead, TransportError
    from yt_dlp.utils import ExtractorError, GeoRestrictedError, UnsupportedError, UserNotLive

    message = _message(exc)
    if proxy is not None and proxy.refusals:
        first = proxy.refusals[0]
        return UnsafeURL(first.reason, first.detail)
    if proxy is not None and proxy.stopped_by == "deadline":
        return FetchError("download_timeout", f"yt-dlp took longer than --download_timeout_s: {message}")
    if proxy is not None and proxy.stopped_by == "size":
        return FetchError("too_large", f"more than --max_download_mb was sent: {message}")
    causes = list(_causes(exc))
    for e in causes:
        if isinstance(e, HTTPError):
            status = int(e.status)
            transient = status >= 500 or status in (408, 429)
            return FetchError("http_error", f"HTTP {status} {e.reason or ''}".strip() + f": {message}", transient)
    for e in causes:
        if isinstance(e, UserNotLive):
            return FetchError("unavailable", message)
        if isinstance(e, UnsupportedError):
            return FetchError("unsupported_url", message)
        if isinstance(e, GeoRestrictedError):
            return FetchError("unavailable", message)
        if isinstance(e, (IncompleteRead, TransportError, TimeoutError, ConnectionError)):
            return FetchError("connection_error", message, transient=True)
    for e in causes:
        if isinstance(e, ExtractorError) and e.expected:
            return FetchError("unavailable", message)
    return FetchError("ytdlp_error", message)


def _message(exc: BaseException) -> str:
    text = str(exc).replace("ERROR: ", "").strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _run(fn, proxy: CheckingProxy):
    from yt_dlp.utils import YoutubeDLError
    try:
        return fn()
    except YoutubeDLError as e:
        raise classify(e, proxy) from e


def item_source(entry: dict, parent: Source, index: int, fallback_extractor: str,
                uri: Optional[str] = None, id_key: str = "") -> Source:
    extractor = (entry.get("ie_key") or entry.get("extractor_key") or entry.get("extractor")
                 or fallback_extractor or "generic").lower()
    # a flat playlist entry's url is the item's page (or, for media found in HTML, the media itself)
    url = uri or entry.get("url") or entry.get("webpage_url")
    item_id = entry.get("id")
    if extractor in GENERIC or not item_id:
        sid = source_id_for_uri(url, id_key)  # a link with a secret: keyed with the corpus's identity key
    else:
        sid = source_id_for_extractor(extractor, str(item_id))
    uploader = clean_text(entry.get("channel_id") or entry.get("channel") or entry.get("uploader")
                          or entry.get("uploader_id"))
    date = entry.get("upload_date")
    return Source(
        uri=url, source_id=sid, speaker=parent.speaker, parent=parent.parent or redact_url(parent.uri),
        title=clean_text(entry.get("title")) or parent.title,
        license=parent.license or clean_text(entry.get("license")),
        origin=f"{parent.origin} > {index + 1}", extra=parent.extra, kind="ytdlp", extractor=extractor,
        item_id=clean_text(str(item_id)) if item_id is not None else None,
        webpage_url=clean_text(entry.get("webpage_url") or entry.get("original_url") or url), uploader=uploader,
        upload_date=f"{date[:4]}-{date[4:6]}-{date[6:8]}" if date and len(date) == 8 else date,
        declared_duration_s=float(entry["duration"]) if entry.get("duration") else None,
        remote=uri is None or parent.remote)


def expand(parent: Source, cfg: AcquireConfig) -> List[Source]:
    """The items of a playlist, channel or media page (one item for a single video)."""
    import yt_dlp
    parse_checked(parent.uri)
    with checking_proxy(cfg.policy, deadline_s=cfg.download_timeout_s, io_timeout_s=cfg.http_timeout_s) as proxy:
        params = {**_base_params(cfg, proxy), "extract_flat": "in_playlist", "skip_download": True,
                  "playlistend": cfg.max_listed_items, "lazy_playlist": True}
        with yt_dlp.YoutubeDL(params) as ydl:
            info = _run(lambda: ydl.extract_info(parent.uri, download=False), proxy)
    if not info:
        raise FetchError("unavailable", f"yt-dlp found nothing at {parent.uri}")
    extractor = info.get("extractor_key") or info.get("extractor") or "generic"
    if info.get("_type") in ("playlist", "multi_video"):
        entries = [e for e in (info.get("entries") or []) if e][: cfg.max_listed_items]
        if not entries:
            raise FetchError("empty_playlist", f"no items at {parent.uri}")
        return [item_source(e, parent, i, extractor, id_key=cfg.id_key) for i, e in enumerate(entries)]
    return [item_source(info, parent, 0, extractor, uri=parent.uri, id_key=cfg.id_key)]


def _refusal(info: dict, cfg: AcquireConfig) -> Optional[FetchError]:
    """Why an item is not downloaded (a live stream, or longer than ``--max_duration_s``), if it is not."""
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming", "post_live"):
        return FetchError("live_stream", "live stream: is_live")
    dur = info.get("duration")
    if dur and cfg.max_duration_s and dur > cfg.max_duration_s:
        return FetchError("too_long", f"too long: {dur:.0f} s > --max_duration_s {cfg.max_duration_s:g}")
    return None


def _refuse(cfg: AcquireConfig):
    """yt-dlp's ``match_filter``: the refusal's text, or None to go on."""
    def match(info, *, incomplete=False):
        refusal = _refusal(info, cfg)
        return refusal.detail if refusal else None
    return match


def _check_formats(info: dict) -> None:
    for fmt in info.get("requested_formats") or [info]:
        protocol = (fmt.get("protocol") or "https").split("+")[0]
        if protocol not in WEB_PROTOCOLS:
            raise FetchError("unsupported_protocol", f"the chosen format is fetched over {protocol}, "
                             f"not HTTP(S)")
        if fmt.get("url"):
            parse_checked(fmt["url"])


def download_item(source: Source, cfg: AcquireConfig) -> AudioFile:
    """Download one item's best audio into the staging store (temporary name, then rename)."""
    import yt_dlp
    parse_checked(source.uri)
    local_staging = fs.is_local(cfg.staging_dir)
    if local_staging:
        fs.mkdirs(cfg.staging_dir)
    tmp = tempfile.mkdtemp(prefix=".dl-", dir=fs.local_path(cfg.staging_dir) if local_staging else None)
    try:
        with checking_proxy(cfg.policy, deadline_s=cfg.download_timeout_s, max_bytes=int(cfg.max_bytes * 1.05) + (1 << 20),
                            io_timeout_s=cfg.http_timeout_s) as proxy:
            params = {**_base_params(cfg, proxy), "format": cfg.ytdlp_format, "noplaylist": True,
                      "outtmpl": {"default": os.path.join(tmp, "media.%(ext)s")}, "paths": {},
                      "max_filesize": cfg.max_bytes, "match_filter": _refuse(cfg), "overwrites": True}
            with yt_dlp.YoutubeDL(params) as ydl:
                info = _run(lambda: ydl.extract_info(source.uri, download=False), proxy)
                refusal = _refusal(info, cfg)
                if refusal:
                    raise refusal
                _check_formats(info)
                size = info.get("filesize") or info.get("filesize_approx")
                if size and size > cfg.max_bytes:
                    raise FetchError("too_large", f"{size} bytes stated, over --max_download_mb {cfg.max_download_mb:g}")
                _run(lambda: ydl.process_ie_result(info, download=True), proxy)
        files = [f for f in os.listdir(tmp) if f.startswith("media.") and not f.endswith((".part", ".ytdl"))]
        if not files:
            raise FetchError("too_large", f"yt-dlp downloaded nothing for {source.uri} (over "
                             f"--max_download_mb {cfg.max_download_mb:g} MB, or no audio format)")
        local = os.path.join(tmp, files[0])
        size = os.path.getsize(local)
        if size > cfg.max_bytes:
            raise FetchError("too_large", f"{size} bytes, over --max_download_mb {cfg.max_download_mb:g}")
        dest = staged_path(source, cfg.staging_dir, os.path.splitext(local)[1])
        move_staged(local, dest)
        return AudioFile(source, dest, size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
