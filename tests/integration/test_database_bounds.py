"""Every wait on the database is bounded: a held lock, an exhausted pool, a transaction left
idle or a caller's deadline ends in StorageUnavailable (UNAVAILABLE, HTTP 503) after about the
configured time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError

from server.config import DatabaseTimeouts
from server.domain.errors import Abandoned
from server.domain.model import MessageDraft, SenderDraft
from server.service import accounts
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.storage.database import create_database_engine
from server.storage.errors import StorageUnavailable
from server.storage.tables import accounts as accounts_table
from server.storage.tables import queued_messages
from server.storage.unit_of_work import UnitOfWork
from tests.support.locks import lock_held

BOUND_S = 0.5
SLACK_S = 2.0
"""How late past its bound a failure may come on a loaded machine, and still count as bounded."""

postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

BoundedEngine = Callable[..., Engine]


@pytest.fixture
def bounded(database_url: str, engine: Engine) -> Iterator[BoundedEngine]:
    """Engines on the migrated test database with some timeouts shortened; disposed after."""
    made: list[Engine] = []

    def make(pool_size: int = 2, **timeouts: int) -> Engine:
        made.append(create_database_engine(database_url, pool_size, DatabaseTimeouts(**timeouts)))
        return made[-1]

    yield make
    for each in made:
        each.dispose()


def command(account: accounts.NewAccount, deadline: float | None = None) -> AddMessagesCommand:
    draft = MessageDraft(to="441111111111", sender=SenderDraft("custom", "Acme"), body="Hi")
    return AddMessagesCommand(account.key, [draft], deadline=deadline)


def fails_after(call: Callable[[], Any], match: str) -> float:
    """Seconds until `call` raised StorageUnavailable matching `match`."""
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match=match):
        call()
    return time.monotonic() - started


def test_a_lock_held_elsewhere_fails_the_request_after_the_lock_timeout(
    engine: Engine, account: accounts.NewAccount, bounded: BoundedEngine
) -> None:
    add = AddMessages(lambda: UnitOfWork(bounded(lock_ms=int(BOUND_S * 1000))))
    with lock_held(engine, account.id):
        waited = fails_after(lambda: add(command(account)), "a lock was not granted in time")
    assert BOUND_S * 0.9 <= waited < BOUND_S + SLACK_S
    assert len(add(command(account))) == 1  # and works once the lock is released


def test_an_exhausted_pool_fails_the_request_after_the_pool_timeout(
    account: accounts.NewAccount, bounded: BoundedEngine
) -> None:
    small = bounded(pool_size=1, pool_ms=int(BOUND_S * 1000))
    add = AddMessages(lambda: UnitOfWork(small))
    with UnitOfWork(small):  # the pool's only connection, taken
        waited = fails_after(lambda: add(command(account)), "no database connection was free")
    assert BOUND_S * 0.9 <= waited < BOUND_S + SLACK_S
    assert len(add(command(account))) == 1


@postgres_only
def test_a_transaction_left_idle_is_ended_and_its_locks_freed(
    account: accounts.NewAccount, bounded: BoundedEngine
) -> None:
    """A request stuck mid-transaction cannot block the others for longer than the bound."""
    stuck = bounded(idle_in_transaction_ms=int(BOUND_S * 1000))
    add = AddMessages(lambda: UnitOfWork(bounded()))  # the default 5 s lock timeout
    with stuck.connect() as connection:
        locked = select(accounts_table).where(accounts_table.c.id == account.id)
        connection.execute(locked.with_for_update())
        started = time.monotonic()
        assert len(add(command(account))) == 1  # waits for the lock until PostgreSQL frees it
        waited = time.monotonic() - started
        with pytest.raises(DBAPIError, match="idle-in-transaction timeout"):
            connection.execute(locked)  # the stuck session is gone
    assert BOUND_S * 0.9 <= waited < BOUND_S + SLACK_S


@postgres_only
def test_a_request_whose_idle_transaction_was_ended_is_storage_unavailable(
    account: accounts.NewAccount, bounded: BoundedEngine
) -> None:
    stalling = bounded(idle_in_transaction_ms=int(BOUND_S * 1000))
    with pytest.raises(StorageUnavailable), UnitOfWork(stalling) as uow:
        uow.senders.pool()
        time.sleep(BOUND_S * 2)
        uow.senders.pool()
    with UnitOfWork(stalling) as uow:  # and the pool replaces the dead connection
        assert uow.senders.pool()


@postgres_only
def test_a_grpc_deadline_shorter_than_the_lock_timeout_ends_the_wait_at_the_deadline(
    engine: Engine, account: accounts.NewAccount, bounded: BoundedEngine
) -> None:
    add = AddMessages(lambda: UnitOfWork(bounded()))  # lock 5 s, statements 10 s
    with lock_held(engine, account.id):
        deadline = time.monotonic() + BOUND_S
        waited = fails_after(
            lambda: add(command(account, deadline)), "a statement did not finish in time"
        )
    assert BOUND_S * 0.9 <= waited < BOUND_S + SLACK_S
    assert len(add(command(account, time.monotonic() + 10))) == 1  # the bound was local


@postgres_only
def test_a_grpc_deadline_longer_than_the_statement_timeout_does_not_lengthen_it(
    engine: Engine, account: accounts.NewAccount, bounded: BoundedEngine
) -> None:
    add = AddMessages(lambda: UnitOfWork(bounded(statement_ms=int(BOUND_S * 1000))))
    with lock_held(engine, account.id):
        waited = fails_after(
            lambda: add(command(account, time.monotonic() + 60)), "did not finish in time"
        )
    assert BOUND_S * 0.9 <= waited < BOUND_S + SLACK_S


def test_a_deadline_already_passed_asks_the_database_nothing(
    engine: Engine, account: accounts.NewAccount, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    opened: list[UnitOfWork] = []

    def counted() -> UnitOfWork:
        opened.append(unit_of_work())
        return opened[-1]

    with pytest.raises(Abandoned):
        AddMessages(counted)(command(account, time.monotonic()))
    assert opened == []
    with engine.connect() as connection:
        assert connection.execute(select(queued_messages)).first() is None
