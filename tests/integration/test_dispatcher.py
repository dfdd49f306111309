"""The dispatcher against a real database (SQLite file and PostgreSQL): claims, leases, channels,
retries, receipts and their webhooks, and several dispatchers at once."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from server.config import Delivery, Limits
from server.delivery.dispatcher import Dispatcher
from server.delivery.drivers import ChannelDriver, Dispatch, Outcome, SandboxDriver
from server.delivery.drivers.sandbox import SandboxReceipts
from server.delivery.receipts import ReceiptIntake
from server.domain.delivery import MessageStatus, receipt_code, receipt_webhook_body
from server.domain.dispatching import JITTER
from server.domain.model import MessageDraft, SenderDraft
from server.service import accounts
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.service.clock import Environment
from server.storage.database import create_database_engine
from server.storage.tables import delivery_attempts, queued_messages, webhook_deliveries
from server.storage.unit_of_work import UnitOfWork
from tests.support.clock import NOW, Clock

SETTINGS = Delivery(
    lease_ms=30_000,
    retry_ms=2_000,
    max_attempts=3,
    claim_batch=100,
    sandbox_receipt_delay_ms=1_000,
)
RECEIPT_DELAY = timedelta(milliseconds=SETTINGS.sandbox_receipt_delay_ms)
RECEIPT_TIMEOUT = timedelta(seconds=SETTINGS.receipt_timeout_s)
LEASE = timedelta(milliseconds=SETTINGS.lease_ms)
CALLBACK = "https://example.com/dr"


@dataclass
class Recording:
    """A driver that keeps every dispatch it is given, and answers as `inner` does."""

    inner: Any = field(
        default_factory=lambda: SandboxDriver(SETTINGS.sandbox_receipt_delay_ms / 1000)
    )
    sent: list[Dispatch] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    carrier: str = "sandbox"

    def send(self, dispatch: Dispatch) -> Outcome:
        with self.lock:
            self.sent.append(dispatch)
        outcome: Outcome = self.inner.send(dispatch)
        return outcome


@dataclass
class Answering:
    """A driver that answers with `answer`."""

    answer: Callable[[Dispatch], Outcome]
    carrier: str = "sandbox"

    def send(self, dispatch: Dispatch) -> Outcome:
        return self.answer(dispatch)


def draft(to: str = "447700900001", **fields: Any) -> MessageDraft:
    return MessageDraft(to=to, sender=SenderDraft("custom", "Acme"), body="Hello", **fields)


@dataclass
class World:
    """A migrated database with an account, a clock to move, and the test's view of the queue."""

    engine: Engine
    account: accounts.NewAccount
    clock: Clock = field(default_factory=Clock)

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.engine)

    def queue(self, *drafts: MessageDraft) -> list[str]:
        """Queues messages as AddMessages does, at the clock's time; answers their uuids."""
        environment = Environment(now=self.clock, rng=random.Random(1))
        add = AddMessages(self.unit_of_work, Limits(), environment)
        accepted = add(AddMessagesCommand(self.account.key, list(drafts)))
        return [m.message_uuid for m in accepted]

    def dispatcher(self, driver: ChannelDriver | None = None, **settings: Any) -> Dispatcher:
        """A dispatcher on the clock, with SETTINGS but for `settings`; a Recording sandbox
        driver unless given one."""
        return Dispatcher(
            self.unit_of_work,
            driver or Recording(),
            replace(SETTINGS, **settings),
            Environment(now=self.clock, rng=random.Random(2)),
            owner="test",
        )

    def receipts(self) -> SandboxReceipts:
        """The sandbox's inbound side on the clock: reports what it accepted RECEIPT_DELAY ago."""
        environment = Environment(now=self.clock, rng=random.Random(3))
        return SandboxReceipts(ReceiptIntake(self.unit_of_work, environment), RECEIPT_DELAY)

    def message(self, message_uuid: str) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(
                select(queued_messages).where(queued_messages.c.message_uuid == message_uuid)
            ).one()

    def tries(self, message_uuid: str) -> list[tuple[str, int, str, str | None]]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(delivery_attempts)
                .where(delivery_attempts.c.message_uuid == message_uuid)
                .order_by(delivery_attempts.c.id)
            )
            return [(r.channel, r.attempt, r.outcome, r.code) for r in rows]

    def webhooks(self) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(webhook_deliveries)))

    def settle(self, dispatcher: Dispatcher, step: timedelta) -> None:
        """Runs `dispatcher` and the sandbox's receipts, moving the clock on by `step` whenever
        both are idle, until every message is final."""
        receipts = self.receipts()
        for _ in range(200):
            if dispatcher.run_once() + receipts.run_once() == 0:
                with self.engine.connect() as connection:
                    statuses = connection.execute(select(queued_messages.c.status)).scalars()
                    if all(MessageStatus(s).final for s in statuses):
                        return
                self.clock.advance(step)
        raise AssertionError("the queue did not settle")


@pytest.fixture
def world(engine: Engine, account: accounts.NewAccount) -> World:
    return World(engine, account)


@pytest.mark.parametrize(
    ("to", "channels", "status", "code", "attempts"),
    [
        ("447700900001", None, "delivered", "00", [("sms", 1, "accepted", None)]),
        ("447700900022", None, "failed", "22", [("sms", 1, "accepted", None)]),
        (
            "447700900051",
            ("rcs", "sms"),
            "delivered",
            "00",
            [("rcs", 1, "unsupported", None), ("sms", 1, "accepted", None)],
        ),
        ("447700900051", ("rcs",), "failed", "30", [("rcs", 1, "unsupported", None)]),
        (
            "447700900052",
            ("rcs", "sms"),
            "failed",
            "30",
            [("rcs", 1, "unsupported", None), ("sms", 1, "unsupported", None)],
        ),
        (
            "447700900053",
            None,
            "delivered",
            "00",
            [
                ("sms", 1, "try_later", None),
                ("sms", 2, "try_later", None),
                ("sms", 3, "accepted", None),
            ],
        ),
        (
            "447700900054",
            ("sms", "rcs"),  # a timeout is no reason to fall back
            "failed",
            "41",
            [("sms", n, "try_later", None) for n in (1, 2, 3)],
        ),
        ("447700900055", None, "failed", "31", [("sms", 1, "rejected", "31")]),
        ("447700900056", ("rcs", "sms"), "failed", "32", [("rcs", 1, "rejected", "32")]),
    ],
)
def test_every_sandbox_outcome_ends_in_its_state_with_its_tries_recorded(
    world: World,
    to: str,
    channels: tuple[str, ...] | None,
    status: str,
    code: str,
    attempts: list[tuple[str, int, str, str | None]],
) -> None:
    [uuid] = world.queue(draft(to, channels=channels))
    world.settle(world.dispatcher(), step=timedelta(seconds=5))
    row = world.message(uuid)
    assert (row.status, row.receipt_code) == (status, code)
    assert row.receipt_description == receipt_code(code).description
    assert row.finished_at is not None and row.lease_owner is None
    assert world.tries(uuid) == attempts
    assert row.channel == attempts[-1][0]


def test_an_idle_dispatcher_handles_nothing(world: World) -> None:
    assert world.dispatcher().run_once() == 0


def test_a_scheduled_message_is_sent_at_its_send_at_and_not_before(
    world: World,
) -> None:
    driver = Recording()
    [scheduled] = world.queue(draft(send_at="2026-03-01T13:00:00Z"))
    [now] = world.queue(draft("447700900002"))
    dispatch = world.dispatcher(driver)
    assert dispatch.run_once() == 1
    assert [d.message_uuid for d in driver.sent] == [now]
    world.clock.now = datetime(2026, 3, 1, 12, 59, 59, tzinfo=UTC)
    assert world.receipts().run_once() == 1  # the first one's receipt
    assert dispatch.run_once() == 0
    assert world.message(scheduled).status == "queued"
    world.clock.now = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert dispatch.run_once() == 1
    assert [d.message_uuid for d in driver.sent] == [now, scheduled]
    assert world.message(scheduled).status == "sent"


def test_a_cancelled_message_is_never_claimed(world: World) -> None:
    [uuid] = world.queue(draft(send_at="2026-03-01T13:00:00Z"))
    with world.engine.begin() as connection:  # as cancelling its batch leaves it
        connection.execute(
            update(queued_messages)
            .where(queued_messages.c.message_uuid == uuid)
            .values(status=MessageStatus.CANCELLED.value)
        )
    world.clock.advance(timedelta(days=1))
    assert world.dispatcher().run_once() == 0
    assert world.message(uuid).status == "cancelled"


def test_a_carrier_timeout_is_retried_with_a_doubling_backoff(
    world: World,
) -> None:
    [uuid] = world.queue(draft("447700900053"))
    dispatch = world.dispatcher()
    for backoff in (timedelta(seconds=2), timedelta(seconds=4)):
        tried_at = world.clock.now
        assert dispatch.run_once() == 1
        row = world.message(uuid)
        assert row.status == "queued" and row.lease_owner is None
        assert backoff * (1 - JITTER) <= row.due_at - tried_at <= backoff * (1 + JITTER)
        world.clock.now = tried_at + backoff * (1 - JITTER) - timedelta(milliseconds=1)
        assert dispatch.run_once() == 0
        world.clock.now = row.due_at
    assert dispatch.run_once() == 1
    assert world.message(uuid).status == "sent"
    assert [t[2] for t in world.tries(uuid)] == ["try_later", "try_later", "accepted"]


def test_a_receipt_arrives_after_the_delay_and_only_then_is_final(
    world: World,
) -> None:
    [uuid] = world.queue(draft("447700900022", callback=CALLBACK))
    dispatch, receipts = world.dispatcher(), world.receipts()
    assert dispatch.run_once() == 1
    row = world.message(uuid)
    assert (row.status, row.receipt_code, row.due_at) == ("sent", None, NOW + RECEIPT_TIMEOUT)
    assert row.finished_at is None and world.webhooks() == []
    world.clock.advance(RECEIPT_DELAY - timedelta(milliseconds=1))
    assert receipts.run_once() == 0
    world.clock.advance(timedelta(milliseconds=1))
    assert receipts.run_once() == 1
    assert dispatch.run_once() == 0
    row = world.message(uuid)
    assert (row.status, row.receipt_code, row.finished_at) == ("failed", "22", world.clock.now)
    assert len(world.webhooks()) == 1
    [(channel, attempt, outcome, code)] = world.tries(uuid)  # the receipt is no try
    assert (channel, attempt, outcome, code) == ("sms", 1, "accepted", None)


def test_a_callback_gets_exactly_one_receipt_row_with_the_vendors_body(
    world: World,
) -> None:
    with_callback, without, failed = world.queue(
        draft("447700900001", callback=CALLBACK),
        draft("447700900002"),
        draft("447700900055", callback=CALLBACK + "?failed"),
    )
    world.settle(world.dispatcher(), step=timedelta(seconds=1))
    rows = {row.message_uuid: row for row in world.webhooks()}
    assert world.message(without).status == "delivered"
    assert rows.keys() == {with_callback, failed}
    for uuid, url, code in ((with_callback, CALLBACK, "00"), (failed, CALLBACK + "?failed", "31")):
        queued = world.message(uuid)
        expected = receipt_webhook_body(
            queued.destination, queued.batch_uuid, uuid, receipt_code(code)
        )
        assert (rows[uuid].url, rows[uuid].body) == (url, expected)
        assert (rows[uuid].account_id, rows[uuid].status) == (world.account.id, "pending")
        assert rows[uuid].due_at == queued.finished_at
    assert '"destination":"+447700900001","delivered":true' in rows[with_callback].body


class Killed(BaseException):
    """The dispatcher's process dies mid-send (no `except Exception` catches it)."""


def test_a_message_whose_dispatcher_died_is_claimed_again_after_the_lease_and_finished_once(
    world: World,
) -> None:
    [uuid] = world.queue(draft(callback=CALLBACK))

    def dies(_dispatch: Dispatch) -> Outcome:
        raise Killed()

    dying = world.dispatcher(Answering(dies))
    with pytest.raises(Killed):
        dying.run_once()
    assert world.message(uuid).status == "sending"
    survivor_driver = Recording()
    survivor = world.dispatcher(survivor_driver)
    world.clock.advance(LEASE - timedelta(milliseconds=1))
    assert survivor.run_once() == 0  # the lease still holds
    world.clock.advance(timedelta(milliseconds=1))
    world.settle(survivor, step=timedelta(seconds=1))
    assert [d.attempt for d in survivor_driver.sent] == [1]  # the dead one's try went unrecorded
    assert world.message(uuid).status == "delivered"
    assert world.tries(uuid) == [("sms", 1, "accepted", None)]
    assert len(world.webhooks()) == 1


def test_a_dispatcher_that_lost_its_lease_records_nothing(
    world: World,
) -> None:
    [uuid] = world.queue(draft("447700900055", callback=CALLBACK))
    other = world.dispatcher()

    def answers_after_the_lease(dispatch: Dispatch) -> Outcome:
        world.clock.advance(LEASE)  # by when another dispatcher took the message, and finished it
        assert other.run_once() == 1  # rejected as spam: failed at once
        return SandboxDriver().send(dispatch)

    assert world.dispatcher(Answering(answers_after_the_lease)).run_once() == 1
    row = world.message(uuid)
    assert (row.status, row.receipt_code) == ("failed", "31")
    assert world.tries(uuid) == [("sms", 1, "rejected", "31")]  # the other's only
    assert len(world.webhooks()) == 1


def test_a_driver_that_raises_is_logged_and_its_message_tried_again(
    world: World,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [uuid] = world.queue(draft())
    failures = iter([ZeroDivisionError("a bug")])

    def flaky(dispatch: Dispatch) -> Outcome:
        for failure in failures:
            raise failure
        return SandboxDriver(0).send(dispatch)

    world.settle(world.dispatcher(Answering(flaky)), step=timedelta(seconds=3))
    assert world.tries(uuid) == [("sms", 1, "error", None), ("sms", 2, "accepted", "00")]
    assert world.message(uuid).status == "delivered"
    [record] = [r for r in caplog.records if r.name == "mplus.dispatch"]
    assert record.levelname == "ERROR" and record.exc_info is not None


def test_an_accepted_send_without_a_receipt_delay_is_final_at_once(
    world: World,
) -> None:
    [uuid] = world.queue(draft(callback=CALLBACK))
    assert world.dispatcher(SandboxDriver(0)).run_once() == 1
    row = world.message(uuid)
    assert (row.status, row.receipt_code, row.finished_at) == ("delivered", "00", NOW)
    assert len(world.webhooks()) == 1


def test_one_claim_takes_at_most_claim_batch_messages_the_longest_due_first(
    world: World,
) -> None:
    late = world.queue(draft("447700900003"))
    world.clock.now = NOW - timedelta(minutes=1)
    early = world.queue(draft("447700900004"), draft("447700900005"))
    world.clock.now = NOW
    driver = Recording()
    assert world.dispatcher(driver, claim_batch=2).run_once() == 2
    assert {d.message_uuid for d in driver.sent} == set(early)
    assert world.message(late[0]).status == "queued"


def test_a_claim_whose_lease_ran_out_before_its_turn_is_not_sent(
    world: World,
) -> None:
    uuids = world.queue(draft("447700900003"), draft("447700900004"))
    driver = Recording()

    def slow(dispatch: Dispatch) -> Outcome:
        world.clock.advance(LEASE)  # the whole lease, on the first of the two
        return driver.send(dispatch)

    assert world.dispatcher(Answering(slow)).run_once() == 2
    [first] = driver.sent
    [second] = set(uuids) - {first.message_uuid}
    assert world.message(first.message_uuid).status == "sent"
    assert world.message(second).status == "sending"  # until its lease runs out
    world.settle(world.dispatcher(driver), step=timedelta(seconds=1))
    assert [m.message_uuid for m in driver.sent] == [first.message_uuid, second]


def test_a_database_out_of_reach_leaves_the_dispatcher_idle_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_database_engine("postgresql://mplus@127.0.0.1:1/mplus", pool_size=1)
    dispatcher = Dispatcher(lambda: UnitOfWork(engine), Recording(), SETTINGS, owner="test")
    try:
        assert dispatcher.run_once() == 0  # the runner waits its poll interval, then asks again
    finally:
        engine.dispose()
    [record] = [r for r in caplog.records if r.name == "mplus.dispatch"]
    assert record.levelname == "WARNING" and "no messages could be claimed" in record.message


def test_two_dispatchers_never_send_one_message_twice_and_finish_them_all(
    world: World, second_engine: Engine
) -> None:
    count = 240
    uuids = world.queue(
        *(draft(f"44770{n:06d}0", callback=CALLBACK) for n in range(1000, 1000 + count))
    )
    driver = Recording(inner=SandboxDriver(0))  # no magic ending (x0): all delivered, at once

    by_dispatcher: Counter[str] = Counter()
    start = threading.Barrier(2)

    def slow_send(dispatch: Dispatch) -> Outcome:
        time.sleep(0.001)  # let the other dispatcher claim meanwhile
        with driver.lock:
            by_dispatcher[threading.current_thread().name] += 1
        return driver.send(dispatch)

    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        worker = Dispatcher(
            lambda: UnitOfWork(engine),
            Answering(slow_send),
            Delivery(claim_batch=7),
            owner=str(engine),
        )
        try:
            start.wait()
            idle = 0
            while idle < 3:
                idle = idle + 1 if worker.run_once() == 0 else 0
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(e,)) for e in (world.engine, second_engine)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    sent = Counter(d.message_uuid for d in driver.sent)
    assert sent.most_common(1)[0][1] == 1
    assert sent.keys() == set(uuids)
    assert len(by_dispatcher) == 2 and min(by_dispatcher.values()) > 0  # both took a share
    with world.engine.connect() as connection:
        statuses = Counter(connection.execute(select(queued_messages.c.status)).scalars())
        attempts = connection.execute(select(delivery_attempts.c.message_uuid)).scalars().all()
    assert statuses == {"delivered": count}
    assert sorted(attempts) == sorted(uuids)
    assert sorted(w.message_uuid for w in world.webhooks()) == sorted(uuids)


def test_asked_to_stop_it_sends_no_more_and_hands_back_what_it_claimed(world: World) -> None:
    """A rolling restart delays nothing: claims not yet started are due again at once."""
    uuids = world.queue(*(draft(f"4477009002{i:02d}") for i in range(5)))
    driver = Recording()
    stopping = threading.Event()

    def send_then_stop(dispatch: Dispatch) -> Outcome:
        stopping.set()  # the stop arrives while the first message is with the carrier
        return driver.send(dispatch)

    first = replace(world.dispatcher(Answering(send_then_stop)), stopping=stopping.is_set)
    assert first.run_once() == 1
    assert len(driver.sent) == 1
    rows = [world.message(u) for u in uuids]
    assert sorted(r.status for r in rows) == ["queued"] * 4 + ["sent"]
    assert all(r.lease_owner is None for r in rows)
    assert all(r.due_at <= world.clock.now for r in rows if r.status == "queued")
    world.settle(world.dispatcher(driver), RECEIPT_DELAY)  # no lease to wait out
    assert sorted(d.message_uuid for d in driver.sent) == sorted(uuids)
    assert [world.message(u).status for u in uuids] == ["delivered"] * 5
