"""Posting delivery-receipt webhooks from the outbox: signed, retried with backoff, then given up.

Delivery is at least once. A receipt is leased before it is posted and its result recorded only
while the lease is still held, so two senders never both post one receipt because they raced
for it; but a sender killed (or stalled past its lease) after the receiver answered and before
the result was recorded leaves the receipt due again, and it is posted a second time. Receivers
should treat `messageuuid` as an idempotency key."""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from http.client import HTTPConnection, HTTPException
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

from server.config import Delivery, Limits
from server.delivery.callback_guard import CallbackRefused, guarded_connection
from server.domain.callbacks import allowed_networks
from server.domain.signing import sign
from server.json_logs import FIELDS
from server.service.clock import Environment
from server.storage.unit_of_work import UnitOfWork
from server.storage.webhooks import DueReceipt

log = logging.getLogger("mplus.webhooks")

USER_AGENT = "mplus-webhooks/1"
WORKERS = 8
"""Posts at once: a slow or hanging receiver holds one of them, not the others."""
BATCH = 32
"""Receipts one run_once claims: four rounds of WORKERS at the most."""
LEASE_MARGIN = timedelta(seconds=60)
"""Lease time beyond the posts' own bound: DNS lookups (the system resolver's timeouts) and
recording the results."""
ERROR_EXCERPT_CHARS = 200
"""How much of a refusing receiver's answer `last_error` keeps, to help whoever reads it."""


PostOutcome = Literal["delivered", "retry", "given_up", "refused"]
"""What came of one try: a 2xx; a failure to try again later; the last failure; or a
destination the SSRF rule forbids (nothing posted, given up at once)."""


class WebhookRecorder(Protocol):
    """Hears what the sender did, to count it (metrics); the rules never depend on it."""

    def posted(self, outcome: PostOutcome, seconds: float | None) -> None:
        """One try came to `outcome`, recorded under the lease; `seconds` from connect to
        the answer (None: refused, nothing was posted)."""
        ...


class Unrecorded:
    """The recorder by default: hears nothing."""

    def posted(self, outcome: PostOutcome, seconds: float | None) -> None:
        pass


@dataclass(frozen=True)
class PostResult:
    """What one post came to: an HTTP status, or an error that stopped it before one."""

    status: int | None
    error: str | None = None
    """Short: `HTTP 500`, an exception's class, `timeout after 5000 ms`, or why it was refused."""
    excerpt: str = ""
    """The start of a non-2xx answer's body, printable characters only."""
    refused: bool = False
    """The destination is forbidden (SSRF rule): nothing was sent."""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def backoff(attempts: int, delivery: Delivery, rng: random.Random) -> timedelta:
    """The wait after the `attempts`-th failed post: `webhook_backoff_ms * 2**(attempts-1)`,
    capped at `webhook_backoff_cap_ms`, with equal jitter: half of it fixed, the other half
    random, so waits still grow while senders that failed together spread apart."""
    exponent = min(max(attempts - 1, 0), 62)
    ceiling = min(delivery.webhook_backoff_ms * 2**exponent, delivery.webhook_backoff_cap_ms)
    return timedelta(milliseconds=ceiling / 2 + rng.uniform(0, ceiling / 2))


class WebhookSender:
    """Posts due delivery receipts. The runner calls `run_once` in a loop and sleeps
    `poll_interval_ms` when it returns 0; it may stop between two calls."""

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        delivery: Delivery,
        limits: Limits,
        environment: Environment = Environment(),  # noqa: B008 - frozen, shared safely
        owner: str | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        recorder: WebhookRecorder | None = None,
    ) -> None:
        """`owner` names this sender's leases (a fresh uuid by default); `tls` verifies https
        receivers (the system's CAs by default); `recorder` hears each try's outcome."""
        self._unit_of_work = unit_of_work
        self._recorder = recorder or Unrecorded()
        self._delivery = delivery
        self._allowed = allowed_networks(limits.callback_allow_networks)
        self._environment = environment
        self.owner = owner or environment.new_uuid()
        self._tls = tls or ssl.create_default_context()
        self._timeout_s = delivery.webhook_timeout_ms / 1000
        rounds = math.ceil(BATCH / WORKERS)
        self._lease = timedelta(milliseconds=rounds * delivery.webhook_timeout_ms) + LEASE_MARGIN

    def run_once(self) -> int:
        """Claims up to BATCH due receipts, posts them WORKERS at a time and records each
        result as it comes; returns how many it handled (0: nothing was due). A database error
        recording a result is raised once every post has finished; the receipt is then posted
        again when its lease runs out."""
        now = self._environment.now()
        with self._unit_of_work() as uow:
            due = uow.webhooks.claim(self.owner, now, now + self._lease, BATCH)
            uow.commit()
        if due:
            with ThreadPoolExecutor(WORKERS, thread_name_prefix="mplus-webhook") as pool:
                for _ in pool.map(self._deliver, due):
                    pass
        return len(due)

    def _deliver(self, receipt: DueReceipt) -> None:
        """Posts one claimed receipt and records what came of it, under this sender's lease."""
        started = time.perf_counter()
        result = self._post(receipt)
        seconds = None if result.refused else time.perf_counter() - started
        now = self._environment.now()
        uuid, owner, error = receipt.message_uuid, self.owner, _last_error(result)
        attempt = receipt.attempts + (0 if result.refused else 1)
        give_up_at = receipt.created_at + timedelta(seconds=self._delivery.webhook_retry_for_s)
        fields: dict[str, object] = {
            "message_uuid": uuid,
            "batch_uuid": receipt.batch_uuid,
            "attempt": attempt,
            "status_code": result.status,
            "error": result.error,
        }
        outcome: PostOutcome
        with self._unit_of_work() as uow:
            if result.delivered:
                outcome, recorded = "delivered", uow.webhooks.delivered(uuid, owner, now)
            elif result.refused or now >= give_up_at:
                posted = not result.refused
                outcome = "given_up" if posted else "refused"
                recorded = uow.webhooks.given_up(uuid, owner, error, now, posted=posted)
            else:
                wait = backoff(attempt, self._delivery, self._environment.rng)
                due_at = min(now + wait, give_up_at)  # the last try is at the deadline
                outcome, recorded = "retry", uow.webhooks.retry_at(uuid, owner, error, due_at)
                fields["retry_at"] = due_at.isoformat()
            uow.commit()
        fields["outcome"] = "given_up" if outcome == "refused" else outcome
        if not recorded:
            log.warning("webhook result not recorded: lease lost", extra={FIELDS: fields})
            return
        self._recorder.posted(outcome, seconds)
        if outcome in ("given_up", "refused"):
            log.warning("webhook given up", extra={FIELDS: fields})
        else:
            log.info(f"webhook {outcome}", extra={FIELDS: fields})

    def _post(self, receipt: DueReceipt) -> PostResult:
        """One signed POST of the stored body, bounded by `webhook_timeout_ms` from connect to
        the answer's last byte read. Redirects are not followed: a 3xx is a failure, since the
        receipt belongs at the URL the sender gave, and a Location could aim the signed post at
        an address the SSRF rule never checked."""
        url = urlsplit(receipt.url)
        body = receipt.body.encode("utf-8")
        timestamp = int(self._environment.now().timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "timestamp": str(timestamp),
            "signature": sign(receipt.secret, timestamp, body),
            "environment": self._delivery.environment,
        }
        if url.username is not None:
            credentials = f"{unquote(url.username)}:{unquote(url.password or '')}"
            headers["authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        try:
            connection = guarded_connection(url, self._allowed, self._timeout_s, self._tls)
        except CallbackRefused as refused:
            return PostResult(None, f"refused: {refused}", refused=True)
        except OSError as error:
            return PostResult(None, str(error))
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        expired = threading.Event()
        watchdog = threading.Timer(self._timeout_s, _abort, (connection, expired))
        watchdog.start()
        try:
            connection.request("POST", target, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read(ERROR_EXCERPT_CHARS * 4)
        except (OSError, HTTPException, ValueError) as error:
            if expired.is_set() or isinstance(error, TimeoutError):
                return PostResult(None, f"timeout after {self._delivery.webhook_timeout_ms} ms")
            return PostResult(None, type(error).__name__)
        finally:
            watchdog.cancel()
            connection.close()
        if 200 <= response.status < 300:
            return PostResult(response.status)
        refusal = f"HTTP {response.status}"
        if 300 <= response.status < 400:
            refusal += " (redirects are not followed)"
        return PostResult(response.status, refusal, _printable(answer))


def _abort(connection: HTTPConnection, expired: threading.Event) -> None:
    """The post's time is up: shut its socket, so a receiver that trickles bytes cannot keep
    it waiting past the bound that each socket operation alone would allow."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else " " for c in text)[:ERROR_EXCERPT_CHARS].strip()


def _last_error(result: PostResult) -> str:
    return f"{result.error}: {result.excerpt}" if result.excerpt else result.error or "unknown"
