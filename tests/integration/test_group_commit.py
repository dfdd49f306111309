"""Group commit on a real database: requests that share a transaction keep their own outcome."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from server.config import Limits
from server.domain.errors import Abandoned, IdConflict, InvalidRequest, Unauthenticated
from server.domain.model import MessageDraft, SenderDraft
from server.service import accounts
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.service.clock import Environment
from server.service.group_commit import GroupCommit
from server.storage.errors import ConflictingWrite, StorageUnavailable
from server.storage.tables import queued_messages, shared_senders
from server.storage.unit_of_work import UnitOfWork

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ID = "b2693dfe-0813-427a-bc2f-62b0e9292403"


def draft(to: str, body: str = "Hello", **fields: Any) -> MessageDraft:
    return MessageDraft(**{"sender": SenderDraft("shared", "")} | fields, to=to, body=body)


def stored(engine: Engine) -> dict[str, str]:
    """Destination → body of every stored message, read on a connection of its own."""
    with engine.connect() as connection:
        rows = connection.execute(select(queued_messages.c.destination, queued_messages.c.body))
        return {row.destination: row.body for row in rows}


def pool_senders(engine: Engine) -> set[str]:
    """The shared sender pool, read on a connection of its own."""
    with engine.connect() as connection:
        return set(connection.execute(select(shared_senders.c.sender)).scalars())


def adds(sender: str) -> Callable[[UnitOfWork], str]:
    """Work that adds `sender` to the pool and commits; it returns the sender."""

    def work(uow: UnitOfWork) -> str:
        uow.senders.add([sender], NOW)
        uow.commit()
        return sender

    return work


def refused_after_a_write(uow: UnitOfWork) -> None:
    """Sends its group to savepoints."""
    uow.senders.add(["447700900001"], NOW)
    raise Unauthenticated("refused after a write")


class Transactions:
    """Counts the transactions the group commit's units of work finish."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.finished = 0

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self.engine, self._count)

    def _count(self, _seconds: float) -> None:
        self.finished += 1


@pytest.fixture
def transactions(engine: Engine) -> Transactions:
    return Transactions(engine)


@pytest.fixture
def group(transactions: Transactions) -> GroupCommit:
    return GroupCommit(transactions)


@pytest.fixture
def add(transactions: Transactions, group: GroupCommit) -> AddMessages:
    environment = Environment(now=lambda: NOW, rng=random.Random(7))
    return AddMessages(transactions, Limits(), environment, group_commit=group)


@contextmanager
def one_group(group: GroupCommit) -> Iterator[Callable[[Callable[[], Any]], Future[Any]]]:
    """Requests submitted inside the block queue behind a busy leader, in order, and run as
    one group when the block ends. Yields `submit(call)`, which returns the call's future."""
    leading, release = threading.Event(), threading.Event()

    def lead(_uow: UnitOfWork) -> None:
        leading.set()
        release.wait(10)

    with ThreadPoolExecutor(max_workers=16) as pool:
        busy = pool.submit(group.run, lead)
        assert leading.wait(10)
        deadline = time.monotonic() + 10

        def submit(call: Callable[[], Any]) -> Future[Any]:
            queued = group.waiting()
            future = pool.submit(call)
            while group.waiting() == queued and time.monotonic() < deadline:
                time.sleep(0.001)
            return future

        yield submit
        release.set()
        busy.result(timeout=10)


def test_a_bad_or_conflicting_request_fails_alone_and_the_rest_commit_together(
    add: AddMessages,
    group: GroupCommit,
    account: accounts.NewAccount,
    engine: Engine,
    transactions: Transactions,
) -> None:
    with one_group(group) as submit:
        first = submit(lambda: add(AddMessagesCommand(account.key, [draft("441111111111")])))
        unknown = submit(lambda: add(AddMessagesCommand("not-a-key", [draft("442222222222")])))
        invalid = submit(
            lambda: add(AddMessagesCommand(account.key, [draft("443333333333"), draft("0")]))
        )
        with_id = submit(
            lambda: add(AddMessagesCommand(account.key, [draft("444444444444", id=ID)]))
        )
        reused_id = submit(
            lambda: add(
                AddMessagesCommand(account.key, [draft("445555555555", body="Other", id=ID)])
            )
        )
        clash = submit(lambda: group.run(lambda uow: uow.accounts.add(account.name, "0" * 64, NOW)))
        last = submit(lambda: add(AddMessagesCommand(account.key, [draft("446666666666")])))
    finished = transactions.finished
    assert [a.to for a in first.result()] == ["441111111111"]
    assert [a.to for a in last.result()] == ["446666666666"]
    assert [a.id for a in with_id.result()] == [ID]
    with pytest.raises(Unauthenticated):
        unknown.result()
    with pytest.raises(InvalidRequest):
        invalid.result()
    with pytest.raises(IdConflict):  # sees the id stored earlier in its own group
        reused_id.result()
    with pytest.raises(ConflictingWrite):  # a database error inside its savepoint
        clash.result()
    assert stored(engine) == {
        "441111111111": "Hello",
        "444444444444": "Hello",
        "446666666666": "Hello",
    }
    # The busy leader's transaction; one for all seven requests without savepoints, rolled
    # back at the clash's database error; then one for all seven, each in its savepoint.
    assert finished == 3


def test_refused_requests_cost_the_group_no_savepoints_and_no_second_run(
    add: AddMessages,
    group: GroupCommit,
    account: accounts.NewAccount,
    engine: Engine,
    transactions: Transactions,
) -> None:
    """An unknown key, an invalid message or a reused id is refused before it writes: the
    group commits the others in its one transaction, with no savepoint for anyone."""
    statements: list[str] = []

    def executed(_connection: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    with one_group(group) as submit:
        event.listen(engine, "before_cursor_execute", executed)
        first = submit(lambda: add(AddMessagesCommand(account.key, [draft("441111111111", id=ID)])))
        unknown = submit(lambda: add(AddMessagesCommand("not-a-key", [draft("442222222222")])))
        invalid = submit(lambda: add(AddMessagesCommand(account.key, [draft("0")])))
        reused_id = submit(
            lambda: add(AddMessagesCommand(account.key, [draft("44555555555", body="B", id=ID)]))
        )
        last = submit(lambda: add(AddMessagesCommand(account.key, [draft("446666666666")])))
    event.remove(engine, "before_cursor_execute", executed)
    assert [a.to for a in first.result() + last.result()] == ["441111111111", "446666666666"]
    with pytest.raises(Unauthenticated):
        unknown.result()
    with pytest.raises(InvalidRequest):
        invalid.result()
    with pytest.raises(IdConflict):
        reused_id.result()
    assert stored(engine) == {"441111111111": "Hello", "446666666666": "Hello"}
    assert transactions.finished == 2  # the busy leader's, then one for the five
    assert not [s for s in statements if "SAVEPOINT" in s]


def test_an_id_repeated_within_a_group_is_replayed_from_its_first_request(
    add: AddMessages, group: GroupCommit, account: accounts.NewAccount, engine: Engine
) -> None:
    command = AddMessagesCommand(account.key, [draft("441111111111", id=ID)])
    with one_group(group) as submit:
        first, again = submit(lambda: add(command)), submit(lambda: add(command))
    assert first.result() == again.result()
    assert len(stored(engine)) == 1


def test_a_caller_gone_before_its_group_commits_is_rolled_back_alone(
    add: AddMessages, group: GroupCommit, account: accounts.NewAccount, engine: Engine
) -> None:
    """Gone after its own work but before the commit: its writes must not be kept, the
    others' must be."""
    gone = threading.Event()
    with one_group(group) as submit:
        leaving = submit(
            lambda: add(
                AddMessagesCommand(account.key, [draft("441111111111")], cancelled=gone.is_set)
            )
        )
        submit(lambda: group.run(lambda _uow: gone.set()))  # runs after the leaving request
        staying = submit(lambda: add(AddMessagesCommand(account.key, [draft("442222222222")])))
    with pytest.raises(Abandoned):
        leaving.result()
    assert [a.to for a in staying.result()] == ["442222222222"]
    assert stored(engine) == {"442222222222": "Hello"}


def test_an_acknowledged_request_is_committed_when_it_returns(
    add: AddMessages, account: accounts.NewAccount, engine: Engine
) -> None:
    """Durable means committed: another connection sees every acknowledged message at once."""

    def acknowledged_then_seen(n: int) -> bool:
        accepted = add(AddMessagesCommand(account.key, [draft(f"4411111111{n:02d}")]))
        return accepted[0].to in stored(engine)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(acknowledged_then_seen, range(40)))
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(queued_messages)).scalar()
    assert count == 40


@pytest.mark.parametrize("messages", [1, 12])  # on PostgreSQL, 12 rows go by COPY
def test_a_request_gone_during_its_own_insert_is_undone_and_its_group_run_in_savepoints(
    add: AddMessages,
    group: GroupCommit,
    account: accounts.NewAccount,
    engine: Engine,
    transactions: Transactions,
    messages: int,
) -> None:
    """Its caller leaves after its rows are written, before its work ends: it fails after a
    write, which the group notices, so it undoes them all and runs again in savepoints."""
    asked = 0

    def gone_once_asked_again() -> bool:
        nonlocal asked
        asked += 1
        return asked > 1  # still there before its group runs, gone after its insert

    leaving_drafts = [  # a custom sender: no pin to write, the insert is its one write
        draft(f"4411111111{n:02d}", sender=SenderDraft("custom", "Acme")) for n in range(messages)
    ]
    with one_group(group) as submit:
        first = submit(lambda: add(AddMessagesCommand(account.key, [draft("442222222222")])))
        leaving = submit(
            lambda: add(
                AddMessagesCommand(account.key, leaving_drafts, cancelled=gone_once_asked_again)
            )
        )
        last = submit(lambda: add(AddMessagesCommand(account.key, [draft("443333333333")])))
    with pytest.raises(Abandoned):
        leaving.result()
    assert [a.to for a in first.result() + last.result()] == ["442222222222", "443333333333"]
    assert stored(engine) == {"442222222222": "Hello", "443333333333": "Hello"}
    assert transactions.finished == 3  # the busy leader's, the undone one, the savepoints'


def test_a_refusal_after_a_write_is_undone_with_its_write(
    add: AddMessages, group: GroupCommit, account: accounts.NewAccount, engine: Engine
) -> None:
    senders = pool_senders(engine)
    with one_group(group) as submit:
        refused = submit(lambda: group.run(refused_after_a_write))
        kept = submit(lambda: add(AddMessagesCommand(account.key, [draft("442222222222")])))
    with pytest.raises(Unauthenticated):
        refused.result()
    assert [a.to for a in kept.result()] == ["442222222222"]
    assert pool_senders(engine) == senders


class CountingGroup(GroupCommit):
    def __init__(self, transactions: Transactions) -> None:
        super().__init__(transactions)
        self.runs = 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.runs += 1
        return super().run(*args, **kwargs)


def test_a_request_over_the_grouped_size_runs_in_a_transaction_of_its_own(
    transactions: Transactions, account: accounts.NewAccount, engine: Engine
) -> None:
    counting = CountingGroup(transactions)
    add = AddMessages(
        transactions,
        Limits(),
        Environment(now=lambda: NOW, rng=random.Random(7)),
        group_commit=counting,
        grouped_at_most=2,
    )
    add(AddMessagesCommand(account.key, [draft("441111111111"), draft("442222222222")]))
    assert counting.runs == 1
    add(AddMessagesCommand(account.key, [draft(f"44333333333{n}") for n in range(3)]))
    assert counting.runs == 1
    assert len(stored(engine)) == 5


def test_work_that_writes_without_committing_keeps_nothing(
    group: GroupCommit, account: accounts.NewAccount, engine: Engine
) -> None:
    """Leaving its unit of work without `commit()` undoes its writes, in a group as alone."""

    def writes_and_leaves(uow: UnitOfWork) -> str:
        uow.senders.add(["447700900098"], NOW)
        return "left without commit"

    with one_group(group) as submit:
        left = submit(lambda: group.run(writes_and_leaves))
        kept = submit(lambda: group.run(adds("447700900097")))
    assert (left.result(), kept.result()) == ("left without commit", "447700900097")
    pool = pool_senders(engine)
    assert "447700900097" in pool
    assert "447700900098" not in pool


ON_POSTGRES = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
"""Deadlines bound PostgreSQL's statements only (statement_timeout)."""


@ON_POSTGRES
def test_a_request_past_its_deadline_in_a_savepoint_is_still_rolled_back(
    group: GroupCommit, engine: Engine
) -> None:
    def deadline_passes_after_a_write(uow: UnitOfWork) -> None:
        uow.finish_by(time.monotonic() + 0.2)
        uow.senders.add(["447700900002"], NOW)
        time.sleep(0.3)
        raise Abandoned()

    before = pool_senders(engine)
    with one_group(group) as submit:
        submit(lambda: group.run(refused_after_a_write))
        late = submit(lambda: group.run(deadline_passes_after_a_write))
        kept = submit(lambda: group.run(adds("447700900003")))
    with pytest.raises(Abandoned):
        late.result()
    assert kept.result() == "447700900003"
    assert pool_senders(engine) - before == {"447700900003"}


@ON_POSTGRES
@pytest.mark.parametrize("in_savepoints", [False, True])
def test_a_near_deadline_does_not_shorten_the_next_requests_statements(
    group: GroupCommit, engine: Engine, in_savepoints: bool
) -> None:
    def near_deadline(uow: UnitOfWork) -> None:
        uow.finish_by(time.monotonic() + 0.3)
        uow.senders.pool()
        uow.commit()

    def slow_statement(uow: UnitOfWork) -> str:
        uow.finish_by(time.monotonic() + 30)  # more than statement_ms: no bound of its own
        connection = uow.senders._connection
        connection.exec_driver_sql("SELECT pg_sleep(0.6)")
        uow.commit()
        return "finished"

    with one_group(group) as submit:
        if in_savepoints:
            submit(lambda: group.run(refused_after_a_write))
        submit(lambda: group.run(near_deadline))
        slow = submit(lambda: group.run(slow_statement))
    assert slow.result() == "finished"


@ON_POSTGRES
def test_a_cancelled_statement_fails_its_own_request_and_the_rest_are_stored(
    group: GroupCommit, engine: Engine
) -> None:
    """PostgreSQL aborts the transaction at a failed statement: its savepoint's rollback must
    run though the request's deadline has passed, or the COMMIT would silently roll back the
    requests already told they were stored."""

    def cancelled(uow: UnitOfWork) -> None:
        uow.finish_by(time.monotonic() + 0.2)
        uow.senders._connection.exec_driver_sql("SELECT pg_sleep(1)")

    before = pool_senders(engine)
    with one_group(group) as submit:
        submit(lambda: group.run(refused_after_a_write))
        kept = submit(lambda: group.run(adds("447700900003")))
        late = submit(lambda: group.run(cancelled))
    with pytest.raises(StorageUnavailable):
        late.result()
    assert kept.result() == "447700900003"
    assert pool_senders(engine) - before == {"447700900003"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_transaction_sqlite_rolled_back_itself_fails_the_whole_group(
    group: GroupCommit, engine: Engine
) -> None:
    """SQLite rolls the whole transaction back on an interrupt (a full disk, an I/O error
    alike): no request of the group is told stored, and none told failed is stored."""

    def interrupted(uow: UnitOfWork) -> None:
        driver = uow.senders._connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.set_progress_handler(lambda: 1, 1)  # interrupts its next statement
        try:
            uow.senders.add(["447700900012"], NOW)
        finally:
            driver.set_progress_handler(None, 1)

    before = pool_senders(engine)
    with one_group(group) as submit:
        submit(lambda: group.run(refused_after_a_write))  # the group runs in savepoints
        runs = [
            submit(lambda: group.run(adds("447700900011"))),
            submit(lambda: group.run(interrupted)),
            submit(lambda: group.run(adds("447700900014"))),
        ]
    for run in runs:
        with pytest.raises(StorageUnavailable):
            run.result()
    assert pool_senders(engine) == before
