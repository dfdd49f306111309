"""Prometheus metrics of one server: its own registry, the instruments, the /metrics listener."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def db_transaction_histogram(registry: CollectorRegistry) -> Histogram:
    """Every process that writes to the database has it: `UnitOfWork`'s `on_finish`."""
    return Histogram(
        "mplus_db_transaction_duration_seconds",
        "Time from taking a database connection to commit or rollback, per transaction",
        buckets=SECONDS_BUCKETS,
        registry=registry,
    )


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


class Registered(Protocol):
    """Instruments kept in a registry of their own: a server's Metrics, a dispatcher's."""

    @property
    def registry(self) -> CollectorRegistry: ...


@dataclass
class MetricsListener:
    """The HTTP server answering Prometheus scrapes, on a thread of its own."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve_metrics(metrics: Registered, host: str, port: int) -> MetricsListener:
    """Serves `metrics` on host:port (port 0 picks a free one); OSError when it cannot bind."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsListener(server, thread)
