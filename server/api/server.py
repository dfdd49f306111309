"""Builds the gRPC server (factory, nothing at import) and runs it until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.api.servicer import SERVICE_NAME, MessageServicer
from server.config import Settings
from server.service.add_messages import AddMessages
from server.storage.database import create_database_engine
from server.storage.migrate import ensure_current
from server.storage.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 10.0


class CannotListen(SystemExit):
    """The gRPC address cannot be bound: a startup error with a message, not a traceback."""


@dataclass
class GrpcServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def start(self) -> None:
        self.server.start()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """NOT_SERVING first, then refuse new calls and let in-flight ones commit."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def create_server(add_messages: AddMessages, address: str, settings: Settings) -> GrpcServer:
    """A server bound to `address` (port 0 picks a free one) with health and reflection."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.so_reuseport", 0),  # a port already taken must fail, not be shared
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", settings.max_request_bytes * 2),
        ],
    )
    MessageServicer(add_messages).register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        raise CannotListen(
            f"cannot listen on {address}: the port is taken or the address is not local "
            "(MPLUS_GRPC_HOST, MPLUS_GRPC_PORT)"
        ) from None
    return GrpcServer(server, port, health_servicer)


def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    engine = create_database_engine(
        settings.database_url, pool_size=settings.db_pool_size, timeouts=settings.db_timeouts
    )
    ensure_current(engine)
    add_messages = AddMessages(lambda: UnitOfWork(engine), limits=settings.limits)
    address = settings.grpc_address
    running = create_server(add_messages, address, settings)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    running.start()
    log.info("gRPC server listening on %s", address)
    stop.wait()
    running.stop()
    engine.dispose()
    log.info("gRPC server stopped")
