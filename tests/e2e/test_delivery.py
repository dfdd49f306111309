"""The queue moving end to end, as a customer sees it: `mplus up` (workers, a dispatcher with
the sandbox driver, Envoy), messages posted to JSON `POST /message` with a callback, receipts
arriving at a webhook receiver the test runs, signed, and `GET /batch/{uuid}` agreeing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.ports import free_port
from harness.postgres import fresh_postgres_database
from harness.waiting import wait_until
from tests.support.operator import Cli, Up, make_cli, running_up
from tests.support.webhook_receiver import Post, receiving

FAST_DELIVERY = {
    "MPLUS_DISPATCH_INTERVAL_MS": "50",
    "MPLUS_DISPATCH_RETRY_MS": "100",
    "MPLUS_DISPATCH_MAX_ATTEMPTS": "3",
    "MPLUS_SANDBOX_RECEIPT_DELAY_MS": "300",
    "MPLUS_WEBHOOK_BACKOFF_MS": "200",
    "MPLUS_WEBHOOK_BACKOFF_CAP_MS": "400",
    "MPLUS_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8",
}
"""Everything a minute would take in production, in a second or two; loopback callbacks allowed
explicitly (they are refused by default)."""

OUTCOMES = {
    # destination → (delivered, receipt code), by the sandbox's documented magic endings
    "447700900100": (True, "00"),
    "447700900122": (False, "22"),  # handset off
    "447700900151": (True, "00"),  # RCS unsupported: falls back to SMS
    "447700900152": (False, "30"),  # no channel reaches the handset
    "447700900153": (True, "00"),  # carrier timeouts, then delivered on a retry
    "447700900154": (False, "41"),  # the carrier never answers: retries run out
    "447700900155": (False, "31"),  # rejected as spam
    "447700900156": (False, "32"),  # opted out
}


@dataclass
class Service:
    cli: Cli
    up: Up
    key: str
    secret: str

    def post(self, *messages: dict[str, Any], **defaults: Any) -> list[dict[str, Any]]:
        response = httpx.post(
            f"http://127.0.0.1:{self.cli.http_port}/message",
            params={"key": self.key},
            json={"messages": list(messages), "defaults": defaults},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        accepted: list[dict[str, Any]] = response.json()["messages"]
        return accepted

    def batch(self, batch_uuid: str, **params: str) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.cli.http_port}/batch/{batch_uuid}",
            params={"key": self.key, **params},
            timeout=10,
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    with ExitStack() as cleanup:
        database_url = None
        if request.param == "postgres":
            base_url = request.getfixturevalue("postgres_base_url")
            database_url = cleanup.enter_context(fresh_postgres_database(base_url))
        cli = make_cli(tmp_path, database_url)
        cli.env |= FAST_DELIVERY
        cli.ok("db", "upgrade")
        account = json.loads(cli.ok("accounts", "create", "customer", "--json"))
        cli.ok("senders", "add", "447700900901", "447700900902")
        up = cleanup.enter_context(running_up(cli))
        service = Service(cli, up, account["key"], account["webhook_secret"])
        wait_until(lambda: _serving(service), "mplus up to answer through Envoy", timeout=30)
        yield service
        up.process.terminate()
        up.process.wait(timeout=30)
        output = up.output()
        assert up.process.returncode == 0, output
        assert "dispatcher stopped" in output
        assert "Traceback" not in output, output


def _serving(service: Service) -> bool:
    if service.up.process.poll() is not None:
        raise AssertionError(f"mplus up exited: {service.up.output()}")
    try:
        return httpx.get(f"http://127.0.0.1:{service.cli.http_port}/dr-responses").is_success
    except httpx.HTTPError:
        return False


def verified(post: Post, secret: str) -> bool:
    """The README's rule: hex HMAC-SHA256, keyed by the account's secret, of
    `{timestamp}.{raw body}`."""
    expected = hmac.new(
        secret.encode(), f"{post.headers['timestamp']}.".encode() + post.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, post.headers["signature"])


def test_every_sandbox_outcome_reaches_the_callback_once_signed_and_the_batch_agrees(
    service: Service,
) -> None:
    with receiving() as receiver:
        accepted = service.post(
            *({"to": to, "body": f"hello {to}"} for to in OUTCOMES),
            **{"from": {"type": "shared"}, "channels": ["rcs", "sms"], "callback": receiver.url()},
        )
        wait_until(lambda: len(list(receiver.posts)) >= len(OUTCOMES), "every receipt", timeout=30)
        time.sleep(1)  # a second post of any receipt would arrive now
        posts = list(receiver.posts)
    assert len(posts) == len(OUTCOMES)
    by_message = {json.loads(p.body)["messageuuid"]: p for p in posts}
    for message in accepted:
        post = by_message[message["messageUuid"]]
        delivered, code = OUTCOMES[message["to"]]
        body = json.loads(post.body)
        assert list(body) == ["destination", "delivered", "batchuuid", "messageuuid", "receiptInfo"]
        assert body["destination"] == "+" + message["to"]
        assert body["delivered"] is delivered, (message["to"], body)
        assert body["batchuuid"] == message["batchUuid"]
        assert body["receiptInfo"]["code"] == code, (message["to"], body)
        assert body["receiptInfo"]["description"]
        assert post.headers["content-type"] == "application/json"
        assert verified(post, service.secret)
        assert not verified(post, "another secret")
        receipts = service.batch(message["batchUuid"], details="true")
        assert receipts.status_code == 200, receipts.text
        counts = receipts.json()["counts"]
        assert counts == {"total": 1, "delivered": int(delivered), "failed": int(not delivered)}
        [detail] = receipts.json()["details"]
        assert detail["info"]["code"] == code


def test_a_receipt_the_receiver_missed_arrives_once_it_is_back(service: Service) -> None:
    port = free_port()  # nothing listens yet: the first posts are refused
    [message] = service.post(
        {"to": "447700900200", "body": "hi", "callback": f"http://127.0.0.1:{port}/dlr"},
        **{"from": {"type": "custom", "value": "brand"}},
    )
    wait_until(
        lambda: service.batch(message["batchUuid"]).json()["counts"]["delivered"] == 1,
        "the message to be delivered",
        timeout=30,
    )
    time.sleep(1)  # a few refused posts
    with receiving(port) as receiver:
        wait_until(lambda: bool(receiver.posts), "the receipt to arrive", timeout=30)
        time.sleep(1.5)  # well past the backoff cap: a second post would be here
        posts = list(receiver.posts)
    assert len(posts) == 1
    assert json.loads(posts[0].body)["messageuuid"] == message["messageUuid"]
    assert verified(posts[0], service.secret)


def test_a_scheduled_batch_is_pending_until_cancelled_and_then_never_sent(
    service: Service,
) -> None:
    with receiving() as receiver:
        send_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        [message] = service.post(
            {"to": "447700900300", "body": "later", "send_at": send_at},
            **{"from": {"type": "custom", "value": "brand"}, "callback": receiver.url()},
        )
        assert message["scheduled"] is True
        pending = _pending(service)
        assert [b["identifier"] for b in pending] == [message["batchUuid"]]
        cancelled = httpx.delete(
            f"http://127.0.0.1:{service.cli.http_port}/batch/{message['batchUuid']}",
            params={"key": service.key},
        )
        assert cancelled.status_code == 200, cancelled.text
        assert _pending(service) == []
        assert service.batch(message["batchUuid"]).status_code == 404
        [immediate] = service.post(
            {"to": "447700900301", "body": "now", "callback": receiver.url()},
            **{"from": {"type": "custom", "value": "brand"}},
        )
        wait_until(lambda: bool(receiver.posts), "the immediate message's receipt", timeout=30)
        time.sleep(0.5)
        posts = list(receiver.posts)
    assert [json.loads(p.body)["messageuuid"] for p in posts] == [immediate["messageUuid"]]


def _pending(service: Service) -> list[dict[str, Any]]:
    response = httpx.get(
        f"http://127.0.0.1:{service.cli.http_port}/batch", params={"key": service.key}
    )
    assert response.status_code == 200, response.text
    batches: list[dict[str, Any]] = response.json()["batches"]
    return batches
