"""A checking forward proxy on 127.0.0.1 through which every request yt-dlp makes must pass.

yt-dlp fetches pages, playlists, HLS segments and media URLs, and follows redirects, on its own.
Rather than trusting each of those code paths, a download runs with ``proxy=`` set to one of
these: plain ``http://`` requests arrive as absolute URIs and ``https://`` ones as ``CONNECT``;
either way the proxy resolves the host once with ``safety.resolve_checked``, connects to exactly
that address, and relays bytes. TLS stays end to end between yt-dlp and the site, so certificates
are still verified against the host name.

A refused request gets a 403 and is recorded in ``refusals``, so the caller can report the real
reason (``private_address`` ...) instead of yt-dlp's generic HTTP error. A deadline and a byte
budget bound the whole session: past either, every connection is closed.
"""
from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
import time
from typing import Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

from acquisition.safety import NetworkPolicy, UnsafeURL, parse_checked, resolve_checked

_HEAD_LIMIT = 64 * 1024
_HOP_HEADERS = ("proxy-connection", "proxy-authorization", "connection", "keep-alive")


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        proxy = self.server.proxy
        client = self.request
        proxy.track(client)
        client.settimeout(proxy.io_timeout_s)
        try:
            head, rest = _read_head(client)
        except (OSError, ValueError):
            return
        if head is None:
            return
        lines = head.split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            _reply(client, 400, "Bad Request")
            return
        try:
            if method.upper() == "CONNECT":
                host, port = _split_host_port(target, 443)
                upstream = proxy.connect(host, port, f"https://{target}")
                _reply(client, 200, "Connection established")
                first = rest
            else:
                _, host, port = parse_checked(target)
                upstream = proxy.connect(host, port, target)
                first = _origin_request(method, target, version, lines[1:]) + rest
        except UnsafeURL as e:
            proxy.refuse(e)
            _reply(client, 403, "Forbidden", f"refused: {e.reason}")
            return
        except OSError as e:
            _reply(client, 502, "Bad Gateway", str(e))
            return
        with contextlib.closing(upstream):
            if first:
                upstream.sendall(first)
            if method.upper() != "CONNECT" and not _forward_response_head(upstream, client, proxy):
                return
            proxy.relay(client, upstream)


def _read_head(sock: socket.socket) -> Tuple[Optional[str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(8192)
        if not chunk:
            return None, b""
        buf += chunk
        if len(buf) > _HEAD_LIMIT:
            raise ValueError("request head too large")
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def _forward_response_head(upstream: socket.socket, client: socket.socket, proxy: "CheckingProxy") -> bool:
    """Pass the origin's response head on with ``Connection: close``: one request per connection,
    so a client never sends its next request down a connection the proxy is about to close."""
    try:
        head, rest = _read_head(upstream)
    except (OSError, ValueError):
        return False
    if head is None:
        return False
    lines = [h for h in head.split("\r\n") if h.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")]
    data = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode("latin-1") + rest
    proxy._count(len(rest))
    try:
        client.sendall(data)
    except OSError:
        return False
    return True


def _split_host_port(target: str, default: int) -> Tuple[str, int]:
    if target.startswith("["):
        host, _, port = target[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = target.rpartition(":") if ":" in target else (target, "", "")
    return host, int(port) if port else default


def _origin_request(method: str, target: str, version: str, header_lines: List[str]) -> bytes:
    parts = urlsplit(target)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    kept = [h for h in header_lines if h and h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
    return (f"{method} {path} {version}\r\n" + "".join(h + "\r\n" for h in kept)
            + "Connection: close\r\n\r\n").encode("latin-1")


def _reply(sock: socket.socket, status: int, reason: str, body: str = "") -> None:
    data = body.encode()
    with contextlib.suppress(OSError):
        sock.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: "CheckingProxy"

    def handle_error(self, request, client_address):
        pass  # a client that hangs up is not an error worth printing


class CheckingProxy:
    """A proxy for one download session; use as a context manager, pass ``url`` to yt-dlp."""

    def __init__(self, policy: NetworkPolicy, deadline_s: Optional[float] = None,
                 max_bytes: Optional[int] = None, io_timeout_s: float = 30.0):
        self.policy, self.deadline_s, self.max_bytes = policy, deadline_s, max_bytes
        self.io_timeout_s = io_timeout_s
        self.refusals: List[UnsafeURL] = []
        self.received = 0
        self.stopped_by: Optional[str] = None  # "deadline" or "size" when the proxy cut everything
        self._socks: List[socket.socket] = []
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.stopped_by:
                _close(sock)

    def connect(self, host: str, port: int, target: str) -> socket.socket:
        addr = resolve_checked(host, port, self.policy)
        family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.io_timeout_s)
        self.track(sock)
        try:
            sock.connect((str(addr), port))
        except OSError:
            sock.close()
            raise
        return sock

    def refuse(self, err: UnsafeURL) -> None:
        with self._lock:
            self.refusals.append(err)

    def relay(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        idle_since = time.monotonic()
        while not self.stopped_by:
            try:
                ready, _, _ = select.select(list(peers), [], [], 1.0)
            except (OSError, ValueError):
                return
            if not ready:
                if time.monotonic() - idle_since > self.io_timeout_s:
                    return
                continue
            idle_since = time.monotonic()
            for s in ready:
                try:
                    data = s.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if s is b:
                    self._count(len(data))
                try:
                    peers[s].sendall(data)
                except OSError:
                    return

    def _count(self, n: int) -> None:
        with self._lock:
            self.received += n
            if self.max_bytes is not None and self.received > self.max_bytes:
                self._stop("size")

    def _stop(self, why: str) -> None:
        if not self.stopped_by:
            self.stopped_by = why
            for s in self._socks:
                _close(s)

    def _expire(self) -> None:
        with self._lock:
            self._stop("deadline")

    def __enter__(self) -> "CheckingProxy":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True, name="egress-proxy").start()
        self._timer = None
        if self.deadline_s:
            self._timer = threading.Timer(self.deadline_s, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for s in self._socks:
                _close(s)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def checking_proxy(policy: NetworkPolicy, deadline_s: Optional[float] = None,
                   max_bytes: Optional[int] = None, io_timeout_s: float = 30.0) -> Iterator[CheckingProxy]:
    with CheckingProxy(policy, deadline_s, max_bytes, io_timeout_s) as p:
        yield p
