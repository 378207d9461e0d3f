"""One writer per output: a lock file, created atomically, kept fresh, broken only when stale.

Two runs into the same ``--output`` would both start at the same shard index and overwrite each
other's shards. ``OutputLock`` creates ``OUTPUT/_lock.json`` only if it does not exist (``O_EXCL``
on a local disk; a conditional put on S3 and GCS) and rewrites its heartbeat every
``heartbeat_s``. A lock is stale when its process is gone (same host) or, for a holder on another
host, when its heartbeat is older than ``stale_after_s`` (a machine that died); a holder whose
process is alive on this host is never stale, however old its heartbeat (a stalled run, a
suspended laptop). A stale lock is broken with a message, a live one stops the second run with a
message that says who holds it.

Breaking is one atomic step: the stale lock is replaced by the new one only if it still holds the
bytes that were judged stale (``fs.replace_if_same``: a compare-and-rename under ``flock``
locally, an ETag or generation precondition on S3 and GCS), so of many runs breaking the same
stale lock at once exactly one ends up holding it. Heartbeats are replaced the same way, so a
holder whose lock was broken notices instead of writing over its successor's.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from storage import fs
from storage.object_store import create_if_absent

LOCK_NAME = "_lock.json"


class LockedError(RuntimeError):
    pass


class LockLost(RuntimeError):
    pass


def _now() -> float:
    return time.time()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _create_exclusive(path: str, data: bytes) -> bool:
    """Write ``data`` to ``path`` only if nothing is there; False when something was.

    Locally the bytes go to a temporary file first, which is then hard-linked to ``path`` (fails if
    it exists): a reader never sees an empty lock."""
    if fs.is_local(path):
        local = fs.local_path(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{local}{fs.TMP_MARK}{uuid.uuid4().hex[:12]}"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, local)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create exclusively, then write
            try:
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        finally:
            os.unlink(tmp)
        return True
    return create_if_absent(path, data)


def _parse(raw: bytes) -> Optional[dict]:
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


class OutputLock:
    def __init__(self, root: str, command: str, stale_after_s: float = 600.0, heartbeat_s: float = 30.0,
                 log: Callable[[str], None] = lambda m: None):
        self.path = fs.join(root, LOCK_NAME)
        self.root, self.command = root, command
        self.stale_after_s, self.heartbeat_s, self.log = stale_after_s, heartbeat_s, log
        self.token = uuid.uuid4().hex
        self.started = _now()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._written = b""  # the lock's bytes as this process last wrote them
        self.lost = False

    def _info(self) -> dict:
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                "started": self.started, "heartbeat": _now()}

    def _raw(self) -> Optional[bytes]:
        try:
            return fs.read_bytes(self.path)
        except Exception:
            return None

    def read(self) -> Optional[dict]:
        raw = self._raw()
        return _parse(raw) if raw is not None else None

    def is_stale(self, info: dict) -> bool:
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            return not pid_alive(info["pid"])  # alive here: never stale, however old its heartbeat
        try:
            return _now() - float(info.get("heartbeat") or 0) > self.stale_after_s
        except (TypeError, ValueError):
            return True

    def describe(self, info: dict) -> str:
        try:
            started = datetime.datetime.fromtimestamp(float(info.get("started") or 0)).isoformat(timespec="seconds")
            age = f"{_now() - float(info.get('heartbeat') or 0):.0f}"
        except (TypeError, ValueError, OverflowError, OSError):
            started, age = "?", "?"
        return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}), since {started}, "
                f"last seen {age} s ago")

    def acquire(self) -> "OutputLock":
        data = json.dumps(self._info()).encode()
        if fs.is_link(self.path):
            raise LockedError(f"{self.path} is a symbolic link; a corpus's lock must not be one (remove it)")
        for _ in range(20):
            if _create_exclusive(self.path, data):
                return self._took(data)
            raw = self._raw()
            if raw is None:  # released this instant: try to create it again
                continue
            info = _parse(raw)
            if info is not None and not self.is_stale(info):
                raise LockedError(
                    f"another run is writing to {self.root}: {self.describe(info)}. Wait for it to finish; "
                    f"if it is gone, delete {self.path}")
            if fs.replace_if_same(self.path, raw, data):
                self.log(f"breaking a stale lock on {self.root} "
                         f"({self.describe(info) if info is not None else 'unreadable'})")
                return self._took(data)
            # another run broke it (or its holder beat) between our read and our replace: look again
        raise LockedError(f"could not take the lock {self.path}")

    def _took(self, data: bytes) -> "OutputLock":
        self._written = data
        self._start_heartbeat()
        return self

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, daemon=True, name="output-lock")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            info = self.read()
            if info is None or info.get("token") != self.token:
                self.lost = True
                return
            data = json.dumps(self._info()).encode()
            try:
                if fs.replace_if_same(self.path, self._written, data):
                    self._written = data
                else:
                    self.lost = True  # broken and taken between our read and our write
                    return
            except Exception:
                pass  # a missed heartbeat is survivable; the next one tries again

    def check(self) -> None:
        """Raise ``LockLost`` unless this process still holds the lock (checked before publishing)."""
        info = self.read()
        if self.lost or info is None or info.get("token") != self.token:
            self.lost = True
            raise LockLost(f"the lock on {self.root} was taken over by another run; nothing more is published")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = self.read()
        if info is not None and info.get("token") == self.token:
            fs.delete_if_exists(self.path)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
