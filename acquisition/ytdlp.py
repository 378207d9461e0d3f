"""yt-dlp: expand a video, playlist or channel into items, and download one item's best audio.

Expansion lists entries without downloading (``extract_flat``), bounded by the item limit. A
download fetches the best audio-only format as is (no re-encode, no post-processing), refuses live
streams and over-long or over-large media, and runs with yt-dlp's safe defaults kept: no external
downloaders, no ``exec``, ``file://`` URLs off, no cache directory. Every URL we hand it and every
media URL it picks is checked against the network policy first.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from typing import List, Optional

from acquisition.fetch import AcquireConfig, FetchError, staged_path
from acquisition.safety import check_url
from corpus import fs
from schemas.keys import source_id_for_extractor, source_id_for_uri
from schemas.records import AudioFile, Source

GENERIC = ("generic", "html5", "html5mediaembed")  # their ids ("page-1") are not unique
PERMANENT_MARKERS = ("http error 404", "http error 403", "http error 410", "private video", "unavailable",
                     "removed", "unsupported url", "not available", "copyright", "members-only",
                     "sign in to confirm your age", "no video formats", "requested format is not available")


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


def _base_params(cfg: AcquireConfig) -> dict:
    return {
        "logger": _Quiet(),
        "quiet": True, "no_warnings": True, "noprogress": True, "cachedir": False,
        "socket_timeout": cfg.http_timeout_s, "enable_file_urls": False, "external_downloader": {},
        "postprocessors": [], "extractor_retries": 0, "retries": 0, "fragment_retries": 0,
        "http_headers": {"User-Agent": "Mozilla/5.0 (speechmill corpus builder)"},
    }


def classify(message: str) -> FetchError:
    low = message.lower()
    if "is_live" in low or "live stream" in low or "live event" in low:
        return FetchError("live_stream", message)
    if any(m in low for m in PERMANENT_MARKERS):
        return FetchError("unavailable", message)
    transient = any(m in low for m in ("timed out", "timeout", "connection", "reset", "http error 5",
                                       "http error 429", "temporarily", "incomplete"))
    return FetchError("ytdlp_error", message, transient=transient)


def _run(fn):
    from yt_dlp.utils import DownloadError, ExtractorError
    try:
        return fn()
    except (DownloadError, ExtractorError) as e:
        raise classify(str(e).replace("ERROR: ", "")) from e


def item_source(entry: dict, parent: Source, index: int, fallback_extractor: str,
                uri: Optional[str] = None) -> Source:
    extractor = (entry.get("ie_key") or entry.get("extractor_key") or entry.get("extractor")
                 or fallback_extractor or "generic").lower()
    # a flat playlist entry's url is the item's page (or, for media found in HTML, the media itself)
    url = uri or entry.get("url") or entry.get("webpage_url")
    item_id = entry.get("id")
    if extractor in GENERIC or not item_id:
        sid = source_id_for_uri(url)
    else:
        sid = source_id_for_extractor(extractor, str(item_id))
    uploader = entry.get("channel") or entry.get("uploader") or entry.get("uploader_id")
    date = entry.get("upload_date")
    return Source(
        uri=url, source_id=sid, speaker=parent.speaker or entry.get("channel_id") or uploader,
        title=entry.get("title") or parent.title, license=parent.license or entry.get("license"),
        origin=f"{parent.origin} > {index + 1}", extra=parent.extra, kind="ytdlp", extractor=extractor,
        item_id=str(item_id) if item_id is not None else None,
        webpage_url=entry.get("webpage_url") or entry.get("original_url") or url, uploader=uploader,
        upload_date=f"{date[:4]}-{date[4:6]}-{date[6:8]}" if date and len(date) == 8 else date,
        declared_duration_s=float(entry["duration"]) if entry.get("duration") else None)


def expand(parent: Source, cfg: AcquireConfig) -> List[Source]:
    """The items of a playlist, channel or media page (one item for a single video)."""
    import yt_dlp
    check_url(parent.uri, cfg.policy)
    params = {**_base_params(cfg), "extract_flat": "in_playlist", "skip_download": True,
              "playlistend": cfg.max_items_per_source, "lazy_playlist": True}
    with yt_dlp.YoutubeDL(params) as ydl:
        info = _run(lambda: ydl.extract_info(parent.uri, download=False))
    if not info:
        raise FetchError("unavailable", f"yt-dlp found nothing at {parent.uri}")
    extractor = info.get("extractor_key") or info.get("extractor") or "generic"
    if info.get("_type") in ("playlist", "multi_video"):
        entries = [e for e in (info.get("entries") or []) if e][: cfg.max_items_per_source]
        if not entries:
            raise FetchError("empty_playlist", f"no items at {parent.uri}")
        return [item_source(e, parent, i, extractor) for i, e in enumerate(entries)]
    return [item_source(info, parent, 0, extractor, uri=parent.uri)]


def _refuse(cfg: AcquireConfig):
    def match(info, *, incomplete=False):
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming", "post_live"):
            return "live stream: is_live"
        dur = info.get("duration")
        if dur and cfg.max_duration_s and dur > cfg.max_duration_s:
            return f"too long: {dur:.0f} s > --max_duration_s {cfg.max_duration_s:g}"
        return None
    return match


def download_item(source: Source, cfg: AcquireConfig) -> AudioFile:
    """Download one item's best audio into the staging store (temporary name, then rename)."""
    import yt_dlp
    check_url(source.uri, cfg.policy)
    local_staging = fs.is_local(cfg.staging_dir)
    if local_staging:
        fs.mkdirs(cfg.staging_dir)
    tmp = tempfile.mkdtemp(prefix=".dl-", dir=fs.local_path(cfg.staging_dir) if local_staging else None)
    try:
        params = {**_base_params(cfg), "format": cfg.ytdlp_format, "noplaylist": True,
                  "outtmpl": {"default": os.path.join(tmp, "media.%(ext)s")}, "paths": {},
                  "max_filesize": cfg.max_bytes, "match_filter": _refuse(cfg), "overwrites": True}
        with yt_dlp.YoutubeDL(params) as ydl:
            info = _run(lambda: ydl.extract_info(source.uri, download=False))
            refusal = _refuse(cfg)(info)
            if refusal:
                raise FetchError("live_stream" if "live" in refusal else "too_long", refusal)
            for fmt in info.get("requested_formats") or [info]:
                if fmt.get("url"):
                    check_url(fmt["url"], cfg.policy)
            size = info.get("filesize") or info.get("filesize_approx")
            if size and size > cfg.max_bytes:
                raise FetchError("too_large", f"{size} bytes stated, over --max_download_mb {cfg.max_download_mb:g}")
            _run(lambda: ydl.process_ie_result(info, download=True))
        files = [f for f in os.listdir(tmp) if f.startswith("media.") and not f.endswith((".part", ".ytdl"))]
        if not files:
            raise FetchError("too_large", f"yt-dlp downloaded nothing for {source.uri} (over "
                             f"--max_download_mb {cfg.max_download_mb:g} MB, or no audio format)")
        local = os.path.join(tmp, files[0])
        size = os.path.getsize(local)
        if size > cfg.max_bytes:
            raise FetchError("too_large", f"{size} bytes, over --max_download_mb {cfg.max_download_mb:g}")
        dest = staged_path(source, cfg.staging_dir, os.path.splitext(local)[1])
        if fs.is_local(dest):
            os.replace(local, fs.local_path(dest))
        else:
            with open(local, "rb") as f:
                fs.atomic_write(dest, lambda out: shutil.copyfileobj(f, out, 1 << 20))
        return AudioFile(source, dest, size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
