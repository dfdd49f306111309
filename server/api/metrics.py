"""Prometheus metrics of one gRPC server: its own registry and the instruments its calls feed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.delivery.metrics import ReceiptMetrics
from server.metrics import SECONDS_BUCKETS, db_transaction_histogram

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    """A registry per server rather than the global one: servers in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "mplus_requests_total",
            "Calls by RPC (AddMessages, GetBatch, ...), transport (json through Envoy's "
            "transcoder, else grpc), gRPC status code and a refusal's ErrorInfo reason (a fixed "
            "set, never caller input)",
            ["rpc", "transport", "code", "reason"],
            registry=registry,
        )
        self.messages_accepted = Counter(
            "mplus_messages_accepted_total",
            "Messages answered with a result: mode stored (queued or replayed) or dry_run",
            ["mode"],
            registry=registry,
        )
        self.messages_rejected = Counter(
            "mplus_messages_rejected_total",
            "Messages of refused requests, by the message's first violation reason, else the "
            "request's reason",
            ["reason"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "mplus_request_duration_seconds",
            "Call latency inside the server, by RPC and transport",
            ["rpc", "transport"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "mplus_batch_size_messages",
            "Messages per AddMessages request that could be read",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.db_transaction_duration = db_transaction_histogram(registry)
        self.in_flight = Gauge(
            "mplus_requests_in_flight",
            "Calls being handled now",
            registry=registry,
        )
        self.receipts = ReceiptMetrics(registry)
        """A carrier gateway's receipts (CarrierService), and the messages they finish."""
