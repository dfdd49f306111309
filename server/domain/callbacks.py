"""Where a receipt may be posted: the SSRF rule on callback addresses, without any DNS lookup."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOCALHOST = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
"""What `localhost` (and any name under `.localhost`) means, whatever a resolver says."""


@lru_cache(maxsize=16)
def allowed_networks(networks: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """`Limits.callback_allow_networks` (CIDR text, checked at start) as networks."""
    return tuple(ipaddress.ip_network(network, strict=False) for network in networks)


def address_refusal(address: IPAddress, allowed: Iterable[IPNetwork]) -> str | None:
    """Why a receipt may not go to `address`, or None: a loopback, private, link-local,
    multicast, unspecified, reserved or otherwise non-global address is refused unless it
    lies in an allowed network. An IPv4-mapped IPv6 address is judged as its IPv4 address."""
    judged = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        judged = address.ipv4_mapped
    kind = _kind(judged)
    if kind is None or any(a in network for network in allowed for a in {address, judged}):
        return None
    shown = address if judged is address else f"{address} ({judged})"
    return f"{shown} is a {kind} address (allow it with MPLUS_CALLBACK_ALLOW_NETWORKS)"


def host_refusal(host: str, allowed: Iterable[IPNetwork]) -> str | None:
    """Why a callback naming `host` is refused already, without DNS: an IP literal outside the
    rule, or `localhost` when neither loopback address is allowed. A name that only resolves
    to such an address is caught when the receipt is posted (callback_guard)."""
    host = host.lower().rstrip(".")
    networks = tuple(allowed)
    if host == "localhost" or host.endswith(".localhost"):
        refusals = [address_refusal(address, networks) for address in LOCALHOST]
        return None if None in refusals else f"{host} is a loopback name: {refusals[0]}"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone is no safer
    except ValueError:
        return None
    return address_refusal(address, networks)


def _kind(address: IPAddress) -> str | None:
    """The first forbidden class `address` is in, or None for a public address."""
    for kind, member in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    ):
        if member:
            return kind
    return None
