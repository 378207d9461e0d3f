"""The staging store: where downloads land, under ``{source_id}.{ext}``.

A file appears under its staged name only when complete (written under a temporary name and
renamed), so a rerun that finds a staged source by its id skips the download, and an interrupted
download is never taken for a finished one.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Callable, Optional
from urllib.parse import urlparse

from schemas.records import Source
from storage import fs

_EXT = re.compile(r"^\.[A-Za-z0-9]{1,5}$")


def staged_path(source: Source, staging_dir: str, ext: Optional[str] = None) -> str:
    if ext is None:
        ext = os.path.splitext(urlparse(source.uri).path)[1]
    ext = ext if ext.startswith(".") else "." + ext
    return fs.join(staging_dir, source.source_id + (ext.lower() if _EXT.match(ext) else ".media"))


def find_staged(source: Source, staging_dir: str) -> Optional[str]:
    """The staged file of this source id, if a finished download is there."""
    if not source.extractor:  # a direct link's staged name is known: no directory listing
        path = staged_path(source, staging_dir)
        return path if fs.exists(path) else None
    found = fs.list_dir(staging_dir, prefix=source.source_id + ".")  # yt-dlp chose the extension
    return found[0] if found else None


def write_staged(dest: str, write: Callable) -> None:
    """Stage ``dest`` from ``write(file)``: the name appears only once the file is complete."""
    fs.atomic_write(dest, write)


def move_staged(local: str, dest: str) -> None:
    """Stage the finished local file ``local`` as ``dest`` (a rename where the store is local)."""
    if fs.is_local(dest):
        os.replace(local, fs.local_path(dest))
    else:
        with open(local, "rb") as f:
            fs.atomic_write(dest, lambda out: shutil.copyfileobj(f, out, 1 << 20))
