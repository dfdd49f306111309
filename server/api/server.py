"""Builds the gRPC server (factory, nothing at import) and runs it until SIGTERM or Ctrl-C."""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server import bootstrap
from server.api.batch_servicer import SERVICE_NAME as BATCH_SERVICE_NAME
from server.api.batch_servicer import BatchServicer
from server.api.carrier_servicer import SERVICE_NAME as CARRIER_SERVICE_NAME
from server.api.carrier_servicer import CarrierServicer
from server.api.health import DatabaseHealth
from server.api.metrics import Metrics
from server.api.observability import Telemetry
from server.api.readiness import SERVICE_NAME as READINESS_SERVICE_NAME
from server.api.readiness import ReadinessServicer
from server.api.servicer import SERVICE_NAME, MessageServicer
from server.config import Settings
from server.delivery.receipts import ReceiptIntake
from server.errors import CannotListen
from server.json_logs import FIELDS
from server.metrics import MetricsListener, serve_metrics
from server.service.add_messages import AddMessages
from server.service.batches import Batches

log = logging.getLogger(__name__)


HEALTH_SERVICES = (
    "",
    SERVICE_NAME,
    BATCH_SERVICE_NAME,
    CARRIER_SERVICE_NAME,
    READINESS_SERVICE_NAME,
)
"""The whole server and the services it runs: the same status for all."""


@dataclass
class GrpcServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    metrics_listener: MetricsListener | None
    database_health: DatabaseHealth | None = None

    def start(self) -> None:
        self.server.start()
        for service in HEALTH_SERVICES:
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.database_health is not None:
            self.database_health.start()

    def stop(self, grace: float, drain: threading.Event | float = 0.0) -> None:
        """NOT_SERVING first and keep serving while Envoy's health checks notice (`drain`
        seconds, or until the event is set), then refuse new calls and give in-flight ones
        `grace` seconds to finish and commit; metrics answer until the last call is counted."""
        self.health.enter_graceful_shutdown()
        if self.database_health is not None:
            self.database_health.stop()
        if isinstance(drain, threading.Event):
            drain.wait()
        elif drain > 0:
            time.sleep(drain)
        self.server.stop(grace).wait()
        if self.metrics_listener is not None:
            self.metrics_listener.stop()


def grpc_server(settings: Settings) -> grpc.Server:
    """An empty gRPC server with mplus's threads, concurrency bound and message limits (the
    benchmark's no-op ceiling is built on it too, so both run on the same settings)."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.so_reuseport", 0),  # a port already taken must fail, not be shared
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", settings.max_request_bytes * 2),
        ],
    )


def create_server(
    add_messages: AddMessages,
    address: str,
    settings: Settings,
    metrics: Metrics | None = None,
    database_answers: Callable[[], bool] | None = None,
    batches: Batches | None = None,
    receipts: ReceiptIntake | None = None,
) -> GrpcServer:
    """A server bound to `address` (port 0 picks a free one) with health and reflection, and
    its metrics on the gRPC host at settings.process_metrics_port (0: none). Given
    `database_answers`, health follows it every settings.db_health_interval_ms (0: never),
    and so does readiness (HealthService, `GET /readyz`): without a watcher it asks
    `database_answers` itself, and without that it is ready while it serves.
    BatchService runs `batches` and CarrierService takes the http driver's receipts with
    `receipts`, by default both on AddMessages' unit of work."""
    if metrics is None:
        metrics = Metrics()
    server = grpc_server(settings)
    telemetry = Telemetry(metrics)
    MessageServicer(add_messages, telemetry, settings.request_timeout_ms / 1000).register(server)
    BatchServicer(batches or Batches(add_messages.unit_of_work), telemetry).register(server)
    receipts = receipts or ReceiptIntake(add_messages.unit_of_work, recorder=metrics.receipts)
    CarrierServicer(receipts, settings.delivery.http_secret, telemetry).register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*HEALTH_SERVICES[1:], health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        raise CannotListen(
            f"cannot listen on {address}: the port is taken or the address is not local "
            "(MPLUS_GRPC_HOST, MPLUS_GRPC_PORT)"
        ) from None
    watcher = None
    if database_answers is not None and settings.db_health_interval_ms:
        watcher = DatabaseHealth(
            health_servicer,
            HEALTH_SERVICES,
            database_answers,
            settings.db_health_interval_ms / 1000,
        )
    ReadinessServicer(
        watcher.answers if watcher is not None else database_answers or (lambda: True)
    ).register(server)
    return GrpcServer(server, port, health_servicer, _metrics_listener(metrics, settings), watcher)


def _metrics_listener(metrics: Metrics, settings: Settings) -> MetricsListener | None:
    if not settings.process_metrics_port:
        return None
    try:
        return serve_metrics(metrics, settings.grpc_host, settings.process_metrics_port)
    except OSError as error:
        raise CannotListen(
            f"cannot serve metrics on port {settings.process_metrics_port} of "
            f"{settings.grpc_host}: {error.strerror} (MPLUS_METRICS_PORT, MPLUS_WORKER_INDEX; "
            "0 turns metrics off)"
        ) from None


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
"""glibc mallopt parameters."""


def bound_the_allocator() -> None:
    """Requests of several MiB are parsed on many threads: by default glibc raises its mmap
    threshold after the first such buffer is freed and then keeps them in per-thread arenas,
    so RSS grows with every large request. A fixed threshold returns each large buffer to the
    system when freed, and two arenas keep the rest compact. A no-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    libc.mallopt(M_ARENA_MAX, 2)


SWITCH_INTERVAL_S = 0.0005
"""How long a thread may hold the GIL while another waits for it (Python's default: 5 ms)."""


def shorten_the_switch_interval() -> None:
    """Under group commit one thread runs every request's statements in turn, and it drops the
    GIL at each one (SQLite works without it); with the default 5 ms it then waits behind the
    threads parsing and answering calls, and the whole queue waits with it. A tenth of that
    measured a quarter more 1-message requests/s at concurrency 32 (1,590 → 2,030)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully. SIGTERM drains first (for a
    replica behind Envoy); SIGINT, or a second signal, skips the drain (nothing routes here any
    more); in-flight calls get their grace period either way."""
    bound_the_allocator()
    shorten_the_switch_interval()
    parts = bootstrap.for_server(settings)
    address = settings.grpc_address
    running = create_server(
        parts.add_messages,
        address,
        settings,
        parts.metrics,
        parts.database_answers,
        receipts=parts.receipts,
    )
    stop, drained = threading.Event(), threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        if stop.is_set() or signum == signal.SIGINT:
            drained.set()
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    running.start()
    log.info(
        "gRPC server listening on %s",
        address,
        extra={FIELDS: {"grpc_port": running.port, "metrics_port": settings.process_metrics_port}},
    )
    stop.wait()
    drain_timer = threading.Timer(settings.shutdown_drain_ms / 1000, drained.set)
    drain_timer.daemon = True
    drain_timer.start()
    if not drained.is_set():
        log.info("NOT_SERVING; draining for %d ms", settings.shutdown_drain_ms)
    running.stop(grace=settings.shutdown_grace_ms / 1000, drain=drained)
    drain_timer.cancel()
    parts.dispose()
    log.info("gRPC server stopped")
