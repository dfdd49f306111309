"""What every mplus process serves to Prometheus alike: the /metrics listener, the seconds
buckets and the database transaction histogram.

Outside `api/` because the dispatcher (`delivery/`) serves metrics too, and no layer below
the gRPC server may import it; each process's own instruments stay beside the code they
count (`api/metrics.py`, `delivery/metrics.py`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_http_server

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def db_transaction_histogram(registry: CollectorRegistry) -> Histogram:
    """Every process that writes to the database has it: `UnitOfWork`'s `on_finish`."""
    return Histogram(
        "mplus_db_transaction_duration_seconds",
        "Time from taking a database connection to commit or rollback, per transaction",
        buckets=SECONDS_BUCKETS,
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
