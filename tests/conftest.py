"""Shared fixtures: databases (SQLite file, throwaway PostgreSQL), migrated engines, accounts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from harness.postgres import fresh_postgres_database, postgres_server
from server.service import accounts, senders
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.tables import accounts as accounts_table
from server.storage.unit_of_work import UnitOfWork

POOL = ("447700900101", "447700900102", "447700900103", "447700900104")


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    """A PostgreSQL server for the session: MPLUS_TEST_DATABASE_URL, or a pgserver of our own."""
    configured = os.environ.get("MPLUS_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    with postgres_server(prefix="mplus-test-pg-") as url:
        yield url


@pytest.fixture
def postgres_url(postgres_base_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server, dropped afterwards."""
    with fresh_postgres_database(postgres_base_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mplus.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url, pool_size=8)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def unit_of_work(engine: Engine) -> Callable[[], UnitOfWork]:
    return lambda: UnitOfWork(engine)


@pytest.fixture
def pool() -> tuple[str, ...]:
    """The shared sender pool the `account` fixture sets up."""
    return POOL


@pytest.fixture
def account(unit_of_work: Callable[[], UnitOfWork]) -> accounts.NewAccount:
    """An account with a key, and a shared sender pool beside it."""
    senders.add_senders(unit_of_work, POOL)
    return accounts.create_account(unit_of_work, "acme")


@contextmanager
def lock_held(engine: Engine, account_id: str) -> Iterator[None]:
    """Another connection holds a lock that storing a message for `account_id` needs: on
    PostgreSQL the account row (the foreign key check takes a share lock on it), on SQLite the
    database's one write lock. Released on exit."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.begin()  # BEGIN IMMEDIATE: the write lock
        else:
            rows = select(accounts_table).where(accounts_table.c.id == account_id)
            connection.execute(rows.with_for_update())
        yield
