"""Settings come from MPLUS_* variables once; bad values stop the start with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import DatabaseTimeouts, Limits, Settings
from server.errors import ConfigError


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env({})
    assert (settings.grpc_host, settings.grpc_port) == ("127.0.0.1", 50051)
    assert (settings.http_host, settings.http_port, settings.envoy_admin_port) == (
        "127.0.0.1",
        8080,
        9901,
    )
    assert settings.limits == Limits(max_messages=1000, max_body_chars=1600, max_schedule_days=180)
    assert (settings.rate_limit_per_key, settings.rate_limit_burst) == (50, 100)
    assert (settings.rate_limit_global, settings.max_connections) == (1000, 1000)
    assert settings.tls_cert is None and settings.tls_key is None
    assert (settings.client_header_timeout_ms, settings.client_request_timeout_ms) == (
        10_000,
        60_000,
    )
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
        ("MPLUS_METRICS_PORT", "65536", "between 0 and 65535"),
        ("MPLUS_WORKER_INDEX", "-1", "between 0 and 1023"),
        ("MPLUS_RATE_LIMIT_PER_KEY", "fast", "must be a number of requests per second"),
        ("MPLUS_RATE_LIMIT_PER_KEY", "-1", "must be 0 (off) or between 0.001 and 1e+06"),
        ("MPLUS_RATE_LIMIT_GLOBAL", "0.0001", "must be 0 (off) or between 0.001 and 1e+06"),
        ("MPLUS_RATE_LIMIT_GLOBAL", "nan", "must be 0 (off) or between"),
        ("MPLUS_RATE_LIMIT_BURST", "0", "between 1 and 1000000"),
        ("MPLUS_MAX_CONNECTIONS", "0", "between 1 and 1000000"),
        ("MPLUS_CLIENT_HEADER_TIMEOUT_MS", "99", "between 100 and 3600000"),
        ("MPLUS_CLIENT_REQUEST_TIMEOUT_MS", "1m", "must be an integer"),
        ("MPLUS_CLIENT_HEADER_TIMEOUT_MS", "70000", "at most MPLUS_CLIENT_REQUEST_TIMEOUT_MS"),
        ("MPLUS_TLS_CERT", "/nonexistent/tls.crt", "MPLUS_TLS_KEY must be set too"),
        ("MPLUS_TLS_KEY", "/nonexistent/tls.key", "MPLUS_TLS_CERT must be set too"),
        ("MPLUS_DB_POOL_SIZE", "0", "between 1 and 1024"),
        ("MPLUS_DB_STATEMENT_TIMEOUT_MS", "0", "between 1 and 86400000"),
        ("MPLUS_DB_LOCK_TIMEOUT_MS", "5s", "must be an integer"),
        ("MPLUS_DB_POOL_TIMEOUT_MS", "-1", "between 1 and 86400000"),
        ("MPLUS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "86400001", "between 1 and 86400000"),
        ("MPLUS_DB_HEALTH_INTERVAL_MS", "-1", "between 0 and 3600000"),
        ("MPLUS_RECEIPT_TIMEOUT_S", "0", "between 1 and 2592000"),
        ("MPLUS_HTTP_DRIVER_SECRET", "short", "at least 16 printable characters"),
        ("MPLUS_HTTP_DRIVER_SECRET", "sixteen chars or more", "without spaces"),
    ],
)
def test_bad_values_stop_with_the_variable_named(name: str, value: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value) and complaint in str(raised.value)


def test_the_http_driver_needs_the_secret_its_gateway_posts_receipts_with() -> None:
    http = {"MPLUS_CHANNEL_DRIVER": "http", "MPLUS_HTTP_DRIVER_URL": "http://10.0.0.9/send"}
    with pytest.raises(ConfigError, match="MPLUS_HTTP_DRIVER_SECRET must be set"):
        Settings.from_env(http)
    secret = "g" * 16
    assert (
        Settings.from_env(http | {"MPLUS_HTTP_DRIVER_SECRET": secret}).delivery.http_secret
        == secret
    )


def test_a_secret_is_never_echoed_in_its_complaint() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"MPLUS_HTTP_DRIVER_SECRET": "hunter2"})
    assert "hunter2" not in str(raised.value)


def test_receipts_expire_after_two_days_unless_told_otherwise() -> None:
    assert Settings.from_env({}).delivery.receipt_timeout_s == 172_800
    delivery = Settings.from_env(
        {"MPLUS_RECEIPT_TIMEOUT_S": "600", "MPLUS_HTTP_DRIVER_SECRET": "x" * 32}
    ).delivery
    assert (delivery.receipt_timeout_s, delivery.http_secret) == (600, "x" * 32)


def test_ipv6_hosts_are_bracketed_in_addresses() -> None:
    settings = Settings.from_env({"MPLUS_GRPC_HOST": "::1", "MPLUS_HTTP_HOST": "127.0.0.1"})
    assert (settings.grpc_address, settings.http_address) == ("[::1]:50051", "127.0.0.1:8080")


def test_workers_listen_on_consecutive_ports_and_envoy_balances_over_them() -> None:
    settings = Settings.from_env({"MPLUS_GRPC_PORT": "7000", "MPLUS_WORKERS": "3"})
    assert [settings.worker_port(i) for i in range(3)] == [7000, 7001, 7002]
    assert settings.upstream_endpoints == (
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7001),
        ("127.0.0.1", 7002),
    )


def test_upstreams_on_other_hosts_replace_the_local_workers() -> None:
    settings = Settings.from_env(
        {"MPLUS_WORKERS": "4", "MPLUS_UPSTREAMS": "10.0.0.5:50051, [fd00::6]:50052,"}
    )
    assert settings.upstream_endpoints == (("10.0.0.5", 50051), ("fd00::6", 50052))


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"MPLUS_UPSTREAMS": "db.internal:50051"}, "MPLUS_UPSTREAMS must list IP:port"),
        ({"MPLUS_UPSTREAMS": "10.0.0.5"}, "MPLUS_UPSTREAMS must list IP:port"),
        ({"MPLUS_UPSTREAMS": "10.0.0.5:0"}, "MPLUS_UPSTREAMS must list IP:port"),
        ({"MPLUS_WORKERS": "0"}, "MPLUS_WORKERS must be between 1 and 64"),
        ({"MPLUS_GRPC_PORT": "65535", "MPLUS_WORKERS": "2"}, "no room for 2 consecutive"),
        ({"MPLUS_SHUTDOWN_DRAIN_MS": "-1"}, "MPLUS_SHUTDOWN_DRAIN_MS must be between 0"),
    ],
)
def test_bad_replica_settings_are_refused(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        Settings.from_env(env)


def test_metrics_default_to_9464_and_worker_i_serves_on_the_port_plus_i() -> None:
    assert Settings.from_env({}).process_metrics_port == 9464
    third = Settings.from_env({"MPLUS_METRICS_PORT": "9500", "MPLUS_WORKER_INDEX": "2"})
    assert (third.metrics_port, third.process_metrics_port) == (9500, 9502)


def test_database_health_is_asked_every_second_and_0_turns_it_off() -> None:
    assert Settings.from_env({}).db_health_interval_ms == 1000
    assert Settings.from_env({"MPLUS_DB_HEALTH_INTERVAL_MS": "0"}).db_health_interval_ms == 0


def test_metrics_port_0_turns_metrics_off_for_every_worker() -> None:
    settings = Settings.from_env({"MPLUS_METRICS_PORT": "0", "MPLUS_WORKER_INDEX": "3"})
    assert settings.process_metrics_port == 0


def test_a_worker_whose_metrics_port_would_pass_65535_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"MPLUS_METRICS_PORT": "65535", "MPLUS_WORKER_INDEX": "1"})
    assert "MPLUS_METRICS_PORT + MPLUS_WORKER_INDEX" in str(raised.value)


def test_rates_take_fractions_and_zero_turns_a_limit_off() -> None:
    settings = Settings.from_env(
        {
            "MPLUS_RATE_LIMIT_PER_KEY": "0.5",
            "MPLUS_RATE_LIMIT_GLOBAL": "0",
            "MPLUS_MAX_CONNECTIONS": "50",
        }
    )
    assert (settings.rate_limit_per_key, settings.rate_limit_global) == (0.5, 0)
    assert settings.max_connections == 50


def test_tls_files_must_both_be_readable_and_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tls.crt").write_text("cert")
    (tmp_path / "tls.key").write_text("key")
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"MPLUS_TLS_CERT": "tls.crt", "MPLUS_TLS_KEY": "tls.key"})
    assert (settings.tls_cert, settings.tls_key) == (tmp_path / "tls.crt", tmp_path / "tls.key")
    with pytest.raises(ConfigError, match="MPLUS_TLS_KEY must name a readable PEM file"):
        Settings.from_env({"MPLUS_TLS_CERT": "tls.crt", "MPLUS_TLS_KEY": "missing.key"})


def test_a_burst_too_small_for_its_rate_is_refused() -> None:
    """Envoy refills at most every 50 ms: a smaller bucket would cap the rate silently."""
    with pytest.raises(ConfigError, match="MPLUS_RATE_LIMIT_BURST must be at least"):
        Settings.from_env({"MPLUS_RATE_LIMIT_PER_KEY": "5000", "MPLUS_RATE_LIMIT_BURST": "100"})
    settings = Settings.from_env(
        {"MPLUS_RATE_LIMIT_PER_KEY": "500", "MPLUS_RATE_LIMIT_BURST": "100"}
    )
    assert (settings.rate_limit_per_key, settings.rate_limit_burst) == (500, 100)


def test_dispatchers_serve_metrics_100_above_the_workers_and_dispatcher_i_on_the_port_plus_i() -> (
    None
):
    assert Settings().delivery.process_metrics_port == 9564
    assert Settings.from_env({}).delivery.process_metrics_port == 9564
    third = Settings.from_env({"MPLUS_METRICS_PORT": "9500", "MPLUS_DISPATCHER_INDEX": "2"})
    assert (third.process_metrics_port, third.delivery.process_metrics_port) == (9500, 9602)
    own = Settings.from_env({"MPLUS_DISPATCH_METRICS_PORT": "7000", "MPLUS_DISPATCHER_INDEX": "1"})
    assert own.delivery.process_metrics_port == 7001


@pytest.mark.parametrize(
    "env",
    [
        {"MPLUS_METRICS_PORT": "0"},
        {"MPLUS_DISPATCH_METRICS_PORT": "0", "MPLUS_DISPATCHER_INDEX": "3"},
    ],
)
def test_dispatch_metrics_are_off_with_port_0_or_when_the_workers_have_none(
    env: dict[str, str],
) -> None:
    assert Settings.from_env(env).delivery.process_metrics_port == 0


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        (
            {"MPLUS_DISPATCH_METRICS_PORT": "65535", "MPLUS_DISPATCHER_INDEX": "1"},
            "MPLUS_DISPATCH_METRICS_PORT + the dispatcher index must be at most 65535",
        ),
        (
            {"MPLUS_DISPATCH_METRICS_PORT": "65534", "MPLUS_DISPATCHERS": "3"},
            "must be at most 65535",
        ),
        ({"MPLUS_DISPATCHER_INDEX": "64"}, "MPLUS_DISPATCHER_INDEX must be between 0 and 63"),
        (
            {
                "MPLUS_METRICS_PORT": "9000",
                "MPLUS_WORKERS": "4",
                "MPLUS_DISPATCH_METRICS_PORT": "9003",
            },
            "overlaps the workers' metrics ports",
        ),
        (
            {
                "MPLUS_METRICS_PORT": "9002",
                "MPLUS_DISPATCHERS": "3",
                "MPLUS_DISPATCH_METRICS_PORT": "9000",
            },
            "overlaps the workers' metrics ports",
        ),
    ],
)
def test_dispatch_metrics_ports_that_pass_65535_or_meet_the_workers_are_refused(
    env: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert complaint in str(raised.value)
