"""The AddMessages use case against a real database (SQLite file and PostgreSQL)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from server.config import Limits
from server.domain.errors import (
    Abandoned,
    IdConflict,
    InvalidRequest,
    NoSharedSenders,
    Unauthenticated,
)
from server.domain.model import AcceptedMessage, MessageDraft, SenderDraft
from server.service import accounts, senders
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.service.clock import Environment
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.tables import queued_messages, sender_pins
from server.storage.unit_of_work import UnitOfWork

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CUSTOM = SenderDraft("custom", "Acme")
SHARED = SenderDraft("shared", "")


def draft(**fields: Any) -> MessageDraft:
    fields.setdefault("to", "441111111111")
    fields.setdefault("sender", CUSTOM)
    fields.setdefault("body", "Hello")
    return MessageDraft(**fields)


@pytest.fixture
def add_messages(unit_of_work: Callable[[], UnitOfWork]) -> AddMessages:
    return AddMessages(unit_of_work, Limits(), Environment(now=lambda: NOW, rng=random.Random(7)))


def stored_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(select(queued_messages).order_by(queued_messages.c.created_at))
        )


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_accepted_messages_are_stored_with_what_a_dispatcher_needs(
    add_messages: AddMessages, account: accounts.NewAccount, engine: Engine
) -> None:
    send_at = "2026-03-02T09:00:00Z"
    accepted = add_messages(
        AddMessagesCommand(
            account.key,
            [
                draft(to="+44 1111 111111", callback="https://example.com/dr"),
                draft(
                    to="442222222222",
                    body="Later",
                    channels=("rcs", "sms"),
                    send_at=send_at,
                    id="B2693DFE-0813-427A-BC2F-62B0E9292403",
                ),
            ],
        )
    )
    assert [a.to for a in accepted] == ["441111111111", "442222222222"]
    assert len({a.message_uuid for a in accepted} | {a.batch_uuid for a in accepted}) == 4
    rows = {row.message_uuid: row for row in stored_rows(engine)}
    assert set(rows) == {a.message_uuid for a in accepted}
    now_row, later_row = rows[accepted[0].message_uuid], rows[accepted[1].message_uuid]
    assert (now_row.account_id, now_row.destination, now_row.sender) == (
        account.id,
        "441111111111",
        "Acme",
    )
    assert now_row.callback == "https://example.com/dr"
    assert now_row.channels == ["sms"]
    assert now_row.due_at == NOW and now_row.scheduled is False
    assert now_row.status == "queued" and now_row.client_id is None
    assert later_row.channels == ["rcs", "sms"]
    assert later_row.due_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert later_row.scheduled is True and later_row.send_at == send_at
    assert later_row.client_id == "b2693dfe-0813-427a-bc2f-62b0e9292403"
    assert later_row.batch_uuid == accepted[1].batch_uuid


@pytest.mark.parametrize("key", [None, "", "mp_not-a-key"])
def test_missing_or_unknown_keys_are_refused_before_validation(
    add_messages: AddMessages, account: accounts.NewAccount, engine: Engine, key: str | None
) -> None:
    with pytest.raises(Unauthenticated):
        add_messages(AddMessagesCommand(key, [MessageDraft()]))
    assert count(engine, queued_messages) == 0


def test_the_caller_hears_the_account_once_the_key_is_known_and_only_then(
    add_messages: AddMessages, account: accounts.NewAccount
) -> None:
    heard: list[str] = []
    add_messages(AddMessagesCommand(account.key, [draft()]), authenticated=heard.append)
    with pytest.raises(InvalidRequest):  # refused after authentication: still attributed
        add_messages(AddMessagesCommand(account.key, [draft(to="1")]), authenticated=heard.append)
    with pytest.raises(Unauthenticated):
        add_messages(AddMessagesCommand("mp_not-a-key", [draft()]), authenticated=heard.append)
    assert heard == [account.id, account.id]


def test_a_revoked_key_stops_working_and_other_keys_keep_working(
    add_messages: AddMessages,
    account: accounts.NewAccount,
    unit_of_work: Callable[[], UnitOfWork],
) -> None:
    second = accounts.create_key(unit_of_work, "acme")
    accounts.revoke_key(unit_of_work, account.key)
    with pytest.raises(Unauthenticated):
        add_messages(AddMessagesCommand(account.key, [draft()]))
    assert len(add_messages(AddMessagesCommand(second, [draft()]))) == 1
    with pytest.raises(accounts.AccountError):
        accounts.revoke_key(unit_of_work, account.key)


def test_one_invalid_message_rejects_the_whole_request(
    add_messages: AddMessages, account: accounts.NewAccount, engine: Engine
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        add_messages(AddMessagesCommand(account.key, [draft(), draft(body=" "), draft(to="12")]))
    assert [v.field for v in raised.value.violations] == ["messages[1].body", "messages[2].to"]
    assert count(engine, queued_messages) == 0


def test_a_caller_gone_before_the_commit_gets_a_failure_and_nothing_is_stored(
    add_messages: AddMessages, account: accounts.NewAccount, engine: Engine
) -> None:
    """Cancelled (a server stop past its grace, a client that hung up) or past its deadline
    once the work is done: rolled back, so "failed" is true and a resend stores it once."""
    asked: list[bool] = []

    def gone() -> bool:
        asked.append(True)
        return True

    with pytest.raises(Abandoned):
        add_messages(
            AddMessagesCommand(account.key, [draft(sender=SHARED), draft()], cancelled=gone)
        )
    assert asked and count(engine, queued_messages) == 0 and count(engine, sender_pins) == 0
    ran_out = AddMessagesCommand(account.key, [draft()], deadline=time.monotonic() + 0.2)
    assert not ran_out.abandoned()
    time.sleep(0.25)
    assert ran_out.abandoned()
    add_messages(AddMessagesCommand(account.key, [draft()], cancelled=lambda: False))
    assert count(engine, queued_messages) == 1


def test_defaults_fill_what_messages_omit(
    add_messages: AddMessages, account: accounts.NewAccount
) -> None:
    defaults = MessageDraft(sender=SenderDraft("custom", "mplus-test"), callback="https://a.b/c")
    accepted = add_messages(
        AddMessagesCommand(
            account.key,
            [
                MessageDraft(to="441111111111", body="one"),
                MessageDraft(
                    to="442222222222", body="two", sender=SenderDraft("custom", "specific")
                ),
            ],
            defaults,
        )
    )
    assert [a.sender for a in accepted] == ["mplus-test", "specific"]
    assert [a.callback for a in accepted] == ["https://a.b/c", "https://a.b/c"]


class TestSharedSenders:
    def test_a_number_keeps_the_sender_it_was_first_sent_from(
        self,
        pool: tuple[str, ...],
        add_messages: AddMessages,
        account: accounts.NewAccount,
        engine: Engine,
    ) -> None:
        first = add_messages(AddMessagesCommand(account.key, [draft(sender=SHARED)]))[0].sender
        assert first in pool
        for _ in range(5):
            again = add_messages(AddMessagesCommand(account.key, [draft(sender=SHARED)]))
            assert again[0].sender == first
        assert count(engine, sender_pins) == 1

    def test_messages_to_one_number_in_one_request_share_a_sender(
        self, add_messages: AddMessages, account: accounts.NewAccount
    ) -> None:
        accepted = add_messages(
            AddMessagesCommand(
                account.key,
                [draft(sender=SHARED, to="+447000000001"), draft(sender=SHARED, to="447000000001")],
            )
        )
        assert accepted[0].sender == accepted[1].sender

    def test_new_numbers_are_spread_over_the_pool_at_random(
        self, pool: tuple[str, ...], add_messages: AddMessages, account: accounts.NewAccount
    ) -> None:
        numbers = [f"4470000{i:05d}" for i in range(40)]
        accepted = add_messages(
            AddMessagesCommand(account.key, [draft(sender=SHARED, to=n) for n in numbers])
        )
        assert {a.sender for a in accepted} == set(pool)

    def test_stickiness_is_per_account(
        self,
        add_messages: AddMessages,
        account: accounts.NewAccount,
        unit_of_work: Callable[[], UnitOfWork],
        engine: Engine,
    ) -> None:
        other = accounts.create_account(unit_of_work, "other")
        numbers = [f"4470000{i:05d}" for i in range(12)]
        mine = add_messages(
            AddMessagesCommand(account.key, [draft(sender=SHARED, to=n) for n in numbers])
        )
        theirs = add_messages(
            AddMessagesCommand(other.key, [draft(sender=SHARED, to=n) for n in numbers])
        )
        assert [a.sender for a in mine] != [a.sender for a in theirs]
        assert count(engine, sender_pins) == 24

    def test_a_sender_removed_from_the_pool_is_replaced_by_a_fresh_pick(
        self,
        pool: tuple[str, ...],
        add_messages: AddMessages,
        account: accounts.NewAccount,
        unit_of_work: Callable[[], UnitOfWork],
    ) -> None:
        first = add_messages(AddMessagesCommand(account.key, [draft(sender=SHARED)]))[0].sender
        senders.remove_senders(unit_of_work, [first])
        second = add_messages(AddMessagesCommand(account.key, [draft(sender=SHARED)]))[0].sender
        assert second != first and second in pool
        third = add_messages(AddMessagesCommand(account.key, [draft(sender=SHARED)]))[0].sender
        assert third == second

    def test_an_empty_pool_is_a_failed_precondition_and_custom_senders_still_work(
        self,
        pool: tuple[str, ...],
        add_messages: AddMessages,
        account: accounts.NewAccount,
        unit_of_work: Callable[[], UnitOfWork],
        engine: Engine,
    ) -> None:
        senders.remove_senders(unit_of_work, pool)
        with pytest.raises(NoSharedSenders):
            add_messages(AddMessagesCommand(account.key, [draft(), draft(sender=SHARED)]))
        assert count(engine, queued_messages) == 0
        assert len(add_messages(AddMessagesCommand(account.key, [draft()]))) == 1


class TestIdempotency:
    ID = "b2693dfe-0813-427a-bc2f-62b0e9292403"

    def test_resending_an_id_returns_the_stored_result_and_stores_nothing(
        self, add_messages: AddMessages, account: accounts.NewAccount, engine: Engine
    ) -> None:
        message = draft(id=self.ID, sender=SHARED)
        first = add_messages(AddMessagesCommand(account.key, [message]))[0]
        again = add_messages(
            AddMessagesCommand(
                account.key,
                [draft(id=self.ID.upper(), sender=SHARED, to="+44 1111111111"), draft()],
            )
        )
        assert (again[0].message_uuid, again[0].batch_uuid, again[0].sender) == (
            first.message_uuid,
            first.batch_uuid,
            first.sender,
        )
        assert count(engine, queued_messages) == 2

    def test_a_replay_answers_exactly_as_the_first_time_whatever_the_spelling(
        self, add_messages: AddMessages, account: accounts.NewAccount
    ) -> None:
        first = add_messages(
            AddMessagesCommand(account.key, [draft(id=self.ID, send_at="2026-03-02T09:00:00Z")])
        )[0]
        respelled = draft(
            id=self.ID.upper(),
            to="+44 1111 111111",
            send_at="2026-03-02T10:00+01:00",
            channels=("sms",),
        )
        again = add_messages(AddMessagesCommand(account.key, [respelled]))[0]
        assert again == first
        assert (again.send_at, again.channels, again.id) == ("2026-03-02T09:00:00Z", None, self.ID)

    def test_reusing_an_id_for_different_content_is_a_conflict(
        self, add_messages: AddMessages, account: accounts.NewAccount, engine: Engine
    ) -> None:
        add_messages(AddMessagesCommand(account.key, [draft(id=self.ID)]))
        with pytest.raises(IdConflict) as raised:
            add_messages(
                AddMessagesCommand(account.key, [draft(), draft(id=self.ID, body="Other")])
            )
        assert raised.value.field == "messages[1].id"
        assert count(engine, queued_messages) == 1

    def test_ids_are_scoped_to_the_account(
        self,
        add_messages: AddMessages,
        account: accounts.NewAccount,
        unit_of_work: Callable[[], UnitOfWork],
        engine: Engine,
    ) -> None:
        other = accounts.create_account(unit_of_work, "other")
        mine = add_messages(AddMessagesCommand(account.key, [draft(id=self.ID)]))[0]
        theirs = add_messages(AddMessagesCommand(other.key, [draft(id=self.ID, body="x")]))[0]
        assert mine.message_uuid != theirs.message_uuid
        assert count(engine, queued_messages) == 2

    def test_a_replay_keeps_its_schedule_when_send_at_has_since_passed(
        self, account: accounts.NewAccount, unit_of_work: Callable[[], UnitOfWork]
    ) -> None:
        clock = [NOW]
        add = AddMessages(unit_of_work, Limits(), Environment(now=lambda: clock[0]))
        message = draft(id=self.ID, send_at="2026-03-01T13:00Z")
        first = add(AddMessagesCommand(account.key, [message]))[0]
        clock[0] = NOW + timedelta(hours=2)
        again = add(AddMessagesCommand(account.key, [message]))[0]
        assert first.scheduled and again.scheduled
        assert again.message_uuid == first.message_uuid


class TestDryRun:
    def test_a_dry_run_answers_like_a_real_call_and_leaves_no_trace(
        self,
        pool: tuple[str, ...],
        add_messages: AddMessages,
        account: accounts.NewAccount,
        engine: Engine,
    ) -> None:
        messages = [draft(sender=SHARED, id=TestIdempotency.ID), draft(send_at="2026-03-05T10:00Z")]
        preview = add_messages(AddMessagesCommand(account.key, messages, dry_run=True))
        assert preview[0].sender in pool
        assert [p.scheduled for p in preview] == [False, True]
        assert count(engine, queued_messages) == 0
        assert count(engine, sender_pins) == 0
        real = add_messages(AddMessagesCommand(account.key, messages))
        assert real[0].message_uuid != preview[0].message_uuid  # the id was not consumed

    def test_a_dry_run_validates_like_a_real_call(
        self, add_messages: AddMessages, account: accounts.NewAccount
    ) -> None:
        with pytest.raises(InvalidRequest):
            add_messages(AddMessagesCommand(account.key, [draft(to="x")], dry_run=True))


def test_a_thousand_messages_are_stored_in_one_request(
    add_messages: AddMessages, account: accounts.NewAccount, engine: Engine
) -> None:
    messages = [draft(to=f"4470{i:08d}", sender=SHARED if i % 2 else CUSTOM) for i in range(1000)]
    accepted = add_messages(AddMessagesCommand(account.key, messages))
    assert len(accepted) == 1000
    assert count(engine, queued_messages) == 1000
    assert count(engine, sender_pins) == 500


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_database_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def raced(
    engine: Engine, target: str, competitor: Callable[[], object]
) -> Callable[[], UnitOfWork]:
    """Units of work in which the first call to `target` ("messages.add_many") first lets a
    competing request run to its commit: a race between two requests, made deterministic.
    PostgreSQL only: SQLite's write lock would make the competitor wait for us forever."""
    repository_name, method_name = target.split(".")
    fired: list[object] = []

    class RacedUnitOfWork(UnitOfWork):
        def __enter__(self) -> UnitOfWork:
            uow = super().__enter__()
            repository = getattr(uow, repository_name)
            original = getattr(repository, method_name)

            def after_competitor(*args: Any) -> Any:
                if not fired:
                    fired.append(competitor())
                return original(*args)

            setattr(repository, method_name, after_competitor)
            return uow

    return lambda: RacedUnitOfWork(engine)


@pytest.mark.postgres
def test_an_id_stored_by_a_concurrent_request_mid_transaction_is_replayed(
    postgres_engine: Engine,
) -> None:
    """The race the unique constraint settles: our insert fails, the retry replays theirs."""
    key = accounts.create_account(lambda: UnitOfWork(postgres_engine), "racer").key
    command = AddMessagesCommand(key, [draft(id=TestIdempotency.ID)])
    competitor = AddMessages(lambda: UnitOfWork(postgres_engine))
    theirs: list[AcceptedMessage] = []
    factory = raced(
        postgres_engine, "messages.add_many", lambda: theirs.extend(competitor(command))
    )
    ours = AddMessages(factory)(command)
    assert ours[0].message_uuid == theirs[0].message_uuid
    assert count(postgres_engine, queued_messages) == 1


@pytest.mark.postgres
def test_ids_stored_by_a_concurrent_bulk_request_mid_transaction_are_replayed(
    postgres_engine: Engine,
) -> None:
    """The same race when the rows go by COPY (enough of them): a unique violation there is
    a ConflictingWrite too, and the retry replays every message."""
    key = accounts.create_account(lambda: UnitOfWork(postgres_engine), "racer").key
    ids = [f"{n:08x}-0813-427a-bc2f-62b0e9292403" for n in range(20)]
    command = AddMessagesCommand(
        key, [draft(id=i, to=f"4411111111{n:02d}") for n, i in enumerate(ids)]
    )
    competitor = AddMessages(lambda: UnitOfWork(postgres_engine))
    theirs: list[AcceptedMessage] = []
    factory = raced(
        postgres_engine, "messages.add_many", lambda: theirs.extend(competitor(command))
    )
    ours = AddMessages(factory)(command)
    assert [a.message_uuid for a in ours] == [a.message_uuid for a in theirs]
    assert count(postgres_engine, queued_messages) == 20


class PickAt(random.Random):
    """An rng whose choice is fixed: which pool sender a request would pick."""

    def __init__(self, index: int) -> None:
        super().__init__(0)
        self.index = index

    def choice(self, seq: Any) -> Any:
        return seq[self.index]


@pytest.mark.postgres
def test_a_number_pinned_by_a_concurrent_request_mid_transaction_keeps_that_sender(
    postgres_engine: Engine, pool: tuple[str, ...]
) -> None:
    """The race the sticky read-back settles: their pin wins, our answer uses it."""
    senders.add_senders(lambda: UnitOfWork(postgres_engine), pool)
    key = accounts.create_account(lambda: UnitOfWork(postgres_engine), "racer").key
    command = AddMessagesCommand(key, [draft(sender=SHARED, to="447000000321")])
    competitor = AddMessages(
        lambda: UnitOfWork(postgres_engine), environment=Environment(rng=PickAt(0))
    )
    theirs: list[AcceptedMessage] = []
    factory = raced(postgres_engine, "senders.pin", lambda: theirs.extend(competitor(command)))
    ours = AddMessages(factory, environment=Environment(rng=PickAt(1)))(command)
    assert theirs[0].sender == sorted(pool)[0]
    assert ours[0].sender == theirs[0].sender
    with postgres_engine.connect() as connection:
        pins = connection.execute(select(sender_pins.c.destination, sender_pins.c.sender)).all()
    assert [tuple(p) for p in pins] == [("447000000321", sorted(pool)[0])]
