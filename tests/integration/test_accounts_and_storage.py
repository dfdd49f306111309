"""What operators rely on unseen: keys kept only as hashes, SQLite in durable WAL mode."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select, text

from server.service import accounts
from server.storage.tables import api_keys
from server.storage.unit_of_work import UnitOfWork


def test_a_key_is_stored_only_as_its_sha256(
    engine: Engine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    account = accounts.create_account(unit_of_work, "hashed")
    extra = accounts.create_key(unit_of_work, "hashed")
    with engine.connect() as connection:
        rows = connection.execute(select(api_keys)).all()
    stored = [str(value) for row in rows for value in row]
    assert not any(key in value for key in (account.key, extra) for value in stored)
    assert {row.key_hash for row in rows} == {
        hashlib.sha256(key.encode()).hexdigest() for key in (account.key, extra)
    }


def test_keys_are_random_and_long(unit_of_work: Callable[[], UnitOfWork]) -> None:
    keys = {accounts.create_key(unit_of_work, accounts.create_account(unit_of_work, "k").id)}
    keys |= {accounts.create_key(unit_of_work, "k") for _ in range(20)}
    assert len(keys) == 21
    assert all(key.startswith("mp_") and len(key) >= 32 for key in keys)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_runs_in_wal_mode_with_full_sync(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
