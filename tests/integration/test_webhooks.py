"""Delivery-receipt webhooks posted to a real local receiver, from a real SQLite or PostgreSQL."""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import ssl
import threading
import time
from base64 import b64encode
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import Engine, select

from server.config import Delivery, Limits
from server.delivery.webhooks import WebhookSender
from server.domain.delivery import DELIVERED, HANDSET_UNREACHABLE, receipt_webhook_body
from server.domain.model import MessageDraft, SenderDraft
from server.domain.signing import verify
from server.json_logs import JsonFormatter
from server.service import accounts
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.service.clock import Environment
from server.storage.tables import webhook_deliveries
from server.storage.unit_of_work import UnitOfWork
from tests.support.webhook_receiver import Receiver, receiving

LOOPBACK = Limits(callback_allow_networks=("127.0.0.0/8",))
"""What every test but the SSRF ones allows: the receiver listens on 127.0.0.1."""
ANYWHERE = Limits(callback_allow_networks=("0.0.0.0/0", "::/0"))
SETTINGS = Delivery(
    webhook_timeout_ms=1000,
    webhook_backoff_ms=1000,
    webhook_backoff_cap_ms=60_000,
    webhook_retry_for_s=3600,
    environment="test",
)
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
OWN_NAME = "the machine's own name"


class Clock:
    """The senders' time: moved by the test, never slept through."""

    def __init__(self, start: datetime = START) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def move_to(self, instant: datetime) -> None:
        self.at = max(self.at, instant)

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@dataclass
class Rig:
    """A migrated database with an account, a running receiver and the senders' clock."""

    unit_of_work: Callable[[], UnitOfWork]
    engine: Engine
    account: accounts.NewAccount
    receiver: Receiver
    clock: Clock

    def queue_many(self, url: str, count: int) -> list[str]:
        """Queues messages with a callback and, as a dispatcher would on their final state,
        their receipts; returns the message uuids."""
        add = AddMessages(self.unit_of_work, ANYWHERE, Environment(now=self.clock.now))
        drafts = [
            MessageDraft(to=f"4477009{i:05d}", sender=SenderDraft("custom", "Acme"), body="Hi")
            for i in range(count)
        ]
        command = AddMessagesCommand(self.account.key, drafts, defaults=MessageDraft(callback=url))
        accepted = add(command)
        with self.unit_of_work() as uow:
            for i, message in enumerate(accepted):
                receipt = DELIVERED if i % 2 == 0 else HANDSET_UNREACHABLE
                body = receipt_webhook_body(
                    message.to, message.batch_uuid, message.message_uuid, receipt
                )
                uow.webhooks.add(message.message_uuid, self.account.id, url, body, self.clock.at)
            uow.commit()
        return [message.message_uuid for message in accepted]

    def queue(self, url: str | None = None) -> str:
        """One receipt for `url`, by default the receiver's."""
        [uuid] = self.queue_many(url or self.receiver.url(), 1)
        return uuid

    def sender(
        self, limits: Limits = LOOPBACK, delivery: Delivery = SETTINGS, **options: Any
    ) -> WebhookSender:
        environment = Environment(now=self.clock.now, rng=random.Random(5))
        return WebhookSender(self.unit_of_work, delivery, limits, environment, **options)

    def stored(self, message_uuid: str) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(
                select(webhook_deliveries).where(webhook_deliveries.c.message_uuid == message_uuid)
            ).one()


@pytest.fixture
def rig(
    unit_of_work: Callable[[], UnitOfWork], engine: Engine, account: accounts.NewAccount
) -> Iterator[Rig]:
    with receiving() as receiver:
        yield Rig(unit_of_work, engine, account, receiver, Clock())


def test_a_pending_receipt_is_posted_once_exactly_as_stored_and_signed_with_the_secret(
    rig: Rig,
) -> None:
    uuid = rig.queue(f"http://hook:s%40cret@127.0.0.1:{rig.receiver.port}/hooks/dr?tenant=a")
    webhooks = rig.sender()

    assert webhooks.run_once() == 1
    assert webhooks.run_once() == 0

    [post] = rig.receiver.posts
    row = rig.stored(uuid)
    assert post.path == "/hooks/dr?tenant=a"
    assert post.body == row.body.encode()
    assert post.headers["content-type"] == "application/json"
    assert post.headers["user-agent"] == "mplus-webhooks/1"
    assert post.headers["environment"] == "test"
    assert post.headers["timestamp"] == str(int(START.timestamp()))
    assert post.headers["host"] == f"127.0.0.1:{rig.receiver.port}"
    assert post.headers["authorization"] == "Basic " + b64encode(b"hook:s@cret").decode()
    assert re.fullmatch(r"[0-9a-f]{64}", post.headers["signature"])
    timestamp, signature = post.headers["timestamp"], post.headers["signature"]
    assert verify(rig.account.webhook_secret, timestamp, post.body, signature)
    assert not verify("another secret", timestamp, post.body, signature)
    assert not verify(rig.account.webhook_secret, str(int(timestamp) + 1), post.body, signature)
    assert (row.status, row.attempts, row.finished_at, row.lease_owner) == (
        "delivered",
        1,
        START,
        None,
    )


def test_a_receiver_that_is_down_gets_the_receipt_once_it_is_up_after_the_backoff(rig: Rig) -> None:
    port = closed_port()
    uuid = rig.queue(f"http://127.0.0.1:{port}/dr")
    webhooks = rig.sender()

    assert webhooks.run_once() == 1
    row = rig.stored(uuid)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "ConnectionRefusedError")
    assert START + timedelta(milliseconds=500) <= row.due_at <= START + timedelta(seconds=1)
    with receiving(port) as receiver:
        assert webhooks.run_once() == 0, "not due before its backoff"
        rig.clock.move_to(row.due_at)
        assert webhooks.run_once() == 1
        rig.clock.advance(days=2)
        assert webhooks.run_once() == 0
    assert len(receiver.posts) == 1
    row = rig.stored(uuid)
    assert (row.status, row.attempts) == ("delivered", 2)
    assert row.finished_at == rig.clock.at - timedelta(days=2)


def test_refusing_answers_are_retried_with_growing_backoff_and_a_short_error(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.receiver.default = "500"
    uuid = rig.queue()
    webhooks = rig.sender()
    waits = []
    with caplog.at_level(logging.INFO, logger="mplus.webhooks"):
        for attempt in range(1, 7):
            assert webhooks.run_once() == 1
            row = rig.stored(uuid)
            waits.append((row.due_at - rig.clock.at) / timedelta(milliseconds=1))
            ceiling = min(1000 * 2 ** (attempt - 1), 60_000)
            assert ceiling / 2 <= waits[-1] <= ceiling, f"equal jitter on attempt {attempt}"
            assert row.attempts == attempt
            assert row.last_error.startswith("HTTP 500: receiver says no")
            assert len(row.last_error) <= 220, "a few hundred characters at the most"
            rig.clock.move_to(row.due_at)
    assert waits == sorted(waits)
    assert len(rig.receiver.posts) == 6
    [line] = {r.getMessage() for r in caplog.records}
    assert line == "webhook retry"
    fields = caplog.records[-1].fields  # type: ignore[attr-defined]
    assert (fields["message_uuid"], fields["status_code"], fields["attempt"]) == (uuid, 500, 6)
    assert "receiver says no" not in caplog.text, "the answer's body stays out of the logs"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("hang", "timeout after 1000 ms"),
        ("close", "RemoteDisconnected"),
        ("302", "HTTP 302 (redirects are not followed)"),
    ],
)
def test_a_timeout_a_closed_connection_and_a_redirect_are_failures(
    rig: Rig, answer: Any, error: str
) -> None:
    rig.receiver.answer(answer)
    uuid = rig.queue()
    started = time.monotonic()

    assert rig.sender().run_once() == 1

    assert time.monotonic() - started < 5
    row = rig.stored(uuid)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error.split(":")[0] == error
    assert [post.path for post in rig.receiver.posts] == ["/dr"], "a redirect is not followed"


def test_a_trickling_receiver_is_cut_off_at_the_post_timeout(rig: Rig) -> None:
    """Each byte inside the per-operation timeout, the answer as a whole far past it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok":
                if stop.wait(0.3):
                    return
                connection.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    uuid = rig.queue(f"http://127.0.0.1:{listener.getsockname()[1]}/dr")
    started = time.monotonic()
    try:
        assert rig.sender().run_once() == 1
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert time.monotonic() - started < 3
    assert rig.stored(uuid).last_error == "timeout after 1000 ms"


def test_a_receipt_refused_for_its_retry_period_is_given_up_and_never_posted_again(
    rig: Rig,
) -> None:
    rig.receiver.default = "500"
    uuid = rig.queue()
    settings = Delivery(
        webhook_backoff_ms=4000, webhook_backoff_cap_ms=4000, webhook_retry_for_s=10
    )
    webhooks = rig.sender(delivery=settings)
    deadline = START + timedelta(seconds=10)

    row = rig.stored(uuid)
    while row.status == "pending":
        assert rig.clock.at <= deadline, "retried until the deadline, the last try at it"
        rig.clock.move_to(row.due_at)
        assert webhooks.run_once() == 1
        row = rig.stored(uuid)
    posts = len(rig.receiver.posts)
    rig.clock.advance(days=3)
    assert webhooks.run_once() == 0

    row = rig.stored(uuid)
    assert (row.status, row.attempts, row.finished_at) == ("given_up", posts, deadline)
    assert row.last_error.startswith("HTTP 500")
    assert posts >= 3
    assert len(rig.receiver.posts) == posts, "never posted again"


def test_giving_up_is_a_warning_log_line(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.receiver.default = "500"
    uuid = rig.queue()
    settings = Delivery(webhook_retry_for_s=0)
    with caplog.at_level(logging.INFO, logger="mplus.webhooks"):
        assert rig.sender(delivery=settings).run_once() == 1
    [record] = caplog.records
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"]) == (
        "WARNING",
        "mplus.webhooks",
        "webhook given up",
    )
    assert (line["message_uuid"], line["attempt"], line["status_code"]) == (uuid, 1, 500)
    assert (line["outcome"], line["error"]) == ("given_up", "HTTP 500")
    body, secret = rig.stored(uuid).body, rig.account.webhook_secret
    assert body not in str(line) and secret not in str(line) and "says no" not in str(line)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", OWN_NAME])
def test_a_loopback_callback_is_given_up_at_once_and_never_connected_to_unless_allowed(
    rig: Rig, host: str
) -> None:
    if host == OWN_NAME:  # no literal the request rule can see: only DNS tells
        host = socket.gethostname()
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        if not all(ip_address(a).is_loopback for a in addresses):
            pytest.skip(f"{host} resolves to {addresses}, not to loopback alone")
    refused = rig.queue(rig.receiver.url(host=host))

    assert rig.sender(limits=Limits()).run_once() == 1

    row = rig.stored(refused)
    assert (row.status, row.attempts, row.finished_at) == ("given_up", 0, START)
    assert row.last_error.startswith("refused: ")
    assert "loopback" in row.last_error and "MPLUS_CALLBACK_ALLOW_NETWORKS" in row.last_error
    assert rig.receiver.connections == 0

    if host == "localhost":
        allowed = Limits(callback_allow_networks=("127.0.0.0/8", "::1/128"))
    else:
        allowed = LOOPBACK
    posted = rig.queue(rig.receiver.url(host=host))
    assert rig.sender(limits=allowed).run_once() == 1
    assert rig.stored(posted).status == "delivered"
    assert len(rig.receiver.posts) == 1


def test_the_post_goes_to_the_checked_address_without_a_second_lookup(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name that answers an allowed address, then a forbidden one."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, *args, **kwargs)
        lookups.append(host)
        return real("127.0.0.1" if len(lookups) == 1 else "10.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    uuid = rig.queue(rig.receiver.url(host="rebind.example"))

    assert rig.sender().run_once() == 1

    assert rig.stored(uuid).status == "delivered"
    assert lookups == ["rebind.example"]
    [post] = rig.receiver.posts
    assert post.headers["host"] == f"rebind.example:{rig.receiver.port}", (
        "the name, not the address"
    )


def test_senders_racing_over_many_receipts_never_both_post_one(rig: Rig) -> None:
    """Three senders, as three processes would; on PostgreSQL claims skip each other's rows,
    on SQLite they take turns."""
    uuids = rig.queue_many(rig.receiver.url(), 300)
    patient = Delivery(webhook_timeout_ms=20_000)  # a busy machine's slow post is no retry
    senders = [rig.sender(delivery=patient, owner=f"sender-{i}") for i in range(3)]
    errors: list[BaseException] = []

    def drain(webhooks: WebhookSender) -> None:
        try:
            while webhooks.run_once():
                pass
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=drain, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    posted = Counter(re.search(rb'"messageuuid":"([^"]+)"', p.body)[1] for p in rig.receiver.posts)  # type: ignore[index]
    assert {uuid.decode() for uuid in posted} == set(uuids)
    assert set(posted.values()) == {1}
    with rig.engine.connect() as connection:
        statuses = connection.execute(select(webhook_deliveries.c.status)).scalars()
        assert set(statuses) == {"delivered"}


def test_a_lease_that_ran_out_is_claimed_again_and_its_old_holder_records_nothing(rig: Rig) -> None:
    """A sender killed (or stalled) after its claim: the receipt waits for the lease, then
    another sender posts it, and the first one's late result is dropped."""
    uuid = rig.queue()
    with rig.unit_of_work() as uow:
        [claimed] = uow.webhooks.claim(
            "stalled", rig.clock.at, rig.clock.at + timedelta(minutes=1), 8
        )
        uow.commit()
    webhooks = rig.sender()
    assert webhooks.run_once() == 0, "leased"
    rig.clock.advance(minutes=1)

    assert webhooks.run_once() == 1

    with rig.unit_of_work() as uow:
        assert not uow.webhooks.delivered(uuid, "stalled", rig.clock.at)
        assert not uow.webhooks.retry_at(uuid, "stalled", "HTTP 500", rig.clock.at)
        assert not uow.webhooks.given_up(uuid, "stalled", "HTTP 500", rig.clock.at, posted=True)
        uow.commit()
    row = rig.stored(uuid)
    assert (claimed.message_uuid, row.status, row.attempts) == (uuid, "delivered", 1)
    assert len(rig.receiver.posts) == 1


def test_a_rotated_secret_signs_the_posts_after_it(rig: Rig) -> None:
    webhooks = rig.sender()
    rig.queue()
    webhooks.run_once()
    rotated = accounts.webhook_secret(rig.unit_of_work, rig.account.name, rotate=True)
    rig.queue()
    webhooks.run_once()

    before, after = rig.receiver.posts
    assert rotated != rig.account.webhook_secret
    for post, secret, other in [
        (before, rig.account.webhook_secret, rotated),
        (after, rotated, rig.account.webhook_secret),
    ]:
        timestamp, signature = post.headers["timestamp"], post.headers["signature"]
        assert verify(secret, timestamp, post.body, signature)
        assert not verify(other, timestamp, post.body, signature)


def test_https_receivers_are_posted_to_with_their_certificate_checked(rig: Rig) -> None:
    authority = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(served)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    with receiving(tls=served) as receiver:
        uuid = rig.queue(receiver.url(scheme="https"))
        assert rig.sender().run_once() == 1
        row = rig.stored(uuid)
        assert (row.status, row.last_error) == ("pending", "SSLCertVerificationError")
        rig.clock.move_to(row.due_at)
        assert rig.sender(tls=trusting).run_once() == 1
    assert rig.stored(uuid).status == "delivered"
    [post] = receiver.posts
    assert post.headers["host"] == f"127.0.0.1:{receiver.port}"


def test_the_readme_verification_snippet_accepts_a_signed_post(rig: Rig) -> None:
    """The README's receiver code, run as written against a real post (signed just now)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Delivery-receipt webhooks", 1)[1].split("\n## ", 1)[0]
    [snippet] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    verify_receipt = namespace["verify_receipt"]
    rig.queue()
    WebhookSender(rig.unit_of_work, SETTINGS, LOOPBACK).run_once()

    [post] = rig.receiver.posts
    assert verify_receipt(rig.account.webhook_secret, post.headers, post.body)
    assert not verify_receipt("another secret", post.headers, post.body)
    assert not verify_receipt(rig.account.webhook_secret, post.headers, post.body + b" ")
    stale = post.headers | {"timestamp": str(int(post.headers["timestamp"]) - 3600)}
    assert not verify_receipt(rig.account.webhook_secret, stale, post.body)
    for forged in ({"timestamp": "x"}, {"signature": "é"}, {"timestamp": ""}):
        assert not verify_receipt(rig.account.webhook_secret, post.headers | forged, post.body)
    assert not verify_receipt(rig.account.webhook_secret, {}, post.body)


def closed_port() -> int:
    """A port nothing listens on (for now): connecting to it is refused."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port
