"""Typed values read from an environment mapping, each bad one a ConfigError naming its variable.

Kept apart from `config.py`, which says which variable sets which setting: the parsing rules
(bounds, number formats, address forms) are written once here and read the same everywhere.
An unset or empty variable means its default.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from server.errors import ConfigError

MIN_RATE, MAX_RATE = 0.001, 1_000_000.0
"""Rate limits in requests per second: from one per ~17 minutes to what no host serves."""


MIN_SECRET_LENGTH = 16


class EnvReader:
    """Reads MPLUS_* variables from one mapping (os.environ, or a test's dict)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._given(name) or default

    def integer(self, name: str, default: int, low: int = 0, high: int = 65535) -> int:
        raw = self._given(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {raw!r}")
        return value

    def milliseconds(self, name: str, default: int) -> int:
        """At least 1: a zero would switch PostgreSQL's bound off, and no bound is the bug."""
        return self.integer(name, default, 1, 86_400_000)

    def rate(self, name: str, default: float) -> float:
        raw = self._given(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(
                f"{name} must be a number of requests per second, got {raw!r}"
            ) from None
        if value != 0 and not MIN_RATE <= value <= MAX_RATE:
            raise ConfigError(
                f"{name} must be 0 (off) or between {MIN_RATE} and {MAX_RATE:g} requests "
                f"per second, got {raw!r}"
            )
        return value

    def address(self, name: str, default: str) -> str:
        raw = self.text(name, default)
        try:
            ipaddress.ip_address(raw)
        except ValueError:
            raise ConfigError(
                f"{name} must be an IP address such as 127.0.0.1 or 0.0.0.0, got {raw!r}"
            ) from None
        return raw

    def endpoints(self, name: str) -> tuple[tuple[str, int], ...]:
        parsed = []
        for endpoint in self._listed(name):
            try:
                parsed.append(_split_host_port(endpoint))
            except ValueError:
                raise ConfigError(
                    f"{name} must list IP:port endpoints separated by commas "
                    f"(e.g. 10.0.0.5:50051,[fd00::6]:50051), got {endpoint!r}"
                ) from None
        return tuple(parsed)

    def networks(self, name: str) -> tuple[str, ...]:
        networks = []
        for part in self._listed(name):
            try:
                networks.append(str(ipaddress.ip_network(part, strict=False)))
            except ValueError:
                raise ConfigError(
                    f"{name} must list networks separated by commas (e.g. 127.0.0.0/8,::1/128), "
                    f"got {part!r}"
                ) from None
        return tuple(networks)

    def secret(self, name: str) -> str:
        """A shared secret: unset (""), or long enough not to be guessed."""
        value = self._given(name) or ""
        if value and (len(value) < MIN_SECRET_LENGTH or not value.isprintable() or " " in value):
            raise ConfigError(
                f"{name} must be at least {MIN_SECRET_LENGTH} printable characters without "
                f"spaces (e.g. from `openssl rand -hex 32`), got one of {len(value)} characters"
            )
        return value

    def tls_files(self) -> tuple[Path | None, Path | None]:
        """MPLUS_TLS_CERT and MPLUS_TLS_KEY: both or neither, readable files, made absolute
        (Envoy resolves a relative path against its own working directory)."""
        given = {name: self._env.get(name, "") for name in ("MPLUS_TLS_CERT", "MPLUS_TLS_KEY")}
        if not any(given.values()):
            return None, None
        if not all(given.values()):
            missing = next(name for name, value in given.items() if not value)
            raise ConfigError(
                f"{missing} must be set too: TLS needs both MPLUS_TLS_CERT and MPLUS_TLS_KEY"
            )
        paths = []
        for name, value in given.items():
            path = Path(value).resolve()
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ConfigError(f"{name} must name a readable PEM file, got {value!r}")
            paths.append(path)
        return paths[0], paths[1]

    def _given(self, name: str) -> str | None:
        """The variable's value; None when it is unset or empty (its default applies)."""
        return self._env.get(name) or None

    def _listed(self, name: str) -> list[str]:
        """A comma-separated list, blanks around and between items ignored."""
        return [part.strip() for part in (self._given(name) or "").split(",") if part.strip()]


def _split_host_port(endpoint: str) -> tuple[str, int]:
    """`10.0.0.5:50051` or `[fd00::6]:50051` → (host, port); ValueError when it is neither."""
    host, separator, port_text = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    port = int(port_text)
    if not separator or not 1 <= port <= 65535:
        raise ValueError(endpoint)
    ipaddress.ip_address(host)
    return host, port
