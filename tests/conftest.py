"""Shared fixtures: databases (SQLite file, throwaway PostgreSQL), migrated engines, accounts,
and the real stack the e2e and reliability suites share."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine

from harness.postgres import fresh_postgres_database, postgres_server
from server.service import accounts, senders
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.unit_of_work import UnitOfWork
from tests.support.stack import Stack, running_stack

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


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A real stack (tests/support/stack.py) per test module and database, for the e2e tests
    and the reliability suite's abuse tests."""
    with ExitStack() as cleanup:
        state = tmp_path_factory.mktemp(f"stack-{request.param}")
        if request.param == "sqlite":
            database_url = f"sqlite:///{state / 'mplus.db'}"
        else:
            base_url = request.getfixturevalue("postgres_base_url")
            database_url = cleanup.enter_context(fresh_postgres_database(base_url))
        yield cleanup.enter_context(running_stack(database_url, state))
