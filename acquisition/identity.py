"""The identity of a local file: what it holds, not where it lies.

A folder that is moved, renamed or mounted elsewhere must not become new sources (that would add
every sample to the corpus a second time). A local source's id is therefore a fingerprint of its
content: its size and bytes sampled at fixed places (the first and last 64 KiB and 32 blocks of
4 KiB spread evenly between them; files up to 1 MiB are read whole). That costs one read of
≈ 256 KiB per file however large it is, and two recordings that differ anywhere a listener
would notice differ in it. An edited file is a new source; an identical copy in two folders is
one source.

Before this rule a local source's id was a hash of its absolute path; ``legacy_id`` gives that id
so that corpora built earlier still recognise their finished sources.
"""
from __future__ import annotations

import hashlib
import os

from schemas.keys import source_id_for_uri

_EDGE = 64 * 1024
_BLOCK = 4 * 1024
_BLOCKS = 32
_WHOLE = 1 << 20


def fingerprint(path: str) -> str:
    """SHA-1 hex of the file's size and sampled content."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f"speechmill-local-v1:{size}:".encode())
        if size <= _WHOLE:
            h.update(f.read())
            return h.hexdigest()
        h.update(f.read(_EDGE))
        span = size - 2 * _EDGE - _BLOCK
        for i in range(_BLOCKS):
            f.seek(_EDGE + span * i // (_BLOCKS - 1))
            h.update(f.read(_BLOCK))
        f.seek(size - _EDGE)
        h.update(f.read(_EDGE))
    return h.hexdigest()


def local_source_id(path: str) -> str:
    """``file-{fingerprint[:20]}``, or the path-based id when the file cannot be read (yet)."""
    try:
        if os.path.isfile(path):
            return "file-" + fingerprint(path)[:20]
    except OSError:
        pass
    return legacy_id(path)


def legacy_id(path: str) -> str:
    """The id a local file had when ids came from its absolute path."""
    return source_id_for_uri("file://" + os.path.abspath(path))
