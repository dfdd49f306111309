"""Envoy started on the config `mplus gateway` would write, returned once it serves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from harness.waiting import wait_until
from server import gateway
from server.config import Settings


def start_envoy(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    config = gateway.write_config(settings)
    with log.open("wb") as sink:
        process = subprocess.Popen(gateway.envoy_command(config), stdout=sink, stderr=sink)
    admin = f"http://127.0.0.1:{settings.envoy_admin_port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"envoy exited: {log.read_text()}")
        clusters = httpx.get(f"{admin}/clusters", timeout=1).text
        return httpx.get(f"{admin}/ready", timeout=1).text.strip() == "LIVE" and (
            "mplus_grpc::" in clusters and "health_flags::healthy" in clusters
        )

    wait_until(ready, "envoy to be ready with a healthy upstream")
    return process
