"""One writer per output: a lock file, created atomically, kept fresh, broken only when stale.

Two runs into the same ``--output`` would both start at the same shard index and overwrite each
other's shards. ``OutputLock`` creates ``OUTPUT/_lock.json`` only if it does not exist (``O_EXCL``
on a local disk; a conditional put on S3 and GCS) and rewrites its heartbeat every
``heartbeat_s``. A lock is stale when its process is gone (same host) or its heartbeat is older
than ``stale_after_s`` (another host, or a machine that died); a stale lock is broken with a
message, a live one stops the second run with a message that says who holds it.
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
    """Write ``data`` to ``path`` only if nothing is there; False when something was."""
    if fs.is_local(path):
        local = fs.local_path(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        try:
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    return create_if_absent(path, data)


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
        self.lost = False

    def _info(self) -> dict:
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                "started": self.started, "heartbeat": _now()}

    def read(self) -> Optional[dict]:
        try:
            return json.loads(fs.read_bytes(self.path))
        except Exception:
            return None

    def is_stale(self, info: dict) -> bool:
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            if not pid_alive(info["pid"]):
                return True
        return _now() - float(info.get("heartbeat") or 0) > self.stale_after_s

    def describe(self, info: dict) -> str:
        started = datetime.datetime.fromtimestamp(float(info.get("started") or 0)).isoformat(timespec="seconds")
        age = _now() - float(info.get("heartbeat") or 0)
        return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}), since {started}, "
                f"last seen {age:.0f} s ago")

    def acquire(self) -> "OutputLock":
        data = json.dumps(self._info()).encode()
        for _ in range(3):
            if _create_exclusive(self.path, data):
                self._start_heartbeat()
                return self
            info = self.read()
            if info is None:  # being written this instant, or unreadable: look again
                time.sleep(0.2)
                info = self.read()
                if info is None:
                    fs.delete_if_exists(self.path)
                    continue
            if not self.is_stale(info):
                raise LockedError(
                    f"another run is writing to {self.root}: {self.describe(info)}. Wait for it to finish; "
                    f"if it is gone, delete {self.path}")
            self.log(f"breaking a stale lock on {self.root} ({self.describe(info)})")
            fs.delete_if_exists(self.path)
        raise LockedError(f"could not take the lock {self.path}")

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, daemon=True, name="output-lock")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            info = self.read()
            if info is None or info.get("token") != self.token:
                self.lost = True
                return
            try:
                fs.atomic_write_bytes(self.path, json.dumps(self._info()).encode())
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
