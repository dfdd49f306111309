"""Channel drivers: the sandbox's magic numbers, and the HTTP driver against a local gateway."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.mark.parametrize(
    ("to", "channel", "attempt", "outcome"),
    [
        ("447700900001", "sms", 1, Accepted(DELIVERED, 2.5)),
        ("447700900001", "rcs", 1, Accepted(DELIVERED, 2.5)),
        ("447700900022", "sms", 1, Accepted(HANDSET_UNREACHABLE, 2.5)),
        ("447700900051", "rcs", 1, Unsupported("sandbox: the handset has no RCS")),
        ("447700900051", "sms", 1, Accepted(DELIVERED, 2.5)),
        ("447700900052", "rcs", 1, Unsupported("sandbox: the handset has no RCS")),
        ("447700900052", "sms", 1, Unsupported("sandbox: the handset has no SMS")),
        ("447700900053", "sms", 1, TryLater("sandbox: the carrier did not answer in time")),
        ("447700900053", "sms", 2, TryLater("sandbox: the carrier did not answer in time")),
        ("447700900053", "sms", 3, Accepted(DELIVERED, 2.5)),
        ("447700900054", "sms", 9, TryLater("sandbox: the carrier did not answer in time")),
        ("447700900055", "sms", 1, Rejected(REJECTED_AS_SPAM)),
        ("447700900056", "rcs", 1, Rejected(OPTED_OUT)),
        ("447700900520", "sms", 1, Accepted(DELIVERED, 2.5)),  # the ending, not any digits
    ],
)
def test_the_sandbox_decides_by_the_destinations_last_two_digits(
    to: str, channel: str, attempt: int, outcome: Outcome
) -> None:
    assert SandboxDriver(receipt_delay_s=2.5).send(dispatch(to, channel, attempt)) == outcome


def test_the_settings_choose_the_driver() -> None:
    assert isinstance(driver_for(Delivery()), SandboxDriver)
    http = Delivery(driver="http", http_url="http://127.0.0.1:9/send")
    assert isinstance(driver_for(http), HttpDriver)
    with pytest.raises(ValueError, match="carrier-pigeon"):
        driver_for(Delivery(driver="carrier-pigeon"))


Answer = Callable[[dict[str, Any]], tuple[int, bytes]]


class Gateway:
    """A carrier gateway on a loopback port: answers each POST as `answer` says, keeps them."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.answer: Answer = lambda _body: (200, b'{"status": "accepted"}')
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                gateway.received.append((self.path, body))
                status, answer = gateway.answer(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except ConnectionError:
                    pass  # the driver stopped waiting (the timeout test)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/carrier/send?tenant=7"

    def answers(self, status: int, body: Any) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answer = lambda _body: (status, raw)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gateway = Gateway()
    thread = threading.Thread(
        target=gateway.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield gateway
    gateway.server.shutdown()
    gateway.server.server_close()
    thread.join()


def test_the_http_driver_posts_the_documented_shape(gateway: Gateway) -> None:
    outcome = HttpDriver(gateway.url).send(dispatch(channel="rcs", attempt=2))
    assert outcome == Accepted(DELIVERED, 0.0)
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
        (200, {"status": "accepted", "code": "00"}, Accepted(DELIVERED)),
        (202, {"status": "accepted", "code": "22"}, Accepted(HANDSET_UNREACHABLE)),
        (
            200,
            {"status": "accepted", "code": "7F", "description": "Absent subscriber"},
            Accepted(ReceiptCode("7F", "Absent subscriber", False)),
        ),
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
