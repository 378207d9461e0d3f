"""HTTP requests that connect only where the network policy allows, within a total deadline.

``session(policy)`` is a ``requests`` session whose connections resolve the host once through
``safety.resolve_checked`` and connect to exactly that address (TLS still verifies the host
name), so the check and the connection cannot disagree. Environment proxies are ignored: a proxy
would connect on our behalf to whatever it resolves.

``Deadline`` bounds a whole download, not each read: every socket a guarded connection opens in
the current thread is registered, and when the deadline passes they are shut down, so a server
that trickles one byte a second cannot hold a worker forever.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import List, Optional

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from acquisition.safety import NetworkPolicy, resolve_checked

_local = threading.local()


class Deadline:
    """Shut down this thread's guarded sockets once ``seconds`` have passed."""

    def __init__(self, seconds: Optional[float]):
        self.seconds = seconds
        self.expired = False
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                _shutdown(sock)
            self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._sockets:
                _shutdown(s)

    def __enter__(self) -> "Deadline":
        self._outer = getattr(_local, "deadline", None)
        _local.deadline = self
        if self.seconds:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        _local.deadline = self._outer


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _PinnedMixin:
    policy: NetworkPolicy = NetworkPolicy()

    def _new_conn(self) -> socket.socket:
        addr = resolve_checked(self._dns_host, self.port, self.policy)  # UnsafeURL propagates as is
        family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            for opt in self.socket_options or ():
                sock.setsockopt(*opt)
            timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
            sock.settimeout(timeout)
            deadline = getattr(_local, "deadline", None)
            if deadline is not None:
                deadline.register(sock)
            sock.connect((str(addr), self.port))
        except socket.timeout as e:
            sock.close()
            from urllib3.exceptions import ConnectTimeoutError
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from e
        except OSError as e:
            sock.close()
            from urllib3.exceptions import NewConnectionError
            raise NewConnectionError(self, f"Failed to establish a new connection: {e}") from e
        return sock


def _adapter_for(policy: NetworkPolicy) -> HTTPAdapter:
    http_conn = type("PinnedHTTPConnection", (_PinnedMixin, HTTPConnection), {"policy": policy})
    https_conn = type("PinnedHTTPSConnection", (_PinnedMixin, HTTPSConnection), {"policy": policy})
    http_pool = type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn})
    https_pool = type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})

    class PinnedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

    return PinnedAdapter(max_retries=0)


def session(policy: NetworkPolicy) -> requests.Session:
    """A new session whose every connection is checked and pinned; close it (``with``) when done."""
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", _adapter_for(policy))
    s.mount("https://", _adapter_for(policy))
    return s
