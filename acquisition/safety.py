"""Refuse URLs that could reach inside the machine's network.

Source lists, feeds and pages are untrusted. Every connection speechmill (or yt-dlp, through the
checking proxy in ``egress``) opens goes through ``resolve_checked``: the host is resolved once,
every address it resolves to must be global, and the connection is made to exactly the address
that was checked, so a name that answers differently on its next lookup (DNS rebinding) gains
nothing. Loopback, private, link-local (cloud metadata lives at 169.254.169.254), shared
(100.64/10), multicast, reserved, documentation and unspecified ranges are refused, and so are IPv6
addresses that embed one of those IPv4 addresses (IPv4-mapped and -compatible, 6to4, Teredo,
NAT64), unless they fall inside a network allowed by ``--allow_private_networks``.

A URL must also mean the same thing to every parser that reads it: one that Python's ``urllib``
and urllib3 (requests) would send to different hosts is refused, as are URLs with backslashes,
whitespace or control characters in them.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple
from urllib.parse import urlsplit

from acquisition.errors import UnsafeURL
from schemas.records import Source

WEB_SCHEMES = ("http", "https")
METADATA_HOSTS = ("metadata.google.internal", "metadata", "instance-data", "metadata.azure.internal")
_ALL = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPAT = ipaddress.ip_network("::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated (SIIT, RFC 2765): ::ffff:0:a.b.c.d
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")

# the one place names are resolved (tests swap it to simulate a rebinding name server)
RESOLVER: Callable = socket.getaddrinfo


@dataclass(frozen=True)
class NetworkPolicy:
    """Which non-global networks may be reached; empty means none."""

    allowed: Tuple = ()

    @classmethod
    def parse(cls, value: Optional[str]) -> "NetworkPolicy":
        """``None`` → public only; ``"all"`` → everything; ``"127.0.0.0/8,10.1.0.0/16"`` → those."""
        if value is None or value == "":
            return cls(())
        if value.strip().lower() == "all":
            return cls(_ALL)
        nets = []
        for part in value.split(","):
            part = part.strip()
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError as e:
                raise ValueError(f"--allow_private_networks: {part!r} is not a network ({e})") from e
        return cls(tuple(nets))

    def permits(self, addr) -> bool:
        return any(addr.version == n.version and addr in n for n in self.allowed)


def embedded_ipv4(addr: ipaddress.IPv6Address) -> List[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (transition mechanisms route to them)."""
    found = []
    if addr.ipv4_mapped:
        found.append(addr.ipv4_mapped)
    if addr.sixtofour:
        found.append(addr.sixtofour)
    if addr.teredo:
        found.extend(addr.teredo)
    if any(addr in n for n in (*_NAT64, _SIIT)) or (addr in _V4_COMPAT and int(addr) > 1):
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def is_public(addr) -> bool:
    """True for a globally routable unicast address that embeds no non-global IPv4 address."""
    if addr.is_multicast or not addr.is_global:
        return False
    if addr.version == 6:
        if addr in ipaddress.ip_network("fec0::/10"):  # deprecated site-local
            return False
        return all(is_public(v4) for v4 in embedded_ipv4(addr))
    return True


def _allowed(addr, policy: NetworkPolicy) -> bool:
    return is_public(addr) or policy.permits(addr)


def _literal(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def resolve_checked(host: str, port: int, policy: NetworkPolicy):
    """The one address to connect to for ``host``: resolved once, every answer checked.

    Raises ``UnsafeURL`` (``private_address`` or ``dns_error``). Callers connect to the returned
    address itself, never to the name again.
    """
    host = (host or "").lower().rstrip(".")
    if not host:
        raise UnsafeURL("bad_url", "no host")
    if host in METADATA_HOSTS and not policy.permits(ipaddress.ip_address("169.254.169.254")):
        raise UnsafeURL("private_address", f"{host} is a cloud metadata host")
    literal = _literal(host)
    if literal is not None:
        addrs = [literal]
    else:
        try:
            infos = RESOLVER(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise UnsafeURL("dns_error", f"cannot resolve {host}: {e}") from e
        addrs = []
        for info in infos:
            a = ipaddress.ip_address(info[4][0].split("%")[0])
            if a not in addrs:
                addrs.append(a)
        if not addrs:
            raise UnsafeURL("dns_error", f"{host} has no addresses")
    for addr in addrs:
        if not _allowed(addr, policy):
            raise UnsafeURL("private_address",
                            f"{host} resolves to {addr}, a non-public address (pass "
                            f"--allow_private_networks to allow it)")
    return addrs[0]


def _urllib3_host(url: str) -> Optional[str]:
    from urllib3.util import parse_url
    try:
        return (parse_url(url).host or "").strip("[]").lower() or None
    except Exception:
        return None


def parse_checked(url: str) -> Tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL every parser agrees on; raises ``UnsafeURL``."""
    if not isinstance(url, str) or _BAD_URL_CHARS.search(url):
        raise UnsafeURL("bad_url", f"URL has whitespace, control characters or backslashes: {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UnsafeURL("bad_url", f"cannot parse {url!r}: {e}") from e
    scheme = parts.scheme.lower()
    if scheme not in WEB_SCHEMES:
        raise UnsafeURL("unsupported_scheme", f"only http and https may be fetched, not {scheme or 'no scheme'}: {url}")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeURL("bad_url", f"no host in {url}")
    if parts.netloc.count("@") > 1 or _urllib3_host(url) != host:
        raise UnsafeURL("ambiguous_url", f"parsers disagree on the host of {url!r}")
    return scheme, host, port or (443 if scheme == "https" else 80)


def check_url(url: str, policy: NetworkPolicy):
    """Raise ``UnsafeURL`` unless ``url`` is http(s) to a host whose every address is allowed.

    Returns the address a connection must use. A check alone does not protect a later connection
    by name; ``guarded_http`` and ``egress`` connect to the checked address.
    """
    _, host, port = parse_checked(url)
    return resolve_checked(host, port, policy)


def check_remote_item(source: Source) -> None:
    """Refuse a source named by remote content unless it is an http(s) URL."""
    if source.remote:
        scheme = source.uri.split("://", 1)[0].lower() if "://" in source.uri else ""
        if scheme not in WEB_SCHEMES:
            raise UnsafeURL("unsupported_scheme",
                            f"a feed, page or playlist named a {scheme or 'non-URL'} location; only "
                            f"http(s) links found in remote content are fetched")
