"""Deterministic, WebDataset-safe identifiers.

WebDataset splits a sample name at its first dot and tar tools dislike odd characters, so every
key is limited to ``[A-Za-z0-9_-]`` and 80 characters. Ids come from ``hashlib`` (never ``hash()``,
which changes between worker processes), so every worker and every rerun agrees on them.

A source id is ``{extractor}-{id}`` (``youtube-dQw4w9WgXcQ``) or ``{scheme}-{hash of the URI}``;
a segment key is ``{source_id}_{start_ms:09d}``.
"""
from __future__ import annotations

import hashlib
import hmac
import re

from schemas.redact import redact_url

MAX_KEY_LEN = 80
_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9-]+")
_ID_HASH_CHARS = 20


def stable_hash(text: str, n: int = _ID_HASH_CHARS) -> str:
    """First ``n`` hex digits of the SHA-1 of ``text``: the same in every process and run."""
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def is_valid_key(key: str) -> bool:
    return bool(key) and len(key) <= MAX_KEY_LEN and bool(_SAFE.match(key))


def _scheme_tag(uri: str) -> str:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    return {"https": "http", "file": "file", "http": "http", "gs": "gs", "s3": "s3"}.get(
        scheme, _UNSAFE_RUN.sub("", scheme)[:10] or "src")


def source_id_for_uri(uri: str, id_key: str = "") -> str:
    """``{scheme}-{hash[:20]}`` for a normalised URI (``file``, ``http``, ``gs``, ``s3``).

    A URI without secrets is hashed as it is (SHA-1). A URI with credentials or secret-looking
    parameters is told apart by its whole text, secret included, through an HMAC keyed with the
    corpus's identity key (``id_key``, hex; ``corpus.identity_key``), so ``?key=ep101`` and
    ``?key=ep102`` are two sources while no id lets anyone test guesses of the secret without the
    key. Without a key such a URI falls back to the hash of its redacted form.
    """
    redacted = redact_url(uri)
    if redacted == uri or not id_key:
        return f"{_scheme_tag(uri)}-{stable_hash(redacted)}"
    mac = hmac.new(bytes.fromhex(id_key), uri.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return f"{_scheme_tag(uri)}-{mac.hexdigest()[:_ID_HASH_CHARS]}"


def source_id_for_extractor(extractor: str, item_id: str) -> str:
    """``{extractor}-{id}`` (``youtube-dQw4w9WgXcQ``) when both are safe, else a hash of the id."""
    ex = _UNSAFE_RUN.sub("", extractor.lower())[:20] or "item"
    safe_id = item_id if _SAFE.match(item_id or "") else stable_hash(item_id)
    sid = f"{ex}-{safe_id}"
    if len(sid) > MAX_KEY_LEN - 10:
        sid = f"{ex}-{stable_hash(item_id)}"
    return sid


def segment_key(source_id: str, start_ms: int) -> str:
    """``{source_id}_{start_ms:09d}``: unique per clip start, sortable in time order."""
    if start_ms < 0:
        raise ValueError(f"start_ms must be >= 0, got {start_ms}")
    key = f"{source_id}_{start_ms:09d}"
    if not is_valid_key(key):
        raise ValueError(f"invalid segment key {key!r}: only [A-Za-z0-9_-], at most {MAX_KEY_LEN} chars")
    return key
