"""Small helpers over Beam ``FileSystems``, so every path may be local, ``gs://`` or ``s3://``.

Writes go to a temporary name and are renamed into place, so a reader never sees half a file and a
retried step simply writes the same bytes again. Paths are never treated as patterns: an output
folder called ``take[1]`` is listed as exactly that folder (``list_dir`` escapes glob characters;
``glob`` is only for patterns a user wrote on purpose).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Callable, Iterator, List

from storage.object_store import credentials_hint, put_empty, share_s3_clients
from storage.object_store import replace_if_same as object_replace_if_same

_RAW = "uncompressed"  # Beam's CompressionTypes.UNCOMPRESSED
TMP_MARK = ".tmp-"
_GLOB_CHARS = re.compile(r"([*?\[])")


def _filesystems():
    """Beam's ``FileSystems``, imported on first use: reading a command's options needs none of Beam."""
    from apache_beam.io.filesystems import FileSystems
    share_s3_clients()  # every process that touches storage through these helpers (driver and workers)
    return FileSystems


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    """The filesystem path of a local path or ``file://`` URI (percent-escapes decoded)."""
    if path.startswith("file://"):
        from urllib.parse import unquote_to_bytes
        raw = path[len("file://"):]
        return os.fsdecode(unquote_to_bytes(raw)) if "%" in raw else raw
    return path


def file_uri(path: str) -> str:
    """``file://`` URI of a local path: readable, with ``%``, ``?``, ``#``, control characters and
    bytes that are not UTF-8 percent-escaped, so every file name round-trips through ``local_path``."""
    raw = os.fsencode(os.path.abspath(path))
    out = []
    for piece in re.split(rb"([\x00-\x1f\x7f%?#]|[\x80-\xff]+)", raw):
        if not piece:
            continue
        if piece[0] >= 0x80:
            try:
                out.append(piece.decode("utf-8"))
                continue
            except UnicodeDecodeError:
                pass
            out.append("".join(f"%{b:02X}" for b in piece))
        elif len(piece) == 1 and (piece[0] < 0x20 or piece in (b"\x7f", b"%", b"?", b"#")):
            out.append(f"%{piece[0]:02X}")
        else:
            out.append(piece.decode("ascii"))
    return "file://" + "".join(out)


def join(base: str, *parts: str) -> str:
    if "://" not in base:  # what Beam's local filesystem does, without importing Beam
        return os.path.join(base, *parts)
    return _filesystems().join(base, *parts)


def exists(path: str) -> bool:
    return _filesystems().exists(path)


def mkdirs(path: str) -> None:
    if is_local(path):
        os.makedirs(local_path(path), exist_ok=True)
    # object stores have no directories


def escape_glob(path: str) -> str:
    return _GLOB_CHARS.sub(r"[\1]", path)


def glob(pattern: str) -> List[str]:
    """Sorted paths matching a user's ``pattern`` (empty if none). Not for our own paths."""
    result = _filesystems().match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def list_dir(directory: str, prefix: str = "", suffix: str = "") -> List[str]:
    """Files directly in ``directory`` whose names start with ``prefix`` and end with ``suffix``."""
    directory = directory.rstrip("/")
    if is_local(directory):
        d = local_path(directory)
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(os.path.join(d, n) for n in names
                      if n.startswith(prefix) and n.endswith(suffix) and os.path.isfile(os.path.join(d, n)))
    pattern = escape_glob(join(directory, prefix)) + "*" + escape_glob(suffix)
    return sorted(m.path for m in _filesystems().match([pattern])[0].metadata_list)


def list_tree(directory: str) -> List[str]:
    """Every file under ``directory``, recursively."""
    directory = directory.rstrip("/")
    if is_local(directory):
        found = []
        for dirpath, _, files in os.walk(local_path(directory)):
            found += [os.path.join(dirpath, f) for f in files]
        return sorted(found)
    return sorted(m.path for m in _filesystems().match([escape_glob(directory) + "/**"])[0].metadata_list)


def size(path: str) -> int:
    return _filesystems().match([escape_glob(path)])[0].metadata_list[0].size_in_bytes


def read_bytes(path: str) -> bytes:
    with _filesystems().open(path, compression_type=_RAW) as f:
        return f.read()


def _tmp_name(path: str) -> str:
    head, tail = path.rsplit("/", 1) if "/" in path else ("", path)
    name = f".{tail}{TMP_MARK}{uuid.uuid4().hex[:12]}"
    return f"{head}/{name}" if head else name


def is_temporary(path: str) -> bool:
    return TMP_MARK in path.rsplit("/", 1)[-1]


def atomic_write(path: str, write: Callable) -> None:
    """Call ``write(fileobj)`` on a temporary file, then rename it to ``path`` (replacing it)."""
    if is_local(path):
        mkdirs(os.path.dirname(local_path(path)) or ".")
    tmp = _tmp_name(path)
    try:
        f = _filesystems().create(tmp, compression_type=_RAW)
        try:
            write(f)
        finally:
            f.close()
        if is_local(path):
            os.replace(local_path(tmp), local_path(path))
        else:
            if _filesystems().exists(path):
                _filesystems().delete([path])
            _filesystems().rename([tmp], [path])
    except BaseException:
        with contextlib.suppress(Exception):
            if _filesystems().exists(tmp):
                _filesystems().delete([tmp])
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    if not data and path.startswith("s3://"):  # one put is atomic on S3; Beam's writer fails on no bytes
        put_empty(path)
        return
    atomic_write(path, lambda f: f.write(data))


def delete(path: str) -> None:
    _filesystems().delete([path])


def delete_if_exists(path: str) -> None:
    if is_local(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local_path(path))
    elif _filesystems().exists(path):
        _filesystems().delete([path])


def delete_tree(path: str) -> None:
    if is_local(path):
        shutil.rmtree(local_path(path), ignore_errors=True)
    else:
        paths = list_tree(path)
        if paths:
            _filesystems().delete(paths)


def move(src: str, dst: str) -> None:
    if is_local(dst):
        mkdirs(os.path.dirname(local_path(dst)))
        os.replace(local_path(src), local_path(dst))
        return
    if _filesystems().exists(dst):
        _filesystems().delete([dst])
    _filesystems().rename([src], [dst])


def modified_age_s(path: str) -> float:
    """Seconds since ``path`` was last modified (0 when unknown)."""
    try:
        meta = _filesystems().match([escape_glob(path)])[0].metadata_list[0]
        return max(0.0, time.time() - meta.last_updated_in_seconds) if meta.last_updated_in_seconds else 0.0
    except Exception:
        return 0.0


@contextlib.contextmanager
def local_copy(path: str, suffix: str = "") -> Iterator[str]:
    """A local filesystem path with the contents of ``path`` (the file itself when it is local)."""
    if is_local(path):
        yield local_path(path)
        return
    fd, tmp = tempfile.mkstemp(prefix="speechmill-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, _filesystems().open(path, compression_type=_RAW) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        yield tmp
    finally:
        os.unlink(tmp)


def describe_storage_error(e: BaseException, path: str) -> str:
    """A one-line reason for an object-store failure, naming what to set when credentials are missing."""
    text = f"{type(e).__name__}: {e}"
    inner = e
    while inner is not None:
        name = type(inner).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError") or "credentials" in str(inner).lower():
            return credentials_hint(path)
        if name in ("DefaultCredentialsError", "RefreshError"):
            return credentials_hint(path)
        inner = inner.__cause__ or inner.__context__
    return text.splitlines()[0][:500] if text else type(e).__name__




def digest(path: str) -> tuple:
    """(sha256 hex, size in bytes) of the file at ``path``, read in 1 MiB pieces."""
    import hashlib
    h, n = hashlib.sha256(), 0
    if is_local(path):
        with open(local_path(path), "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
        return h.hexdigest(), n
    with _filesystems().open(path, compression_type=_RAW) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def sizes(directory: str, suffix: str = "") -> dict:
    """{path: size} of the files directly in ``directory`` (one listing; links are not followed)."""
    directory = directory.rstrip("/")
    if is_local(directory):
        d = local_path(directory)
        out = {}
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        for e in entries:
            if e.name.endswith(suffix) and e.is_file(follow_symlinks=False):
                out[e.path] = e.stat(follow_symlinks=False).st_size
        return out
    pattern = escape_glob(directory + "/") + "*" + escape_glob(suffix)
    return {m.path: m.size_in_bytes for m in _filesystems().match([pattern])[0].metadata_list
            if "/" not in m.path[len(directory) + 1:]}


def is_link(path: str) -> bool:
    """True when a local ``path`` is a symbolic link (object stores have none)."""
    return is_local(path) and os.path.islink(local_path(path))


def replace_if_same(path: str, expected: bytes, data: bytes) -> bool:
    """Replace the file at ``path`` with ``data`` only if it still holds ``expected``, in one atomic step.

    Two processes that read the same old contents and both try to replace them: exactly one
    succeeds. Locally the compare and the rename happen under an exclusive ``flock`` of the folder;
    on S3 the put carries ``If-Match`` with the old object's ETag, on GCS ``ifGenerationMatch``.
    """
    if is_local(path):
        import fcntl
        local = local_path(path)
        folder = os.path.dirname(os.path.abspath(local))
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with open(local, "rb") as f:
                    if f.read() != expected:
                        return False
            except FileNotFoundError:
                return False
            atomic_write_bytes(path, data)
            return True
        finally:
            os.close(fd)  # closing the descriptor releases the flock
    return object_replace_if_same(path, expected, data)
