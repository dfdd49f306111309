"""Settings come from MPLUS_* variables once; bad values stop the start with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import DatabaseTimeouts, Limits, Settings


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env({})
    assert (settings.grpc_host, settings.grpc_port) == ("127.0.0.1", 50051)
    assert (settings.http_host, settings.http_port, settings.envoy_admin_port) == (
        "127.0.0.1",
        8080,
        9901,
    )
    assert settings.limits == Limits(max_messages=1000, max_body_chars=1600, max_schedule_days=180)
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith(
        "var/mplus.db"
    )
    assert settings.db_pool_size == settings.max_workers == 16
    assert settings.db_timeouts == DatabaseTimeouts(
        pool_ms=10_000, lock_ms=5_000, statement_ms=10_000, idle_in_transaction_ms=10_000
    )


def test_database_bounds_are_configurable_and_the_pool_follows_the_workers() -> None:
    assert Settings.from_env({"MPLUS_MAX_WORKERS": "4"}).db_pool_size == 4
    settings = Settings.from_env(
        {
            "MPLUS_MAX_WORKERS": "4",
            "MPLUS_DB_POOL_SIZE": "8",
            "MPLUS_DB_POOL_TIMEOUT_MS": "1500",
            "MPLUS_DB_LOCK_TIMEOUT_MS": "250",
            "MPLUS_DB_STATEMENT_TIMEOUT_MS": "2000",
            "MPLUS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "3000",
        }
    )
    assert settings.db_pool_size == 8
    assert settings.db_timeouts == DatabaseTimeouts(
        pool_ms=1500, lock_ms=250, statement_ms=2000, idle_in_transaction_ms=3000
    )


def test_variables_override_and_the_database_follows_the_state_dir(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "MPLUS_STATE_DIR": str(tmp_path),
            "MPLUS_GRPC_PORT": "6000",
            "MPLUS_HTTP_PORT": "6001",
            "MPLUS_MAX_MESSAGES": "10",
        }
    )
    assert settings.database_url == f"sqlite:///{tmp_path / 'mplus.db'}"
    assert (settings.grpc_port, settings.http_port, settings.limits.max_messages) == (
        6000,
        6001,
        10,
    )
    url = "postgresql://u:p@db/mplus"
    assert Settings.from_env({"MPLUS_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("MPLUS_GRPC_PORT", "http", "must be an integer"),
        ("MPLUS_HTTP_PORT", "70000", "between 1 and 65535"),
        ("MPLUS_MAX_SCHEDULE_DAYS", "999999999", "between 1 and 3650"),
        ("MPLUS_MAX_MESSAGES", "0", "between 1 and 100000"),
        ("MPLUS_GRPC_HOST", "localhost", "must be an IP address"),
        ("MPLUS_HTTP_HOST", "example.com", "must be an IP address"),
        ("MPLUS_GRPC_PORT", "0", "between 1 and 65535"),
        ("MPLUS_DB_POOL_SIZE", "0", "between 1 and 1024"),
        ("MPLUS_DB_STATEMENT_TIMEOUT_MS", "0", "between 1 and 86400000"),
        ("MPLUS_DB_LOCK_TIMEOUT_MS", "5s", "must be an integer"),
        ("MPLUS_DB_POOL_TIMEOUT_MS", "-1", "between 1 and 86400000"),
        ("MPLUS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "86400001", "between 1 and 86400000"),
    ],
)
def test_bad_values_stop_with_the_variable_named(name: str, value: str, complaint: str) -> None:
    with pytest.raises(SystemExit) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value) and complaint in str(raised.value)


def test_ipv6_hosts_are_bracketed_in_addresses() -> None:
    settings = Settings.from_env({"MPLUS_GRPC_HOST": "::1", "MPLUS_HTTP_HOST": "127.0.0.1"})
    assert (settings.grpc_address, settings.http_address) == ("[::1]:50051", "127.0.0.1:8080")
