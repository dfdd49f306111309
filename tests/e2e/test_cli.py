"""The `mplus` command as an operator runs it: a real subprocess per command, state in tmp_path.

Storage commands run on SQLite (the default file under MPLUS_STATE_DIR) and on PostgreSQL
(MPLUS_DATABASE_URL); `mplus up` runs on SQLite and is stopped with SIGTERM and with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from functools import partial
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.waiting import wait_until
from tests.support.operator import (
    MPLUS,
    Cli,
    Up,
    closed,
    make_cli,
    post,
    running_up,
    wait_until_serving,
)
from tests.support.stack import SQLITE_ONLY, Stack

KEY = re.compile(r"mp_[A-Za-z0-9_-]{29,}")


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    """On SQLite, MPLUS_DATABASE_URL is left unset: the default file under the state dir is used."""
    if database_url.startswith("sqlite"):
        assert database_url == f"sqlite:///{tmp_path / 'mplus.db'}"
        return make_cli(tmp_path, None)
    return make_cli(tmp_path, database_url)


@pytest.fixture
def migrated(cli: Cli) -> Cli:
    assert "up to date" in cli.ok("db", "upgrade")
    return cli


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    cli = make_cli(tmp_path, None)
    cli.ok("db", "upgrade")
    return cli


# --- db upgrade, accounts, keys ---------------------------------------------------------------


def test_db_upgrade_is_repeatable_and_uses_the_state_dir(cli: Cli, tmp_path: Path) -> None:
    assert "up to date" in cli.ok("db", "upgrade")
    assert "up to date" in cli.ok("db", "upgrade")
    if "MPLUS_DATABASE_URL" not in cli.env:
        assert (tmp_path / "mplus.db").is_file()
    assert cli.accounts() == {}


def test_accounts_create_json_prints_one_object_with_a_strong_key(migrated: Cli) -> None:
    stdout = migrated.ok("accounts", "create", "shop", "--json")
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    created = json.loads(lines[0])
    assert set(created) == {"id", "name", "key", "webhook_secret"}
    assert created["name"] == "shop"
    uuid.UUID(created["id"])
    assert created["key"].startswith("mp_")
    assert len(created["key"]) >= 32
    assert KEY.fullmatch(created["key"])
    assert migrated.accounts() == {"shop": 1}
    # A second account gets another key.
    other = json.loads(migrated.ok("accounts", "create", "other", "--json"))
    assert other["key"] != created["key"]
    assert other["id"] != created["id"]


def test_accounts_create_plain_shows_the_key_once_and_says_so(migrated: Cli) -> None:
    stdout = migrated.ok("accounts", "create", "shop")
    keys = KEY.findall(stdout)
    assert len(keys) == 1, stdout
    assert stdout.count(keys[0]) == 1
    assert "shown once" in stdout
    assert "shop" in stdout
    # The printed key is the account's real key: it can be revoked.
    assert "revoked" in migrated.ok("keys", "revoke", keys[0])
    assert migrated.accounts() == {"shop": 0}


def test_duplicate_account_name_is_refused_cleanly(migrated: Cli) -> None:
    migrated.ok("accounts", "create", "shop", "--json")
    refused = migrated.fails("accounts", "create", "shop", "--json")
    assert "shop" in refused.stderr
    assert "exists" in refused.stderr
    assert refused.stdout == ""
    assert migrated.accounts() == {"shop": 1}


def test_accounts_list_keys_create_and_revoke(migrated: Cli) -> None:
    shop = json.loads(migrated.ok("accounts", "create", "shop", "--json"))
    migrated.ok("accounts", "create", "other", "--json")

    listed = json.loads(migrated.ok("accounts", "list", "--json"))
    assert [entry["name"] for entry in listed] == ["shop", "other"]
    assert {entry["name"]: entry["id"] for entry in listed}["shop"] == shop["id"]
    assert all(entry["active_keys"] == 1 for entry in listed)
    assert all(set(entry) == {"id", "name", "created_at", "active_keys"} for entry in listed)

    by_name = migrated.ok("keys", "create", "shop").strip()
    by_id = migrated.ok("keys", "create", shop["id"]).strip()
    for key in (by_name, by_id):
        assert KEY.fullmatch(key), key
    assert len({shop["key"], by_name, by_id}) == 3
    assert migrated.accounts() == {"shop": 3, "other": 1}

    plain = migrated.ok("accounts", "list").splitlines()
    assert len(plain) == 2
    assert shop["id"] in plain[0] and "shop" in plain[0] and "keys=3" in plain[0]
    assert "other" in plain[1] and "keys=1" in plain[1]

    assert "revoked" in migrated.ok("keys", "revoke", by_name)
    refused = migrated.fails("keys", "revoke", by_name)
    assert "no active key" in refused.stderr
    assert migrated.accounts() == {"shop": 2, "other": 1}

    assert "revoked" in migrated.ok("keys", "revoke", shop["key"])
    assert migrated.accounts() == {"shop": 1, "other": 1}


def test_keys_for_unknown_accounts_and_keys_are_refused_cleanly(migrated: Cli) -> None:
    assert "nobody" in migrated.fails("keys", "create", "nobody").stderr
    migrated.fails("keys", "revoke", "mp_not-a-key-that-exists-anywhere-at-all")
    assert migrated.accounts() == {}


# --- senders ----------------------------------------------------------------------------------


def test_senders_add_list_remove(migrated: Cli) -> None:
    added = migrated.ok("senders", "add", "447700900001", "+44 7700 900002")
    assert added.strip() == "2 sender(s) added to the shared pool"
    assert migrated.senders() == ["447700900001", "447700900002"]

    again = migrated.ok("senders", "add", "447700900001", "+44 7700 900002")
    assert again.strip() == "0 sender(s) added to the shared pool"
    assert migrated.senders() == ["447700900001", "447700900002"]

    assert migrated.ok("senders", "add", "+447700900000").startswith("1 sender(s) added")
    assert migrated.senders() == ["447700900000", "447700900001", "447700900002"]

    removed = migrated.ok("senders", "remove", "447700900001")
    assert removed.strip() == "1 sender(s) removed from the shared pool"
    assert migrated.senders() == ["447700900000", "447700900002"]
    assert migrated.ok("senders", "remove", "447700900001").startswith("0 sender(s) removed")


def test_invalid_sender_number_is_refused_and_nothing_is_added(migrated: Cli) -> None:
    refused = migrated.fails("senders", "add", "447700900005", "12abc")
    assert "12abc" in refused.stderr
    assert migrated.senders() == []
    assert "nope" in migrated.fails("senders", "remove", "nope").stderr


# --- before `db upgrade` ----------------------------------------------------------------------


def test_serve_before_db_upgrade_exits_quickly_and_says_what_to_do(cli: Cli) -> None:
    result = cli.run("serve", timeout=20)  # a server that started anyway would time out here
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "mplus db upgrade" in result.stderr


@pytest.mark.parametrize(
    "command", [("accounts", "create", "shop"), ("senders", "list")], ids=["accounts", "senders"]
)
def test_operator_commands_before_db_upgrade_say_what_to_do(
    cli: Cli, command: tuple[str, ...]
) -> None:
    result = cli.fails(*command)
    assert "mplus db upgrade" in result.stderr


# --- demo -------------------------------------------------------------------------------------


def test_demo_creates_an_account_and_pool_once_and_keeps_its_key(migrated: Cli) -> None:
    first = migrated.ok("demo")
    keys = KEY.findall(first)
    assert len(keys) == 1, first
    key_file = migrated.state_dir / "demo-key"
    assert key_file.read_text().strip() == keys[0]
    assert key_file.stat().st_mode & 0o077 == 0, oct(key_file.stat().st_mode)
    assert migrated.accounts() == {"demo": 1}
    pool = migrated.senders()
    assert len(pool) >= 1

    second = migrated.ok("demo")
    assert KEY.findall(second) == keys
    assert key_file.read_text().strip() == keys[0]
    assert migrated.accounts() == {"demo": 1}
    assert migrated.senders() == pool


# --- gateway ----------------------------------------------------------------------------------


def test_gateway_validate_reports_the_configuration_ok(tmp_path: Path) -> None:
    result = make_cli(tmp_path, None).run("gateway", "--validate")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"configuration '.*' OK", result.stdout + result.stderr)


# --- up ---------------------------------------------------------------------------------------


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def grpc_health(cli: Cli) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{cli.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(response.status)


def assert_stopped_cleanly(cli: Cli, up: Up) -> None:
    try:
        code = up.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"mplus up still running 20 s after the signal: {up.output()}"
        ) from None
    assert code == 0, up.output()
    assert "Traceback" not in up.output()
    for port in (cli.http_port, cli.grpc_port, cli.admin_port):
        wait_until(partial(closed, port), f"port {port} to close", 5)
    wait_until(lambda: group_is_gone(up.process.pid), "the server and Envoy to exit", 5)


def test_up_serves_json_and_grpc_and_stops_on_sigterm(sqlite_cli: Cli) -> None:
    key = json.loads(sqlite_cli.ok("accounts", "create", "shop", "--json"))["key"]
    with running_up(sqlite_cli) as up:
        body = wait_until_serving(sqlite_cli, up, key)
        [message] = body["messages"]
        assert message["to"] == "441111111111"
        assert message["scheduled"] is False
        uuid.UUID(message["messageUuid"])
        assert grpc_health(sqlite_cli) == health_pb2.HealthCheckResponse.SERVING

        # Revoking through the CLI takes effect on the running service at once.
        sqlite_cli.ok("keys", "revoke", key)
        assert post(sqlite_cli, key).status_code == 401

        up.process.send_signal(signal.SIGTERM)
        assert_stopped_cleanly(sqlite_cli, up)


def test_up_stops_on_ctrl_c(sqlite_cli: Cli) -> None:
    key = json.loads(sqlite_cli.ok("accounts", "create", "shop", "--json"))["key"]
    with running_up(sqlite_cli) as up:
        wait_until_serving(sqlite_cli, up, key)
        assert grpc_health(sqlite_cli) == health_pb2.HealthCheckResponse.SERVING

        os.killpg(up.process.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        assert_stopped_cleanly(sqlite_cli, up)


@SQLITE_ONLY
def test_gateway_alone_serves_the_upstreams_it_is_given_and_stops_on_sigterm(
    stack: Stack, tmp_path: Path
) -> None:
    """A gateway host in front of servers elsewhere: here the stack's server is "elsewhere"."""
    cli = make_cli(tmp_path, None)
    cli.env["MPLUS_UPSTREAMS"] = f"127.0.0.1:{stack.settings.grpc_port}"
    log = tmp_path / "gateway.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*MPLUS, "gateway"], env=cli.env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: post(cli, stack.key).status_code == 200, "the gateway to serve")
        [message] = post(cli, stack.key).json()["messages"]
        assert stack.stored_count(message_uuid=message["messageUuid"]) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()
        assert closed(cli.http_port) and closed(cli.admin_port)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in log.read_text()
