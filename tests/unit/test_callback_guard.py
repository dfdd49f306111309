"""The SSRF rule on callback addresses, and the guard that resolves a host once and checks it."""

from __future__ import annotations

import socket
import ssl
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import pytest

from server.delivery.callback_guard import CallbackRefused, guarded_connection, resolve_allowed
from server.domain.callbacks import address_refusal, allowed_networks, host_refusal

NONE: tuple[Any, ...] = ()
LOOPBACK = allowed_networks(("127.0.0.0/8",))


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "non-public"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
    ],
)
def test_non_public_addresses_are_refused_by_kind(address: str, kind: str) -> None:
    refusal = address_refusal(ip_address(address), NONE) or ""
    assert refusal.endswith(f" is a {kind} address (allow it with MPLUS_CALLBACK_ALLOW_NETWORKS)")
    assert address.removeprefix("::ffff:") in refusal, "a mapped address shows its IPv4 form"


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::6810:85e5"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ip_address(address), NONE) is None


def test_an_allowed_network_admits_its_addresses_and_their_ipv4_mapped_forms_only() -> None:
    assert address_refusal(ip_address("127.0.0.1"), LOOPBACK) is None
    assert address_refusal(ip_address("::ffff:127.0.0.1"), LOOPBACK) is None
    assert address_refusal(ip_address("::1"), LOOPBACK) is not None
    assert address_refusal(ip_address("10.0.0.1"), LOOPBACK) is not None
    mapped = allowed_networks(("::ffff:10.0.0.0/104",))
    assert address_refusal(ip_address("::ffff:10.1.2.3"), mapped) is None


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "api.localhost"])
def test_localhost_is_loopback_without_asking_dns(host: str) -> None:
    assert (host_refusal(host, NONE) or "").startswith(f"{host.lower().rstrip('.')} is a loopback")
    assert host_refusal(host, LOOPBACK) is None, "either loopback address allowed admits it"


@pytest.mark.parametrize("host", ["example.com", "my-website.com", "127.0.0.1.nip.io", "8.8.8.8"])
def test_names_and_public_literals_pass_the_check_without_dns(host: str) -> None:
    assert host_refusal(host, NONE) is None


def test_a_zoned_ipv6_literal_is_judged_by_its_address() -> None:
    assert host_refusal("fe80::1%eth0", NONE) is not None


def answers(*addresses: str) -> list[tuple[Any, ...]]:
    return [
        (
            socket.AF_INET6 if ":" in a else socket.AF_INET,
            socket.SOCK_STREAM,
            6,
            "",
            (a, 443, 0, 0) if ":" in a else (a, 443),
        )
        for a in addresses
    ]


def test_every_address_a_name_resolves_to_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """One private answer among public ones refuses the name whole: a resolver that mixes them
    is a rebinding attempt, or a misconfiguration nobody should post receipts into."""
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_a, **_k: answers("8.8.8.8", "10.0.0.7"))
    with pytest.raises(
        CallbackRefused, match=r"hooks\.example resolves to 10\.0\.0\.7 is a private"
    ):
        resolve_allowed("hooks.example", 443, NONE)


def test_a_public_name_resolves_to_its_checked_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *_a, **_k: answers("93.184.216.34", "2606:4700::1")
    )
    resolved = resolve_allowed("hooks.example", 443, NONE)
    assert [address[3][0] for address in resolved] == ["93.184.216.34", "2606:4700::1"]


def test_a_literal_is_refused_before_any_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("resolved")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(CallbackRefused, match="loopback"):
        resolve_allowed("localhost", 80, NONE)
    with pytest.raises(CallbackRefused, match="private"):
        resolve_allowed("192.168.0.10", 80, NONE)


def test_a_name_that_does_not_resolve_is_a_network_error_not_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def nxdomain(*_args: Any, **_kwargs: Any) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", nxdomain)
    with pytest.raises(OSError, match="did not resolve") as caught:
        resolve_allowed("nowhere.example", 80, NONE)
    assert not isinstance(caught.value, CallbackRefused)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/dr", "https:///dr", "http://example.com:99999/"]
)
def test_a_stored_url_that_is_not_http_is_refused_not_a_crash(url: str) -> None:
    """Rows queued before today's rules, or by hand, end as given up like any refusal."""
    with pytest.raises(CallbackRefused, match="not an absolute http or https URL"):
        guarded_connection(urlsplit(url), NONE, 1.0, ssl.create_default_context())
