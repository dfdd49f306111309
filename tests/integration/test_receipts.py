"""Receipts that arrive later, against a real database (SQLite file and PostgreSQL): before the
send's answer, twice, part by part, at once from two threads, and never (expiry)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, select

from server.config import Delivery, Limits
from server.delivery.dispatcher import Dispatcher
from server.delivery.drivers import Accepted, Dispatch, Outcome
from server.delivery.receipts import CarrierReceipt, ReceiptIntake
from server.domain.delivery import DELIVERED, EXPIRED, HANDSET_UNREACHABLE, ReceiptCode
from server.domain.dispatching import Matched
from server.domain.model import MessageDraft, SenderDraft
from server.service import accounts
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.service.clock import Environment
from server.storage.migrate import alembic_config, upgrade
from server.storage.tables import carrier_parts, queued_messages, webhook_deliveries
from server.storage.unit_of_work import UnitOfWork
from tests.support.clock import NOW, Clock

SETTINGS = Delivery(receipt_timeout_s=3600)
CALLBACK = "https://example.com/dr"
CARRIER = "acme-smsc"


@dataclass
class Carrier:
    """A driver whose carrier takes every message in `parts` parts, numbering them itself;
    `before_answer` runs with the ids just before the answer goes back (a receipt racing it)."""

    parts: int = 1
    before_answer: Callable[[tuple[str, ...]], None] = lambda _ids: None
    carrier: str = CARRIER
    taken: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def send(self, dispatch: Dispatch) -> Outcome:
        ids = tuple(f"{dispatch.message_uuid}/{part}" for part in range(self.parts))
        self.taken[dispatch.message_uuid] = ids
        self.before_answer(ids)
        return Accepted(ids)


@dataclass
class Setting:
    engine: Engine
    account: accounts.NewAccount
    clock: Clock = field(default_factory=Clock)

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.engine)

    @property
    def environment(self) -> Environment:
        return Environment(now=self.clock, rng=random.Random(1))

    def queue(self, count: int = 1) -> list[str]:
        drafts = [
            MessageDraft(
                to=f"4477009{n:05d}",
                sender=SenderDraft("custom", "Acme"),
                body="Hello",
                callback=CALLBACK,
            )
            for n in range(count)
        ]
        add = AddMessages(self.unit_of_work, Limits(), self.environment)
        return [m.message_uuid for m in add(AddMessagesCommand(self.account.key, drafts))]

    def send(self, carrier: Carrier) -> None:
        """Runs a dispatcher with `carrier` until nothing is due."""
        dispatcher = Dispatcher(self.unit_of_work, carrier, SETTINGS, self.environment)
        while dispatcher.run_once():
            pass

    def intake(self, unit_of_work: Callable[[], UnitOfWork] | None = None) -> ReceiptIntake:
        return ReceiptIntake(unit_of_work or self.unit_of_work, self.environment)

    def receipt(self, carrier_id: str, receipt: ReceiptCode = DELIVERED) -> Matched:
        [matched] = self.intake()(CARRIER, [CarrierReceipt(carrier_id, receipt)])
        return matched

    def status(self, message_uuid: str) -> tuple[str, str | None]:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(queued_messages).where(queued_messages.c.message_uuid == message_uuid)
            ).one()
        return row.status, row.receipt_code

    def webhooks(self) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(webhook_deliveries)))


@pytest.fixture
def setting(engine: Engine, account: accounts.NewAccount) -> Setting:
    return Setting(engine, account)


def test_a_receipt_before_the_sends_answer_is_recorded_settles_the_message_with_it(
    setting: Setting,
) -> None:
    [uuid] = setting.queue()
    early: list[Matched] = []

    def receipt_first(ids: tuple[str, ...]) -> None:
        early.append(setting.receipt(ids[0], HANDSET_UNREACHABLE))

    setting.send(Carrier(before_answer=receipt_first))
    assert early == [Matched.NOTHING]  # kept, though no part had that id yet
    assert setting.status(uuid) == ("failed", "22")
    [webhook] = setting.webhooks()
    assert webhook.message_uuid == uuid and '"code":"22"' in webhook.body


def test_the_same_receipt_twice_is_recorded_once_and_posted_once(setting: Setting) -> None:
    [uuid] = setting.queue()
    carrier = Carrier()
    setting.send(carrier)
    assert setting.status(uuid) == ("sent", None)
    [carrier_id] = carrier.taken[uuid]
    assert setting.receipt(carrier_id) == Matched.PART
    assert setting.receipt(carrier_id) == Matched.DUPLICATE
    assert setting.receipt(carrier_id, HANDSET_UNREACHABLE) == Matched.DUPLICATE  # first stands
    assert setting.status(uuid) == ("delivered", "00")
    assert len(setting.webhooks()) == 1


def test_one_failed_part_fails_a_multi_part_message_at_once(setting: Setting) -> None:
    failing, delivered = setting.queue(2)
    carrier = Carrier(parts=3)
    setting.send(carrier)
    first, second, third = carrier.taken[failing]
    assert setting.receipt(first) == Matched.PART
    assert setting.status(failing) == ("sent", None)  # two parts still out
    setting.receipt(second, HANDSET_UNREACHABLE)
    assert setting.status(failing) == ("failed", "22")
    assert setting.receipt(third) == Matched.PART  # recorded; the message stays failed
    assert setting.status(failing) == ("failed", "22")

    for number, carrier_id in enumerate(carrier.taken[delivered]):
        assert setting.status(delivered) == ("sent", None), f"delivered before part {number}"
        setting.receipt(carrier_id)
    assert setting.status(delivered) == ("delivered", "00")
    assert sorted(w.message_uuid for w in setting.webhooks()) == sorted([failing, delivered])


def test_a_message_without_its_receipts_in_time_expires_and_a_late_one_changes_nothing(
    setting: Setting,
) -> None:
    [uuid] = setting.queue()
    carrier = Carrier(parts=2)
    setting.send(carrier)
    first, second = carrier.taken[uuid]
    setting.receipt(first)
    setting.clock.now += timedelta(seconds=SETTINGS.receipt_timeout_s) - timedelta(seconds=1)
    setting.send(carrier)
    assert setting.status(uuid) == ("sent", None)
    setting.clock.now += timedelta(seconds=1)
    setting.send(carrier)
    assert setting.status(uuid) == ("failed", EXPIRED.code)
    assert setting.receipt(second) == Matched.PART
    assert setting.status(uuid) == ("failed", EXPIRED.code)
    [webhook] = setting.webhooks()
    assert '"code":"43"' in webhook.body


def test_receipts_of_one_messages_parts_at_once_finish_it_once(
    setting: Setting, second_engine: Engine
) -> None:
    uuids = setting.queue(40)
    carrier = Carrier(parts=2)
    setting.send(carrier)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def report(part: int, engine: Engine) -> None:
        intake = setting.intake(lambda: UnitOfWork(engine))
        try:
            start.wait()
            for uuid in uuids:
                intake(CARRIER, [CarrierReceipt(carrier.taken[uuid][part], DELIVERED)])
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=report, args=(part, engine))
        for part, engine in enumerate((setting.engine, second_engine))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert {setting.status(uuid) for uuid in uuids} == {("delivered", "00")}
    assert sorted(w.message_uuid for w in setting.webhooks()) == sorted(uuids)


class HeldCommit(UnitOfWork):
    """A unit of work whose commit waits for `release`, having said so on `reached`."""

    def __init__(self, engine: Engine, reached: threading.Event, release: threading.Event) -> None:
        super().__init__(engine)
        self._reached, self._release = reached, release

    def commit(self) -> None:
        self._reached.set()
        assert self._release.wait(timeout=30)
        super().commit()


def test_a_receipt_still_being_committed_when_the_answer_is_recorded_settles_it(
    setting: Setting, second_engine: Engine
) -> None:
    """The receipt's transaction holds its row (PostgreSQL) or the write lock (SQLite) while
    the dispatcher records the send's answer: the dispatcher waits, then meets the receipt."""
    [uuid] = setting.queue()
    reached, release = threading.Event(), threading.Event()
    intake = setting.intake(lambda: HeldCommit(second_engine, reached, release))
    reporting: list[threading.Thread] = []

    def receipt_in_flight(ids: tuple[str, ...]) -> None:
        receipt = [CarrierReceipt(ids[0], HANDSET_UNREACHABLE)]
        reporting.append(threading.Thread(target=intake, args=(CARRIER, receipt)))
        reporting[0].start()
        assert reached.wait(timeout=30)  # recorded, not yet committed
        threading.Timer(0.3, release.set).start()

    setting.send(Carrier(before_answer=receipt_in_flight))
    reporting[0].join(timeout=30)
    assert setting.status(uuid) == ("failed", "22")
    assert len(setting.webhooks()) == 1


def test_an_id_the_carrier_recycles_names_the_latest_part_and_not_its_old_receipt(
    setting: Setting,
) -> None:
    first, second = setting.queue(2)
    recycling = Carrier()
    recycling.send = lambda dispatch: Accepted(("recycled-7",))  # type: ignore[method-assign]
    dispatcher = Dispatcher(setting.unit_of_work, recycling, SETTINGS, setting.environment)
    assert dispatcher.run_once() == 2  # both sent under one id: the second took it over
    assert setting.receipt("recycled-7") == Matched.PART
    statuses = {setting.status(first), setting.status(second)}
    assert statuses == {("delivered", "00"), ("sent", None)}

    [later] = setting.queue(1)
    assert dispatcher.run_once() == 1  # the id again, for a third message: no receipt yet
    assert setting.status(later) == ("sent", None)
    setting.receipt("recycled-7", HANDSET_UNREACHABLE)
    assert setting.status(later) == ("failed", "22")


def test_a_receipt_for_an_id_nobody_sent_is_kept_without_a_message(setting: Setting) -> None:
    assert setting.receipt("never-sent") == Matched.NOTHING
    assert setting.receipt("never-sent") == Matched.DUPLICATE
    with setting.engine.connect() as connection:
        row = connection.execute(select(carrier_parts)).one()
    assert (row.carrier_id, row.message_uuid, row.receipt_code) == ("never-sent", None, "00")


def test_a_message_sent_before_the_upgrade_is_settled_with_its_announced_receipt(
    setting: Setting,
) -> None:
    """Before migration 0003 a sent message kept the receipt its send announced, due at
    `due_at`: after it, that receipt still settles the message then."""
    config = alembic_config()
    with setting.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    [uuid] = setting.queue()
    with setting.engine.begin() as connection:
        connection.execute(
            queued_messages.update()
            .where(queued_messages.c.message_uuid == uuid)
            .values(
                status="sent",
                channel="sms",
                attempts=1,
                receipt_code="22",
                receipt_description=HANDSET_UNREACHABLE.description,
                due_at=NOW + timedelta(seconds=1),
            )
        )
    upgrade(setting.engine)
    setting.send(Carrier())
    assert setting.status(uuid) == ("sent", None)
    setting.clock.now += timedelta(seconds=1)
    setting.send(Carrier())
    assert setting.status(uuid) == ("failed", "22")
    assert len(setting.webhooks()) == 1
