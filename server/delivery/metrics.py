"""Prometheus metrics of one dispatcher process: its registry, the recorders the dispatcher and
the webhook sender report to, and the backlog gauges, read from the database every few seconds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.delivery.webhooks import PostOutcome
from server.domain.delivery import AttemptOutcome, MessageStatus, known_receipt_code
from server.domain.dispatching import Matched
from server.metrics import SECONDS_BUCKETS, db_transaction_histogram
from server.storage.unit_of_work import UnitOfWork

BACKLOG_CAP = 10_000
"""The backlog gauges count this many rows at the most: reading more would make every refresh
as slow as the backlog is long, and past this many an operator knows enough."""
BACKLOG_REFRESH_S = 5.0
"""How often the backlog gauges are read from the database."""
OTHER_CODE = "other"
"""The `code` label of a receipt code this service does not list (a carrier's own): a gateway
cannot grow the registry without bound."""


class ReceiptMetrics:
    """What every process that settles messages counts (a dispatcher, and a server taking a
    gateway's receipts): the recorder of ReceiptIntake, and the `finished` half of the
    dispatcher's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages_finished = Counter(
            "mplus_messages_finished_total",
            "Messages that reached their final state (delivered or failed), by receipt code "
            f"(`{OTHER_CODE}` for a carrier's own)",
            ["status", "code"],
            registry=registry,
        )
        self.receipts = Counter(
            "mplus_carrier_receipts_total",
            "Receipts from carriers, committed, by carrier and what each met: part (a part we "
            "sent), nothing (no part has that id, yet), duplicate (that part had its receipt)",
            ["carrier", "matched"],
            registry=registry,
        )

    def received(self, carrier: str, matched: Matched) -> None:
        self.receipts.labels(carrier, matched.value).inc()

    def finished(self, status: MessageStatus, code: str) -> None:
        label = code if known_receipt_code(code) is not None else OTHER_CODE
        self.messages_finished.labels(status.value, label).inc()


class DeliveryMetrics(ReceiptMetrics):
    """A registry per dispatcher process rather than the global one, like the server's Metrics;
    it is the recorder of both `Dispatcher` and `WebhookSender`."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        super().__init__(registry)

        def counter(name: str, documentation: str, labels: list[str]) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        def seconds(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(
                name, documentation, labels, buckets=SECONDS_BUCKETS, registry=registry
            )

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=registry)

        self.sends = counter(
            "mplus_dispatch_sends_total",
            "Driver calls by channel and what the driver answered: accepted, rejected, "
            "unsupported, try_later, or error (it raised; tried again like try_later)",
            ["channel", "outcome"],
        )
        self.send_duration = seconds(
            "mplus_dispatch_send_duration_seconds",
            "Time one driver call took, by channel",
            ("channel",),
        )
        self.webhook_posts = counter(
            "mplus_webhook_posts_total",
            "Receipt webhook tries by result: delivered (2xx), retry, given_up (the last "
            "failure), refused (destination forbidden: nothing posted)",
            ["result"],
        )
        self.webhook_post_duration = seconds(
            "mplus_webhook_post_duration_seconds",
            "Time one receipt post took, from connecting to the answer (or its failure)",
        )
        self.db_transaction_duration = db_transaction_histogram(registry)
        self.backlog = gauge(
            "mplus_dispatch_backlog_messages",
            f"Messages due and held by no dispatcher (counted up to {BACKLOG_CAP})",
        )
        self.backlog_oldest = gauge(
            "mplus_dispatch_backlog_oldest_seconds",
            "How long the longest due of them has been due (0: none)",
        )
        self.webhooks_pending = gauge(
            "mplus_webhook_receipts_pending",
            "Receipts not yet delivered nor given up: due, being posted, or waiting for a "
            f"retry (counted up to {BACKLOG_CAP})",
        )
        self.webhooks_oldest = gauge(
            "mplus_webhook_backlog_oldest_seconds",
            "How long the longest due receipt has been due and not posted (0: none)",
        )
        self.backlog_read = gauge(
            "mplus_dispatch_backlog_read_timestamp_seconds",
            "When the backlog gauges were last read from the database (Unix time): an old "
            "value means the database could not be read",
        )

    def sent(self, channel: str, outcome: AttemptOutcome, seconds: float) -> None:
        self.sends.labels(channel, outcome.value).inc()
        self.send_duration.labels(channel).observe(seconds)

    def posted(self, outcome: PostOutcome, seconds: float | None) -> None:
        self.webhook_posts.labels(outcome).inc()
        if seconds is not None:
            self.webhook_post_duration.observe(seconds)

    def read_backlog(self, unit_of_work: Callable[[], UnitOfWork], now: datetime) -> int:
        """Sets the backlog gauges from one short transaction; answers 0 (a WorkLoop round
        that leaves the loop to wait BACKLOG_REFRESH_S)."""
        with unit_of_work() as uow:
            messages = uow.dispatch.backlog(now, BACKLOG_CAP)
            receipts = uow.webhooks.backlog(now, BACKLOG_CAP)
        self.backlog.set(messages.count)
        self.backlog_oldest.set(_age(messages.oldest_due_at, now))
        self.webhooks_pending.set(receipts.count)
        self.webhooks_oldest.set(_age(receipts.oldest_due_at, now))
        self.backlog_read.set(now.timestamp())
        return 0


def _age(due_at: datetime | None, now: datetime) -> float:
    return max(0.0, (now - due_at).total_seconds()) if due_at is not None else 0.0
