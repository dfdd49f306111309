"""The running Envoy's own configuration: what an operator must be able to rely on."""

from __future__ import annotations

import httpx

from tests.support.stack import Stack


def config_dump(stack: Stack) -> dict:  # type: ignore[type-arg]
    admin = f"http://127.0.0.1:{stack.settings.envoy_admin_port}"
    dump: dict = httpx.get(f"{admin}/config_dump", timeout=5).json()  # type: ignore[type-arg]
    return dump


def test_the_admin_interface_listens_on_loopback_only(stack: Stack) -> None:
    (bootstrap,) = [c for c in config_dump(stack)["configs"] if "bootstrap" in c]
    assert bootstrap["bootstrap"]["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
