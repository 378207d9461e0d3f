"""Podcast RSS/Atom feeds → one source per episode enclosure, newest first.

Parsing is feedparser's (RSS 0.9x/1.0/2.0, Atom, iTunes tags). Each episode keeps what later stages
and users need: title, the show's author (``uploader``: where speaker ids are linked across
episodes), publication date, stated duration,
license or rights statement, the episode page and the feed's guid.
"""
from __future__ import annotations

import calendar
from typing import List, Optional
from urllib.parse import urljoin

import feedparser

from schemas.errors import SpeechmillError
from schemas.keys import source_id_for_uri
from schemas.records import Source
from schemas.redact import clean_text, redact_url

MEDIA_TYPES = ("audio/", "video/")


class FeedError(SpeechmillError, ValueError):
    """A feed that cannot be read; its rejected row's reason is ``bad_feed``."""

    reason = "bad_feed"


def looks_like_feed(content_type: str, head: bytes) -> bool:
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct in ("application/rss+xml", "application/atom+xml", "application/rdf+xml"):
        return True
    sniff = head[:2048].lstrip().lower()
    if ct in ("application/xml", "text/xml") or sniff.startswith(b"<?xml"):
        return b"<rss" in sniff or b"<feed" in sniff or b"<rdf" in sniff
    return sniff.startswith((b"<rss", b"<feed"))


def parse_duration(value) -> Optional[float]:
    """iTunes durations: seconds, MM:SS or HH:MM:SS."""
    if value in (None, ""):
        return None
    try:
        parts = [float(p) for p in str(value).strip().split(":")]
    except ValueError:
        return None
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return total if total > 0 else None


def _enclosure(entry) -> Optional[str]:
    links = list(entry.get("enclosures") or []) + [l for l in entry.get("links") or [] if l.get("rel") == "enclosure"]
    for link in links:
        href, kind = link.get("href") or link.get("url"), (link.get("type") or "").lower()
        if href and (not kind or kind.startswith(MEDIA_TYPES)):
            return href
    return None


def _date(entry) -> Optional[str]:
    t = entry.get("published_parsed") or entry.get("updated_parsed")
    return "%04d-%02d-%02d" % t[:3] if t else None


def _timestamp(entry) -> float:
    t = entry.get("published_parsed") or entry.get("updated_parsed")
    return float(calendar.timegm(t)) if t else float("-inf")


def feed_items(body: bytes, feed_url: str, parent: Source, max_items: int) -> List[Source]:
    """The newest ``max_items`` episodes of the feed in ``body`` as sources."""
    parsed = feedparser.parse(body)
    if not parsed.entries:
        why = getattr(parsed, "bozo_exception", None)
        raise FeedError(f"no episodes in feed {feed_url}" + (f" ({why})" if why else ""))
    feed = parsed.feed
    show_author = feed.get("author") or feed.get("itunes_author") or feed.get("title")
    show_rights = feed.get("rights") or feed.get("license")
    ordered = sorted(enumerate(parsed.entries), key=lambda ie: (-_timestamp(ie[1]), ie[0]))
    items = []
    for _, entry in ordered:
        href = _enclosure(entry)
        if not href:
            continue
        url = urljoin(feed_url, href)
        items.append(Source(
            uri=url, source_id=source_id_for_uri(url),
            speaker=parent.speaker, parent=parent.parent or redact_url(parent.uri),
            title=clean_text(entry.get("title") or parent.title),
            license=clean_text(parent.license or entry.get("license") or entry.get("rights") or show_rights),
            origin=f"{parent.origin} > {len(items) + 1}", extra=parent.extra, kind="direct",
            item_id=clean_text(entry.get("id") or entry.get("guid")), webpage_url=clean_text(entry.get("link")),
            uploader=clean_text(entry.get("author") or show_author), upload_date=_date(entry),
            declared_duration_s=parse_duration(entry.get("itunes_duration")), remote=True))
        if len(items) >= max_items:
            break
    return items
