"""The corpus's identity key: the secret that source ids of URLs with secrets are keyed with.

URLs that differ only in a token (``?key=ep101``, ``?key=ep102``) must be different sources, yet the
token must not be written anywhere. Their ids are an HMAC of the whole URL under this key
(``schemas.keys.source_id_for_uri``). The key is made once, at random, when a corpus is first
built, and kept in the corpus (``identity.key``) so that every rerun gives every URL the same id.
It is needed to build into the corpus, never to read it: leave it out when publishing.
"""
from __future__ import annotations

import secrets

from storage import fs

KEY_FILE = "identity.key"


def read(root: str) -> str:
    """The key of the corpus at ``root`` (hex), or ``""`` when it has none yet."""
    path = fs.join(root, KEY_FILE)
    return fs.read_bytes(path).decode().strip() if fs.exists(path) else ""


def new() -> str:
    """A fresh key (32 random bytes, hex)."""
    return secrets.token_hex(32)


def save(root: str, key: str) -> None:
    """Keep ``key`` as the corpus's (under the output's lock, before the first commit)."""
    fs.mkdirs(root)
    fs.atomic_write_bytes(fs.join(root, KEY_FILE), (key + "\n").encode())


def read_or_create(root: str) -> str:
    """The corpus's key, made and saved when the corpus has none."""
    key = read(root)
    if not key:
        save(root, new())
    return read(root)
