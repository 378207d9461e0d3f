"""Small helpers over Beam ``FileSystems``, so every path may be local, ``gs://`` or ``s3://``.

Writes go to a temporary name and are renamed into place, so a reader never sees half a file and a
retried step simply writes the same bytes again.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from typing import Callable, Iterator, List

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_RAW = CompressionTypes.UNCOMPRESSED


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def mkdirs(path: str) -> None:
    if is_local(path):
        os.makedirs(local_path(path), exist_ok=True)
    # object stores have no directories


def glob(pattern: str) -> List[str]:
    """Sorted paths matching ``pattern`` (empty if none)."""
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def size(path: str) -> int:
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=_RAW) as f:
        return f.read()


def _tmp_name(path: str) -> str:
    head, tail = path.rsplit("/", 1) if "/" in path else ("", path)
    name = f".{tail}.tmp-{uuid.uuid4().hex[:12]}"
    return f"{head}/{name}" if head else name


def atomic_write(path: str, write: Callable) -> None:
    """Call ``write(fileobj)`` on a temporary file, then rename it to ``path`` (replacing it)."""
    if is_local(path):
        mkdirs(os.path.dirname(local_path(path)) or ".")
    tmp = _tmp_name(path)
    try:
        f = FileSystems.create(tmp, compression_type=_RAW)
        try:
            write(f)
        finally:
            f.close()
        if FileSystems.exists(path):
            FileSystems.delete([path])
        FileSystems.rename([tmp], [path])
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def delete(path: str) -> None:
    FileSystems.delete([path])


def delete_tree(path: str) -> None:
    if is_local(path):
        shutil.rmtree(local_path(path), ignore_errors=True)
    else:
        paths = glob(path.rstrip("/") + "/**")
        if paths:
            FileSystems.delete(paths)


def move(src: str, dst: str) -> None:
    if FileSystems.exists(dst):
        FileSystems.delete([dst])
    if is_local(dst):
        mkdirs(os.path.dirname(local_path(dst)))
    FileSystems.rename([src], [dst])


@contextlib.contextmanager
def local_copy(path: str, suffix: str = "") -> Iterator[str]:
    """A local filesystem path with the contents of ``path`` (the file itself when it is local)."""
    if is_local(path):
        yield local_path(path)
        return
    fd, tmp = tempfile.mkstemp(prefix="speechmill-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, FileSystems.open(path, compression_type=_RAW) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        yield tmp
    finally:
        os.unlink(tmp)
