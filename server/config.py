"""Typed settings, read once from the environment and passed down; nothing else reads os.environ."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout the service runs from (installed editable): holds envoy/ and migrations/."""


@dataclass(frozen=True)
class Limits:
    """Request rules that operators may tune; the defaults are the documented contract."""

    max_messages: int = 1000
    max_body_chars: int = 1600
    max_schedule_days: int = 180


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long a request may wait on the database before it is answered UNAVAILABLE. JSON
    requests through Envoy carry no deadline, so these bound every request; a gRPC deadline
    shorter than `statement_ms` bounds its own transaction's statements further."""

    pool_ms: int = 10_000
    """Waiting for a free connection from the pool."""
    lock_ms: int = 5_000
    """Waiting for a lock another transaction holds (PostgreSQL lock_timeout, SQLite
    busy_timeout: there, for the database's one write lock)."""
    statement_ms: int = 10_000
    """One statement, lock waits included (PostgreSQL statement_timeout)."""
    idle_in_transaction_ms: int = 10_000
    """A transaction left open with nothing running: PostgreSQL ends the session and frees its
    locks (idle_in_transaction_session_timeout), so a stuck request cannot block the others."""


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'mplus.db'}"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    envoy_admin_port: int = 9901
    max_workers: int = 16
    max_concurrent_rpcs: int = 256
    max_request_bytes: int = 8 * 1024 * 1024
    state_dir: Path = PROJECT_ROOT / "var"
    limits: Limits = field(default_factory=Limits)
    db_pool_size: int = 16
    """Connections per server process; by default one per worker thread (MPLUS_MAX_WORKERS)."""
    db_timeouts: DatabaseTimeouts = field(default_factory=DatabaseTimeouts)

    @property
    def grpc_address(self) -> str:
        return _host_port(self.grpc_host, self.grpc_port)

    @property
    def http_address(self) -> str:
        return _host_port(self.http_host, self.http_port)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()

        def integer(name: str, default: int, low: int = 0, high: int = 65535) -> int:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
            if not low <= value <= high:
                raise SystemExit(f"{name} must be between {low} and {high}, got {raw!r}")
            return value

        def address(name: str, default: str) -> str:
            raw = env.get(name) or default
            try:
                ipaddress.ip_address(raw)
            except ValueError:
                raise SystemExit(
                    f"{name} must be an IP address such as 127.0.0.1 or 0.0.0.0, got {raw!r}"
                ) from None
            return raw

        def milliseconds(name: str, default: int) -> int:
            """At least 1: a zero would switch PostgreSQL's bound off, and no bound is the bug."""
            return integer(name, default, 1, 86_400_000)

        state_dir = Path(env.get("MPLUS_STATE_DIR") or defaults.state_dir)
        max_workers = integer("MPLUS_MAX_WORKERS", defaults.max_workers, 1, 1024)
        timeouts = defaults.db_timeouts
        return cls(
            database_url=env.get("MPLUS_DATABASE_URL") or f"sqlite:///{state_dir / 'mplus.db'}",
            grpc_host=address("MPLUS_GRPC_HOST", defaults.grpc_host),
            grpc_port=integer("MPLUS_GRPC_PORT", defaults.grpc_port, 1),
            http_host=address("MPLUS_HTTP_HOST", defaults.http_host),
            http_port=integer("MPLUS_HTTP_PORT", defaults.http_port, 1),
            envoy_admin_port=integer("MPLUS_ENVOY_ADMIN_PORT", defaults.envoy_admin_port, 1),
            max_workers=max_workers,
            max_concurrent_rpcs=integer(
                "MPLUS_MAX_CONCURRENT_RPCS", defaults.max_concurrent_rpcs, 1, 100_000
            ),
            max_request_bytes=integer(
                "MPLUS_MAX_REQUEST_BYTES", defaults.max_request_bytes, 1024, 1 << 30
            ),
            state_dir=state_dir,
            limits=Limits(
                max_messages=integer(
                    "MPLUS_MAX_MESSAGES", defaults.limits.max_messages, 1, 100_000
                ),
                max_body_chars=integer(
                    "MPLUS_MAX_BODY_CHARS", defaults.limits.max_body_chars, 1, 1_000_000
                ),
                max_schedule_days=integer(
                    "MPLUS_MAX_SCHEDULE_DAYS", defaults.limits.max_schedule_days, 1, 3650
                ),
            ),
            db_pool_size=integer("MPLUS_DB_POOL_SIZE", max_workers, 1, 1024),
            db_timeouts=DatabaseTimeouts(
                pool_ms=milliseconds("MPLUS_DB_POOL_TIMEOUT_MS", timeouts.pool_ms),
                lock_ms=milliseconds("MPLUS_DB_LOCK_TIMEOUT_MS", timeouts.lock_ms),
                statement_ms=milliseconds("MPLUS_DB_STATEMENT_TIMEOUT_MS", timeouts.statement_ms),
                idle_in_transaction_ms=milliseconds(
                    "MPLUS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", timeouts.idle_in_transaction_ms
                ),
            ),
        )


def _host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ipaddress.ip_address(host).version == 6 else f"{host}:{port}"
