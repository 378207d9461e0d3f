"""Refuse URLs that could reach inside the machine's network.

Source lists come from untrusted places. Before any request (and before following any redirect),
the host is resolved and every address it resolves to must be public: loopback, private,
link-local (cloud metadata lives at 169.254.169.254), carrier-grade NAT, multicast, reserved and
unspecified addresses are refused unless they fall inside an allowed network
(``--allow_private_networks``, all of them, or a comma-separated list of CIDRs).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import urlsplit

WEB_SCHEMES = ("http", "https")
METADATA_HOSTS = ("metadata.google.internal", "metadata", "instance-data")
_ALL = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


class UnsafeURL(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class NetworkPolicy:
    """Which non-public networks may be reached; empty means none."""

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


def is_public(addr) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified
                or (addr.version == 4 and addr in ipaddress.ip_network("100.64.0.0/10")))


def resolve(host: str, port: int):
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UnsafeURL("dns_error", f"cannot resolve {host}: {e}") from e
    return sorted({ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos}, key=str)


def check_url(url: str, policy: NetworkPolicy) -> None:
    """Raise ``UnsafeURL`` unless ``url`` is http(s) to a host whose every address is allowed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in WEB_SCHEMES:
        raise UnsafeURL("unsupported_scheme", f"only http and https may be fetched, not {scheme or 'no scheme'}: {url}")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeURL("bad_url", f"no host in {url}")
    if host in METADATA_HOSTS and not policy.allowed:
        raise UnsafeURL("private_address", f"{host} is a cloud metadata host")
    port = parts.port or (443 if scheme == "https" else 80)
    for addr in resolve(host, port):
        if not is_public(addr) and not policy.permits(addr):
            raise UnsafeURL("private_address",
                            f"{host} resolves to {addr}, a non-public address (pass "
                            f"--allow_private_networks to allow it)")
