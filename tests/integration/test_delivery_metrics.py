"""The dispatcher's and the webhook sender's metrics and log lines, on a real database: what
they count through their recorders, and the backlog gauges read from the queue and outbox."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from server.config import Delivery, Limits
from server.delivery.dispatcher import Dispatcher
from server.delivery.drivers import Accepted, Dispatch, Outcome, SandboxDriver
from server.delivery.metrics import DeliveryMetrics
from server.delivery.webhooks import WebhookSender
from server.domain.delivery import DELIVERED, ReceiptCode, receipt_webhook_body
from server.domain.model import MessageDraft, SenderDraft
from server.json_logs import JsonFormatter
from server.service import accounts
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.service.clock import Environment
from server.storage.unit_of_work import UnitOfWork
from tests.support.clock import Clock
from tests.support.webhook_receiver import receiving

BODY = "metrics body 5e1d"
SETTINGS = Delivery(retry_ms=2_000, max_attempts=3, claim_batch=100, webhook_timeout_ms=2_000)
CARRIER_OWN = ReceiptCode("X9", "the carrier's own code", False)


class Sandbox:
    """The sandbox without a receipt delay, but a number ending in 99 makes the driver raise on
    its first try and answer with a carrier's own code on the next."""

    carrier = "sandbox"

    def __init__(self) -> None:
        self._sandbox = SandboxDriver(receipt_delay_s=0)

    def send(self, dispatch: Dispatch) -> Outcome:
        if dispatch.destination.endswith("99"):
            if dispatch.attempt == 1:
                raise RuntimeError("a driver bug")
            return Accepted(receipt=CARRIER_OWN)
        return self._sandbox.send(dispatch)


def queue(
    unit_of_work: Callable[[], UnitOfWork],
    key: str,
    clock: Clock,
    *drafts: MessageDraft,
) -> list[str]:
    anywhere = Limits(callback_allow_networks=("0.0.0.0/0",))
    add = AddMessages(unit_of_work, anywhere, Environment(now=clock, rng=random.Random(1)))
    return [m.message_uuid for m in add(AddMessagesCommand(key, list(drafts)))]


def draft(to: str, **fields: Any) -> MessageDraft:
    return MessageDraft(to=to, sender=SenderDraft("custom", "Acme"), body=BODY, **fields)


def dispatcher(
    unit_of_work: Callable[[], UnitOfWork], clock: Clock, metrics: DeliveryMetrics, **settings: Any
) -> Dispatcher:
    return Dispatcher(
        unit_of_work,
        Sandbox(),
        Delivery(**{**SETTINGS.__dict__, **settings}),
        Environment(now=clock, rng=random.Random(2)),
        owner="test",
        recorder=metrics,
    )


def test_sends_are_counted_by_channel_and_outcome_and_each_finished_message_once(
    unit_of_work: Callable[[], UnitOfWork],
    account: accounts.NewAccount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, metrics = Clock(), DeliveryMetrics()
    uuids = queue(
        unit_of_work,
        account.key,
        clock,
        draft("447700900001"),  # sms: accepted, delivered
        draft("447700900055"),  # sms: rejected as spam (31)
        draft("447700900051", channels=("rcs", "sms")),  # rcs unsupported, then sms delivered
        draft("447700900053"),  # sms: two carrier timeouts, then delivered
        draft("447700900099"),  # sms: the driver raises, then a carrier's own code
    )
    sending = dispatcher(unit_of_work, clock, metrics)
    with caplog.at_level(logging.INFO, logger="mplus.dispatch"):
        for _ in range(6):
            sending.run_once()
            clock.advance(timedelta(seconds=10))  # past any retry's backoff (2 s, then 4 s, ± 20 %)

    sample = metrics.registry.get_sample_value
    sends = {
        (channel, outcome): sample(
            "mplus_dispatch_sends_total", {"channel": channel, "outcome": outcome}
        )
        for channel in ("sms", "rcs")
        for outcome in ("accepted", "rejected", "unsupported", "try_later", "error")
    }
    assert {series: count for series, count in sends.items() if count} == {
        ("sms", "accepted"): 4,
        ("sms", "rejected"): 1,
        ("rcs", "unsupported"): 1,
        ("sms", "try_later"): 2,
        ("sms", "error"): 1,
    }
    assert sample("mplus_dispatch_send_duration_seconds_count", {"channel": "sms"}) == 8
    assert sample("mplus_dispatch_send_duration_seconds_count", {"channel": "rcs"}) == 1
    finished = {
        (status, code): sample("mplus_messages_finished_total", {"status": status, "code": code})
        for status in ("delivered", "failed")
        for code in ("00", "31", "other", "X9")
    }
    assert {series: count for series, count in finished.items() if count} == {
        ("delivered", "00"): 3,
        ("failed", "31"): 1,
        ("failed", "other"): 1,  # a carrier's own code: the labels stay a known set
    }

    formatter = JsonFormatter()
    lines = [
        formatter.format(r)
        for r in caplog.records
        if r.name == "mplus.dispatch" and r.getMessage().startswith("message ")
    ]
    for line in lines:
        assert BODY not in line and "4477009000" not in line, line
    logged = {entry["message_uuid"]: entry for entry in map(json.loads, lines)}
    assert len(lines) == len(logged) == 5  # one line per message, when it finished
    summary = [
        (
            logged[uuid]["message"],
            logged[uuid]["status"],
            logged[uuid]["channel"],
            logged[uuid]["code"],
            logged[uuid]["attempts"],
        )
        for uuid in uuids
    ]
    assert summary == [
        ("message delivered", "delivered", "sms", "00", 1),
        ("message failed", "failed", "sms", "31", 1),
        ("message delivered", "delivered", "sms", "00", 1),
        ("message delivered", "delivered", "sms", "00", 3),
        ("message failed", "failed", "sms", "X9", 2),
    ]
    assert {entry["batch_uuid"] for entry in logged.values()} != {None}
    assert all(entry["level"] == "INFO" for entry in logged.values())


def test_the_backlog_gauges_count_due_unclaimed_messages_and_pending_receipts(
    unit_of_work: Callable[[], UnitOfWork], account: accounts.NewAccount
) -> None:
    clock, metrics = Clock(), DeliveryMetrics()
    callback = "https://example.com/dr"
    queue(unit_of_work, account.key, clock, *[draft(f"44770090000{i}") for i in range(3)])
    queue(unit_of_work, account.key, clock, draft("447700900005", callback=callback))
    clock.advance(timedelta(seconds=90))
    sample = metrics.registry.get_sample_value

    def read() -> tuple[float | None, ...]:
        metrics.read_backlog(unit_of_work, clock())
        return (
            sample("mplus_dispatch_backlog_messages"),
            sample("mplus_dispatch_backlog_oldest_seconds"),
            sample("mplus_webhook_receipts_pending"),
            sample("mplus_webhook_backlog_oldest_seconds"),
        )

    assert read() == (4, 90, 0, 0)
    assert sample("mplus_dispatch_backlog_read_timestamp_seconds") == clock().timestamp()

    with unit_of_work() as uow:  # another dispatcher holds two of them for 30 s
        lease_until = clock() + timedelta(seconds=30)
        assert len(uow.dispatch.claim_due(clock(), lease_until, "other", 2)) == 2
        uow.commit()
    assert read() == (2, 90, 0, 0)
    with unit_of_work() as uow:
        assert uow.dispatch.backlog(clock(), cap=1).count == 1  # counting stops at the cap

    dispatcher(unit_of_work, clock, metrics).run_once()  # sends the other two: no backlog
    clock.advance(timedelta(seconds=10))
    assert read() == (0, 0, 1, 10)  # the receipt queued 10 s ago, not yet posted
    clock.advance(timedelta(seconds=25))  # the other dispatcher's lease ran out 5 s ago: due again
    assert read() == (2, 5, 1, 35)


def test_webhook_posts_are_counted_by_result_and_timed(
    unit_of_work: Callable[[], UnitOfWork], account: accounts.NewAccount
) -> None:
    clock, metrics = Clock(), DeliveryMetrics()
    with receiving() as receiver:
        urls = [receiver.url("/ok"), receiver.url("/failing"), "http://10.1.2.3/private"]
        uuids = queue(unit_of_work, account.key, clock, *[draft("447700900001")] * 3)
        with unit_of_work() as uow:
            for uuid, url in zip(uuids, urls, strict=True):
                body = receipt_webhook_body("447700900001", "b", uuid, DELIVERED)
                uow.webhooks.add(uuid, account.id, url, body, clock())
            uow.commit()
        receiver.answer("200", "500")
        loopback = Limits(callback_allow_networks=("127.0.0.0/8",))

        def sender(retry_for_s: int) -> WebhookSender:
            delivery = Delivery(**{**SETTINGS.__dict__, "webhook_retry_for_s": retry_for_s})
            environment = Environment(now=clock, rng=random.Random(3))
            return WebhookSender(unit_of_work, delivery, loopback, environment, recorder=metrics)

        assert sender(3600).run_once() == 3
        sample = metrics.registry.get_sample_value
        assert sample("mplus_webhook_posts_total", {"result": "delivered"}) == 1
        assert sample("mplus_webhook_posts_total", {"result": "retry"}) == 1
        assert sample("mplus_webhook_posts_total", {"result": "refused"}) == 1  # never posted
        assert sample("mplus_webhook_post_duration_seconds_count") == 2

        clock.advance(timedelta(seconds=3600))  # past the backoff, and past a 60 s retry period
        receiver.answer("500")
        assert sender(60).run_once() == 1
        assert sample("mplus_webhook_posts_total", {"result": "given_up"}) == 1
        assert sample("mplus_webhook_posts_total", {"result": "retry"}) == 1
        assert sample("mplus_webhook_post_duration_seconds_count") == 3
