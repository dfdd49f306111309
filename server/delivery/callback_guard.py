"""Connections to callback URLs that can reach only addresses the SSRF rule allows.

The host is resolved once and every address it resolves to is checked (server.domain.callbacks);
the connection then goes to a checked address, never through a second lookup that a hostile DNS
server could answer differently (DNS rebinding). The Host header, TLS SNI and the certificate
check keep the URL's hostname."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Any
from urllib.parse import SplitResult

from server.domain.callbacks import IPNetwork, address_refusal, host_refusal

Resolved = tuple[socket.AddressFamily, int, int, tuple[Any, ...]]
"""One getaddrinfo answer: family, socket type, protocol, socket address."""


class CallbackRefused(Exception):
    """The callback's host is, or resolves to, an address the rule refuses; waiting will not
    make it public, so the receipt is given up."""


def resolve_allowed(host: str, port: int, allowed: Sequence[IPNetwork]) -> list[Resolved]:
    """Every address `host` resolves to, each one allowed; CallbackRefused when any is not
    (a name mixing public and private answers is refused whole) or none resolves. The system
    resolver's own timeouts bound the lookup."""
    refusal = host_refusal(host, allowed)
    if refusal:
        raise CallbackRefused(refusal)
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OSError(f"{host} did not resolve ({type(error).__name__})") from error
    resolved: list[Resolved] = []
    for family, kind, protocol, _name, address in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        refusal = address_refusal(ip_address(str(address[0]).split("%", 1)[0]), allowed)
        if refusal:
            raise CallbackRefused(f"{host} resolves to {refusal}")
        resolved.append((family, kind, protocol, address))
    if not resolved:
        raise OSError(f"{host} resolved to no IP address")
    return resolved


def guarded_connection(
    url: SplitResult, allowed: Sequence[IPNetwork], timeout_s: float, tls: ssl.SSLContext
) -> http.client.HTTPConnection:
    """An unopened connection for `url` (http or https) pinned to its checked addresses; each
    socket operation bounded by `timeout_s`. Raises CallbackRefused (for a URL that is not
    http(s) too: stored before today's rules), or OSError when the host does not resolve."""
    try:
        host, port = url.hostname, url.port
    except ValueError:  # a malformed port
        host = port = None
    if url.scheme not in ("http", "https") or not host:
        raise CallbackRefused(f"{url.geturl()[:100]!r} is not an absolute http or https URL")
    port = port or (443 if url.scheme == "https" else 80)
    addresses = resolve_allowed(host, port, allowed)
    if url.scheme == "https":
        return _PinnedHTTPSConnection(host, port, addresses, timeout_s, tls)
    return _PinnedHTTPConnection(host, port, addresses, timeout_s)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: list[Resolved], timeout_s: float) -> None:
        super().__init__(host, port, timeout=timeout_s)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect_first(self._addresses, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(
        self,
        host: str,
        port: int,
        addresses: list[Resolved],
        timeout_s: float,
        tls: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout_s, context=tls)
        self._addresses = addresses
        self._tls = tls

    def connect(self) -> None:
        plain = _connect_first(self._addresses, self.timeout)
        try:
            self.sock = self._tls.wrap_socket(plain, server_hostname=self.host)
        except BaseException:
            plain.close()
            raise


def _connect_first(addresses: list[Resolved], timeout_s: float | None) -> socket.socket:
    """A socket connected to the first of `addresses` that answers; the last error if none."""
    last: OSError | None = None
    for family, kind, protocol, address in addresses:
        sock = socket.socket(family, kind, protocol)
        sock.settimeout(timeout_s)
        try:
            sock.connect(address)
        except OSError as error:
            sock.close()
            last = error
            continue
        return sock
    assert last is not None, "resolve_allowed returns at least one address"
    raise last
