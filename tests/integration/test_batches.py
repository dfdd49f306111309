"""The batch use cases against a real database (SQLite file and PostgreSQL): receipts per
state, pending batches, cancelling, and cancelling while a dispatcher claims (PostgreSQL)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update

from server.config import Limits
from server.domain.batches import BatchReport, Receipt
from server.domain.delivery import DELIVERED, HANDSET_UNREACHABLE, RECEIPT_CODES, ReceiptCode
from server.domain.errors import (
    BatchAlreadySent,
    BatchNotFound,
    InvalidRequest,
    Unauthenticated,
    Violation,
)
from server.domain.model import AcceptedMessage, MessageDraft, SenderDraft
from server.service import accounts
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.service.batches import BatchCall, Batches
from server.service.clock import Environment
from server.storage.tables import queued_messages
from server.storage.unit_of_work import UnitOfWork

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = "2026-03-02T09:00:00Z"
SOONER = "2026-03-01T18:30:00.250+01:00"  # 17:30:00.250 UTC


def draft(to: str = "441111111111", body: str = "Hello", **fields: Any) -> MessageDraft:
    return MessageDraft(to=to, sender=SenderDraft("custom", "Acme"), body=body, **fields)


@pytest.fixture
def environment() -> Environment:
    return Environment(now=lambda: NOW, rng=random.Random(7))


@pytest.fixture
def batches(unit_of_work: Callable[[], UnitOfWork], environment: Environment) -> Batches:
    return Batches(unit_of_work, environment)


@pytest.fixture
def queue(
    unit_of_work: Callable[[], UnitOfWork], environment: Environment
) -> Callable[..., list[AcceptedMessage]]:
    add = AddMessages(unit_of_work, Limits(), environment)

    def queue(key: str, *drafts: MessageDraft) -> list[AcceptedMessage]:
        return add(AddMessagesCommand(key, drafts))

    return queue


def into_one_batch(engine: Engine, messages: Sequence[AcceptedMessage]) -> str:
    """Makes the messages one batch (AddMessages makes a batch per message; add-batch, to
    come, makes one of many), as the first one's."""
    batch_uuid = messages[0].batch_uuid
    uuids = [m.message_uuid for m in messages]
    with engine.begin() as connection:
        connection.execute(
            update(queued_messages)
            .where(queued_messages.c.message_uuid.in_(uuids))
            .values(batch_uuid=batch_uuid)
        )
    return batch_uuid


def set_state(
    engine: Engine, message: AcceptedMessage, status: str, receipt: ReceiptCode | None = None
) -> None:
    """What the dispatcher (built elsewhere) will write: a state and, once final, a receipt."""
    with engine.begin() as connection:
        connection.execute(
            update(queued_messages)
            .where(queued_messages.c.message_uuid == message.message_uuid)
            .values(
                status=status,
                receipt_code=receipt.code if receipt else None,
                receipt_description=receipt.description if receipt else None,
            )
        )


def statuses(engine: Engine, batch_uuid: str) -> list[str]:
    with engine.connect() as connection:
        return sorted(
            connection.execute(
                select(queued_messages.c.status).where(queued_messages.c.batch_uuid == batch_uuid)
            ).scalars()
        )


def test_counts_and_details_follow_each_messages_state(
    engine: Engine, account: accounts.NewAccount, queue: Any, batches: Batches
) -> None:
    sent = queue(
        account.key,
        draft("441111111114"),
        draft("441111111113"),
        draft("441111111112"),
        draft("441111111111"),
    )
    batch_uuid = into_one_batch(engine, sent)
    queued, sending, delivered, failed = sent[3], sent[2], sent[1], sent[0]
    set_state(engine, sending, "sent", HANDSET_UNREACHABLE)  # announced, not final: pending
    set_state(engine, delivered, "delivered", DELIVERED)
    set_state(engine, failed, "failed", HANDSET_UNREACHABLE)
    call = BatchCall(account.key)

    report = batches.report(call, batch_uuid, details=True)
    assert (report.total, report.delivered, report.failed) == (4, 1, 1)

    def receipt(message: AcceptedMessage, **state: Any) -> Receipt:
        return Receipt(
            destination=f"+{message.to}",
            batch_uuid=batch_uuid,
            message_uuid=message.message_uuid,
            **{"delivered": False, "failed": False, "info": None} | state,
        )

    assert report.receipts == (  # by destination
        receipt(queued),
        receipt(sending),
        receipt(delivered, delivered=True, info=DELIVERED),
        receipt(failed, failed=True, info=HANDSET_UNREACHABLE),
    )
    assert batches.report(call, batch_uuid, details=False) == BatchReport(4, 1, 1, ())


def test_a_fresh_batch_counts_zeros_and_any_spelling_of_its_uuid_finds_it(
    account: accounts.NewAccount, queue: Any, batches: Batches
) -> None:
    (message,) = queue(account.key, draft())
    report = batches.report(BatchCall(account.key), message.batch_uuid.upper(), details=True)
    assert (report.total, report.delivered, report.failed) == (1, 0, 0)
    assert report.receipts[0].info is None and report.receipts[0].destination == "+441111111111"


def test_another_accounts_batch_is_not_found_like_an_unknown_one(
    unit_of_work: Callable[[], UnitOfWork],
    account: accounts.NewAccount,
    queue: Any,
    batches: Batches,
) -> None:
    (theirs,) = queue(account.key, draft(send_at=LATER))
    mine = accounts.create_account(unit_of_work, "other").key
    for batch_uuid in (theirs.batch_uuid, "00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        with pytest.raises(BatchNotFound):
            batches.report(BatchCall(mine), batch_uuid, details=False)
        with pytest.raises(BatchNotFound):
            batches.cancel(BatchCall(mine), batch_uuid)
    assert batches.pending(BatchCall(mine)) == []
    assert [b.identifier for b in batches.pending(BatchCall(account.key))] == [theirs.batch_uuid]


def test_pending_lists_scheduled_batches_still_queued_soonest_first(
    engine: Engine, account: accounts.NewAccount, queue: Any, batches: Batches
) -> None:
    later, sooner, _now, claimed, long, unicode = queue(
        account.key,
        draft(send_at=LATER),
        draft(send_at=SOONER),
        draft(),  # sent now: never pending
        draft(send_at=LATER),
        draft(send_at=LATER, body="x" * 161),  # two GSM-7 parts
        draft(send_at=LATER, body="é" * 10 + "€"),  # GSM-7 with an escape: one part
    )
    set_state(engine, claimed, "sending")
    batch_uuid = into_one_batch(engine, [long, unicode])

    pending = batches.pending(BatchCall(account.key))
    assert [(b.identifier, b.at, b.sender, b.message_count, b.unit_count) for b in pending] == [
        (sooner.batch_uuid, datetime(2026, 3, 1, 17, 30, 0, 250000, tzinfo=UTC), "Acme", 1, 1),
        *sorted(
            [
                (later.batch_uuid, datetime(2026, 3, 2, 9, tzinfo=UTC), "Acme", 1, 1),
                (batch_uuid, datetime(2026, 3, 2, 9, tzinfo=UTC), "Acme", 2, 3),
            ]
        ),
    ]


def test_cancel_removes_a_queued_batch_for_good(
    engine: Engine, account: accounts.NewAccount, queue: Any, batches: Batches
) -> None:
    first, second, kept = queue(
        account.key, draft(send_at=LATER), draft(send_at=LATER), draft(send_at=LATER)
    )
    batch_uuid = into_one_batch(engine, [first, second])
    call = BatchCall(account.key)
    batches.cancel(call, batch_uuid)
    assert statuses(engine, batch_uuid) == ["cancelled", "cancelled"]
    with pytest.raises(BatchNotFound):
        batches.report(call, batch_uuid, details=True)
    with pytest.raises(BatchNotFound):
        batches.cancel(call, batch_uuid)
    assert [b.identifier for b in batches.pending(call)] == [kept.batch_uuid]


def test_a_message_queued_again_for_a_retry_was_released_and_is_not_pending(
    engine: Engine, account: accounts.NewAccount, queue: Any, batches: Batches
) -> None:
    (message,) = queue(account.key, draft(send_at=LATER))
    with engine.begin() as connection:  # tried once, queued again for the retry's backoff
        connection.execute(
            update(queued_messages)
            .where(queued_messages.c.message_uuid == message.message_uuid)
            .values(attempts=1)
        )
    call = BatchCall(account.key)
    assert batches.pending(call) == []
    with pytest.raises(BatchAlreadySent):
        batches.cancel(call, message.batch_uuid)
    assert statuses(engine, message.batch_uuid) == ["queued"]


@pytest.mark.parametrize("state", ["sending", "sent", "delivered", "failed"])
def test_a_batch_with_a_message_gone_from_the_queue_cannot_be_cancelled_at_all(
    engine: Engine, account: accounts.NewAccount, queue: Any, batches: Batches, state: str
) -> None:
    released, waiting = queue(account.key, draft(), draft())
    batch_uuid = into_one_batch(engine, [released, waiting])
    set_state(engine, released, state)
    with pytest.raises(BatchAlreadySent):
        batches.cancel(BatchCall(account.key), batch_uuid)
    assert statuses(engine, batch_uuid) == sorted(["queued", state])  # nothing cancelled


def test_a_key_comes_first_then_the_query_rule(
    account: accounts.NewAccount, queue: Any, batches: Batches
) -> None:
    (message,) = queue(account.key, draft(send_at=LATER))
    bad_query = (Violation("foo", "is not a query parameter", "UNKNOWN_QUERY_PARAMETER"),)
    for key in (None, "", "mp_unknown"):
        with pytest.raises(Unauthenticated):
            batches.report(BatchCall(key, bad_query), message.batch_uuid, details=False)
        with pytest.raises(Unauthenticated):
            batches.pending(BatchCall(key))
        with pytest.raises(Unauthenticated):
            batches.cancel(BatchCall(key), message.batch_uuid)
    with pytest.raises(InvalidRequest):
        batches.cancel(BatchCall(account.key, bad_query), message.batch_uuid)
    assert len(batches.pending(BatchCall(account.key))) == 1  # not cancelled
    assert batches.receipt_codes(BatchCall(None)) == RECEIPT_CODES
    with pytest.raises(InvalidRequest):
        batches.receipt_codes(BatchCall(None, bad_query))


POSTGRES_ONLY = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
"""Row locks and concurrent transactions: SQLite runs one writer at a time."""

CLAIM = text(
    "UPDATE queued_messages SET status = 'sending' "
    "WHERE message_uuid = :message_uuid AND status = 'queued'"
)
"""A dispatcher's claim, reduced to its guard."""


def _waiting_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        ).scalar_one()
    return int(waiting) > 0


def _wait_until_blocked(engine: Engine) -> None:
    deadline = time.monotonic() + 10
    while not _waiting_for_a_lock(engine):
        assert time.monotonic() < deadline, "the second transaction never waited for the first"
        time.sleep(0.01)


@POSTGRES_ONLY
def test_a_claim_that_commits_first_wins_and_the_cancel_is_refused_whole(
    engine: Engine, account: accounts.NewAccount, queue: Any, batches: Batches
) -> None:
    claimed, other = queue(account.key, draft(send_at=LATER), draft(send_at=LATER))
    batch_uuid = into_one_batch(engine, [claimed, other])
    with engine.connect() as dispatcher, ThreadPoolExecutor(1) as pool:
        with dispatcher.begin():
            dispatcher.execute(CLAIM, {"message_uuid": claimed.message_uuid})
            cancel = pool.submit(batches.cancel, BatchCall(account.key), batch_uuid)
            _wait_until_blocked(engine)  # the cancel waits for the claimed row
        with pytest.raises(BatchAlreadySent):
            cancel.result(timeout=10)
    assert statuses(engine, batch_uuid) == ["queued", "sending"]  # the other is not cancelled


@POSTGRES_ONLY
def test_a_cancel_that_commits_first_wins_and_the_claim_finds_nothing(
    engine: Engine, unit_of_work: Callable[[], UnitOfWork], account: accounts.NewAccount, queue: Any
) -> None:
    (message,) = queue(account.key, draft(send_at=LATER))
    committed = threading.Event()

    class CommitLate(UnitOfWork):
        """Holds the cancel's locks until a claim waits for them."""

        def commit(self) -> None:
            _wait_until_blocked(engine)
            super().commit()
            committed.set()

    late = Batches(lambda: CommitLate(engine), Environment(now=lambda: NOW))
    with ThreadPoolExecutor(1) as pool:
        cancel = pool.submit(late.cancel, BatchCall(account.key), message.batch_uuid)
        with engine.begin() as dispatcher:
            while not _holds_row_lock(engine, cancel):
                time.sleep(0.01)
            claimed = dispatcher.execute(CLAIM, {"message_uuid": message.message_uuid}).rowcount
        cancel.result(timeout=10)
    assert committed.is_set() and claimed == 0
    assert statuses(engine, message.batch_uuid) == ["cancelled"]


def _holds_row_lock(engine: Engine, cancel: Any) -> bool:
    """The cancel has run its UPDATE (its transaction holds locks on queued_messages)."""
    if cancel.done():
        cancel.result()
        return True
    with engine.connect() as connection:
        held = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'queued_messages' AND l.mode = 'RowExclusiveLock' "
                "AND l.pid <> pg_backend_pid()"
            )
        ).scalar_one()
    return int(held) > 0


@POSTGRES_ONLY
def test_racing_cancels_and_claims_never_both_win(
    engine: Engine, account: accounts.NewAccount, queue: Any, batches: Batches
) -> None:
    pairs = [queue(account.key, draft(send_at=LATER), draft(send_at=LATER)) for _ in range(15)]
    batch_uuids = [into_one_batch(engine, pair) for pair in pairs]

    def claim(message: AcceptedMessage, start: threading.Barrier) -> int:
        start.wait()
        with engine.begin() as connection:
            return int(connection.execute(CLAIM, {"message_uuid": message.message_uuid}).rowcount)

    def cancel(batch_uuid: str, start: threading.Barrier) -> bool:
        start.wait()
        try:
            batches.cancel(BatchCall(account.key), batch_uuid)
        except BatchAlreadySent:
            return False
        return True

    with ThreadPoolExecutor(2) as pool:
        for pair, batch_uuid in zip(pairs, batch_uuids, strict=True):
            start = threading.Barrier(2)
            claimed = pool.submit(claim, pair[0], start)
            cancelled = pool.submit(cancel, batch_uuid, start)
            assert claimed.result(timeout=10) + cancelled.result(timeout=10) == 1
            expected = ["cancelled"] * 2 if cancelled.result() else ["queued", "sending"]
            assert statuses(engine, batch_uuid) == expected
    with engine.connect() as connection:
        count = connection.execute(
            select(func.count()).where(queued_messages.c.status == "cancelled")
        ).scalar_one()
    assert count % 2 == 0  # whole batches only
