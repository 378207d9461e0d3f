"""Podcast RSS/Atom feeds → one source per episode enclosure, newest first.

A feed is parsed as a stream (``xml.etree.ElementTree.iterparse``): each ``<item>``/``<entry>`` is
read, turned into a source and dropped, so memory grows with the number of episodes kept (a few
hundred bytes each), never with the feed's size, and no episode past some byte count is lost. A
feed that is not well-formed XML (feeds in the wild carry HTML entities and stray ``&``) is handed
to feedparser's forgiving parser when it is small enough to hold (``LENIENT_BYTES``); a larger one
is refused with the line where it breaks.

Each episode keeps what later stages and users need: title, the show's author (``uploader``: where
speaker ids are linked across episodes), publication date, stated duration and size, license or
rights statement, the episode page and the feed's guid.
"""
from __future__ import annotations

import calendar
import io
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import BinaryIO, Dict, Iterator, List, Optional, Union
from urllib.parse import urljoin

import feedparser

from schemas.errors import SpeechmillError
from schemas.keys import source_id_for_uri
from schemas.records import Source
from schemas.redact import clean_text, redact_url

MEDIA_TYPES = ("audio/", "video/")
LENIENT_BYTES = 4 << 20  # a feed that is not well-formed XML is parsed leniently up to this size
ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
_ITEM_TAGS = ("item", "entry")
_CONTAINER_TAGS = ("channel", "feed", "RDF")


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


def _size(value) -> Optional[int]:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n > 1 else None  # "0" and "1" are common placeholders


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _ns(tag) -> str:
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""


def _text(el) -> Optional[str]:
    t = (el.text or "").strip()
    return t or None


def _timestamp_of(text: Optional[str]) -> Optional[float]:
    """RFC 822 (RSS) or ISO 8601 (Atom, Dublin Core) dates as a UTC timestamp."""
    if not text:
        return None
    try:
        d = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        try:
            d = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _episode(el) -> Dict[str, object]:
    """The fields of one ``<item>``/``<entry>`` element (children read by local name)."""
    ep: Dict[str, object] = {}
    for child in el:
        name, ns = _local(child.tag), _ns(child.tag)
        if name == "enclosure" and "enclosure" not in ep:
            _take_enclosure(ep, child.get("url") or child.get("href"), child.get("type"), child.get("length"))
        elif name == "link":
            rel = child.get("rel") or "alternate"
            if rel == "enclosure" and "enclosure" not in ep:
                _take_enclosure(ep, child.get("href"), child.get("type"), child.get("length"))
            elif rel == "license":
                ep.setdefault("license", child.get("href"))
            elif rel == "alternate":
                ep.setdefault("link", child.get("href") or _text(child))
        elif name == "content" and child.get("url") and "media" not in ep:
            ep["media"] = (child.get("url"), child.get("type"), child.get("fileSize"))
        elif name == "title" and ns != ITUNES:
            ep.setdefault("title", _text(child))
        elif name in ("guid", "id"):
            ep.setdefault("id", _text(child))
        elif name in ("pubDate", "published", "date", "issued"):
            ep.setdefault("date", _text(child))
        elif name in ("updated", "modified"):
            ep.setdefault("updated", _text(child))
        elif name == "duration" and ns == ITUNES:
            ep["duration"] = _text(child)
        elif name in ("author", "creator"):
            ep.setdefault("author", _text(child) or next((_text(c) for c in child if _local(c.tag) == "name"), None))
        elif name in ("license", "rights"):
            ep.setdefault("license", _text(child) or child.get(
                "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"))
    if "enclosure" not in ep and "media" in ep:
        url, kind, size = ep["media"]
        _take_enclosure(ep, url, kind, size)
    return ep


def _take_enclosure(ep: dict, href, kind, length) -> None:
    kind = (kind or "").lower()
    if href and (not kind or kind.startswith(MEDIA_TYPES)):
        ep["enclosure"], ep["size"] = href.strip(), _size(length)


def _channel_field(show: dict, el) -> None:
    name, ns = _local(el.tag), _ns(el.tag)
    if name == "title" and ns != ITUNES:
        show.setdefault("title", _text(el))
    elif name == "author" and ns == ITUNES:
        show["itunes_author"] = _text(el)
    elif name in ("author", "creator", "managingEditor"):
        show.setdefault("author", _text(el) or next((_text(c) for c in el if _local(c.tag) == "name"), None))
    elif name in ("copyright", "rights", "license"):
        show.setdefault("rights", _text(el))


def iter_episodes(stream: BinaryIO) -> Iterator[dict]:
    """Episodes in document order, then one last dict ``{"__show__": ...}`` with the show's fields.

    Raises ``ET.ParseError`` where the XML breaks."""
    show: dict = {}
    stack = []
    for event, el in ET.iterparse(stream, events=("start", "end")):
        if event == "start":
            stack.append(el)
            continue
        stack.pop()
        name = _local(el.tag)
        parent = stack[-1] if stack else None
        if name in _ITEM_TAGS:
            yield _episode(el)
            el.clear()
            if parent is not None:
                parent.remove(el)  # nothing of a read episode stays in memory
        elif parent is not None and _local(parent.tag) in _CONTAINER_TAGS:
            _channel_field(show, el)
            parent.remove(el)
    yield {"__show__": show}


class _Recorder(io.RawIOBase):
    """Reads through ``inner`` and keeps the first ``keep`` bytes, for the lenient parser."""

    def __init__(self, inner, keep: int):
        self.inner, self.keep, self.kept, self.total = inner, keep, bytearray(), 0

    def readable(self):
        return True

    def readinto(self, b):
        data = self.inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.total += n
        if len(self.kept) < self.keep:
            self.kept += data[: self.keep - len(self.kept)]
        return n


def _lenient_episodes(body: bytes, feed_url: str) -> Iterator[dict]:
    """feedparser's reading of a feed that is not well-formed XML, as ``iter_episodes`` dicts."""
    parsed = feedparser.parse(body)
    if not parsed.entries:
        why = getattr(parsed, "bozo_exception", None)
        raise FeedError(f"no episodes in feed {feed_url}" + (f" ({why})" if why else ""))
    for entry in parsed.entries:
        links = list(entry.get("enclosures") or []) + [
            link for link in entry.get("links") or [] if link.get("rel") == "enclosure"]
        ep = {"title": entry.get("title"), "id": entry.get("id") or entry.get("guid"), "link": entry.get("link"),
              "author": entry.get("author"), "license": entry.get("license") or entry.get("rights"),
              "duration": entry.get("itunes_duration")}
        t = entry.get("published_parsed") or entry.get("updated_parsed")
        if t:
            ep["ts"] = float(calendar.timegm(t))
        for link in links:
            _take_enclosure(ep, link.get("href") or link.get("url"), link.get("type"), link.get("length"))
            if "enclosure" in ep:
                break
        yield ep
    feed = parsed.feed
    yield {"__show__": {"title": feed.get("title"), "author": feed.get("author"),
                        "itunes_author": feed.get("itunes_author"),
                        "rights": feed.get("rights") or feed.get("license")}}


def _episodes(body: Union[bytes, BinaryIO], feed_url: str) -> Iterator[dict]:
    stream = io.BytesIO(body) if isinstance(body, (bytes, bytearray)) else body
    rec = _Recorder(stream, LENIENT_BYTES)
    try:
        yield from iter_episodes(io.BufferedReader(rec, 1 << 16))
    except ET.ParseError as e:
        while rec.total <= LENIENT_BYTES and rec.read(1 << 16):
            pass
        if rec.total > LENIENT_BYTES:
            raise FeedError(f"feed {feed_url} is not well-formed XML ({e}); a feed over "
                            f"{LENIENT_BYTES >> 20} MiB must be, to be read as a stream") from e
        yield {"__restart__": True}
        yield from _lenient_episodes(bytes(rec.kept), feed_url)


def feed_items(body: Union[bytes, BinaryIO], feed_url: str, parent: Source,
               max_items: Optional[int] = None, id_key: str = "") -> List[Source]:
    """Every episode with a media enclosure of the feed in ``body`` (bytes or a binary stream) as
    sources, newest first; ``max_items`` keeps only the newest that many."""
    eps: List[dict] = []
    show: dict = {}
    for ep in _episodes(body, feed_url):
        if "__restart__" in ep:
            eps = []  # the lenient parser reads the feed again from its start
        elif "__show__" in ep:
            show = ep["__show__"]
        elif "enclosure" in ep:
            ep.setdefault("ts", _timestamp_of(ep.get("date") or ep.get("updated")))
            ep["n"] = len(eps)
            eps.append(ep)
    if not eps:
        raise FeedError(f"no episodes in feed {feed_url}")
    show_author = show.get("author") or show.get("itunes_author") or show.get("title")
    eps.sort(key=lambda ep: (-(ep["ts"] if ep["ts"] is not None else float("-inf")), ep["n"]))
    items = []
    feed_parent = parent.parent or redact_url(parent.uri)
    for ep in eps[:max_items]:
        url = ep["enclosure"]
        if not url.lower().startswith(("http://", "https://")):
            url = urljoin(feed_url, url)
        items.append(Source(
            uri=url, source_id=source_id_for_uri(url, id_key),
            speaker=parent.speaker, parent=feed_parent,
            title=clean_text(ep.get("title") or parent.title),
            license=clean_text(parent.license or ep.get("license") or show.get("rights")),
            origin=f"{parent.origin} > {len(items) + 1}", extra=parent.extra, kind="direct",
            item_id=clean_text(ep.get("id")), webpage_url=clean_text(ep.get("link")),
            uploader=clean_text(ep.get("author") or show_author),
            upload_date=_date(ep["ts"]), declared_duration_s=parse_duration(ep.get("duration")),
            size_bytes=ep.get("size"), remote=True))
    return items


def _date(ts: Optional[float]) -> Optional[str]:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d") if ts is not None else None
