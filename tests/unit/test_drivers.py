"""Channel drivers: the sandbox's magic numbers, and the HTTP driver against a local gateway."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from server.config import Delivery
from server.delivery.drivers import (
    Accepted,
    Dispatch,
    HttpDriver,
    Outcome,
    Rejected,
    SandboxDriver,
    TryLater,
    Unsupported,
    driver_for,
)
from server.domain.delivery import (
    DELIVERED,
    HANDSET_UNREACHABLE,
    OPTED_OUT,
    REJECTED_AS_SPAM,
    UNDELIVERABLE,
    ReceiptCode,
)
from tests.support.carrier_gateway import Gateway, serving_gateway


def dispatch(to: str = "447700900001", channel: str = "sms", attempt: int = 1) -> Dispatch:
    return Dispatch(
        message_uuid="m-1",
        batch_uuid="b-1",
        account_id="a-1",
        destination=to,
        sender="Acme",
        body="Hello £5",
        channel=channel,
        attempt=attempt,
    )


WITH_CARRIER = Accepted(("<one id per part>",))
"""Stands for what the sandbox answers a send it accepts: one fresh id per part."""


@pytest.mark.parametrize(
    ("to", "channel", "attempt", "outcome"),
    [
        ("447700900001", "sms", 1, WITH_CARRIER),
        ("447700900001", "rcs", 1, WITH_CARRIER),
        ("447700900022", "sms", 1, WITH_CARRIER),
        ("447700900051", "rcs", 1, Unsupported("sandbox: the handset has no RCS")),
        ("447700900051", "sms", 1, WITH_CARRIER),
        ("447700900052", "rcs", 1, Unsupported("sandbox: the handset has no RCS")),
        ("447700900052", "sms", 1, Unsupported("sandbox: the handset has no SMS")),
        ("447700900053", "sms", 1, TryLater("sandbox: the carrier did not answer in time")),
        ("447700900053", "sms", 2, TryLater("sandbox: the carrier did not answer in time")),
        ("447700900053", "sms", 3, WITH_CARRIER),
        ("447700900054", "sms", 9, TryLater("sandbox: the carrier did not answer in time")),
        ("447700900055", "sms", 1, Rejected(REJECTED_AS_SPAM)),
        ("447700900056", "rcs", 1, Rejected(OPTED_OUT)),
        ("447700900520", "sms", 1, WITH_CARRIER),  # the ending, not any digits
    ],
)
def test_the_sandbox_decides_by_the_destinations_last_two_digits(
    to: str, channel: str, attempt: int, outcome: Outcome
) -> None:
    answer = SandboxDriver(receipt_delay_s=2.5).send(dispatch(to, channel, attempt))
    if outcome is WITH_CARRIER:
        assert isinstance(answer, Accepted)
        assert answer.receipt is None
        assert len(answer.carrier_ids) == 1
        assert answer.carrier_ids[0].startswith("sbx-")
    else:
        assert answer == outcome


def test_the_sandbox_gives_each_part_of_a_long_message_its_own_id() -> None:
    send = replace(dispatch(), body="x" * 161)  # two GSM-7 parts
    first, second = (SandboxDriver(1.0).send(send) for _ in range(2))
    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert len(first.carrier_ids) == len(set(first.carrier_ids)) == 2
    assert not set(first.carrier_ids) & set(second.carrier_ids)


def test_without_a_receipt_delay_the_sandbox_is_final_at_once() -> None:
    assert SandboxDriver(0).send(dispatch()) == Accepted(receipt=DELIVERED)
    assert SandboxDriver(0).send(dispatch("447700900022")) == Accepted(receipt=HANDSET_UNREACHABLE)


def test_the_settings_choose_the_driver() -> None:
    assert isinstance(driver_for(Delivery()), SandboxDriver)
    http = Delivery(driver="http", http_url="http://127.0.0.1:9/send")
    assert isinstance(driver_for(http), HttpDriver)
    with pytest.raises(ValueError, match="carrier-pigeon"):
        driver_for(Delivery(driver="carrier-pigeon"))


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with serving_gateway() as gateway:
        yield gateway


def test_the_http_driver_posts_the_documented_shape(gateway: Gateway) -> None:
    outcome = HttpDriver(gateway.url).send(dispatch(channel="rcs", attempt=2))
    assert outcome == Accepted(("m-1",))
    assert gateway.received == [
        (
            "/carrier/send?tenant=7",
            {
                "messageuuid": "m-1",
                "batchuuid": "b-1",
                "to": "447700900001",
                "from": "Acme",
                "body": "Hello £5",
                "channel": "rcs",
                "attempt": 2,
            },
        )
    ]


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    [
        (200, {"status": "accepted", "code": "00"}, Accepted(receipt=DELIVERED)),
        (202, {"status": "accepted", "code": "22"}, Accepted(receipt=HANDSET_UNREACHABLE)),
        (
            200,
            {"status": "accepted", "code": "7F", "description": "Absent subscriber"},
            Accepted(receipt=ReceiptCode("7F", "Absent subscriber", False)),
        ),
        # without a code: with the carrier, under the ids it names (or the message's uuid)
        (200, {"status": "accepted"}, Accepted(("m-1",))),
        (200, {"status": "accepted", "id": "c-9"}, Accepted(("c-9",))),
        (200, {"status": "accepted", "ids": ["c-1", "c-2"]}, Accepted(("c-1", "c-2"))),
        (200, {"status": "accepted", "id": 7}, Accepted(("7",))),
        (200, {"status": "accepted", "ids": [12, "c-2"]}, Accepted(("12", "c-2"))),
        # ids off the contract: the carrier took it all the same, known by the message's uuid
        (200, {"status": "accepted", "ids": []}, Accepted(("m-1",))),
        (200, {"status": "accepted", "ids": ["c-1", "c-1"]}, Accepted(("m-1",))),
        (200, {"status": "accepted", "ids": "c-1"}, Accepted(("m-1",))),
        (200, {"status": "accepted", "id": True}, Accepted(("m-1",))),
        (200, {"status": "accepted", "id": "x" * 65}, Accepted(("m-1",))),
        (200, {"status": "rejected", "code": "31"}, Rejected(REJECTED_AS_SPAM)),
        (200, {"status": "rejected"}, Rejected(UNDELIVERABLE)),
        (200, {"status": "rejected", "code": "00"}, Rejected(UNDELIVERABLE)),
        (200, {"status": "unsupported", "description": "no RCS"}, Unsupported("no RCS")),
        (503, {"status": "accepted"}, TryLater("carrier gateway answered 503")),
        (500, b"oops", TryLater("carrier gateway answered 500")),
        (400, {"status": "accepted"}, Rejected(UNDELIVERABLE)),
        (302, b"", Rejected(UNDELIVERABLE)),
        (200, b"<html>not json</html>", Rejected(UNDELIVERABLE)),
        (200, [1, 2], Rejected(UNDELIVERABLE)),
        (200, {"status": "queued"}, Rejected(UNDELIVERABLE)),
        (200, {"status": "accepted", "code": 0}, Rejected(UNDELIVERABLE)),
        (200, {"status": "accepted", "code": "123456789"}, Rejected(UNDELIVERABLE)),
        (200, b"{'status': 'accepted'}", Rejected(UNDELIVERABLE)),
    ],
)
def test_the_http_drivers_answers_map_to_outcomes(
    gateway: Gateway, status: int, answer: Any, outcome: Outcome
) -> None:
    gateway.answers(status, answer)
    assert HttpDriver(gateway.url).send(dispatch()) == outcome


def test_a_gateway_that_does_not_answer_in_time_is_tried_later(gateway: Gateway) -> None:
    def slow(_body: dict[str, Any]) -> tuple[int, bytes]:
        time.sleep(1.0)
        return 200, b'{"status": "accepted"}'

    gateway.answer = slow
    started = time.monotonic()
    outcome = HttpDriver(gateway.url, timeout_s=0.2).send(dispatch())
    assert isinstance(outcome, TryLater)
    assert "timed out" in outcome.reason
    assert time.monotonic() - started < 0.9


def test_a_gateway_that_is_not_there_is_tried_later() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    outcome = HttpDriver(f"http://127.0.0.1:{port}/send", timeout_s=1.0).send(dispatch())
    assert isinstance(outcome, TryLater)
    assert "ConnectionRefusedError" in outcome.reason


def test_the_http_driver_needs_an_http_url() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        HttpDriver("ftp://carrier.example/send")
