"""HealthService over gRPC (`GET /readyz` through Envoy): ready while the database answers."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from mplus.v1 import health_service_pb2 as pb

from server.api import errors, wire
from server.storage.errors import DatabaseNotAnswering

SERVICE = pb.DESCRIPTOR.services_by_name["HealthService"]
SERVICE_NAME: str = SERVICE.full_name
READY = pb.CheckReadinessResponse(status="ready")


class ReadinessServicer:
    """Answers from `database_answers` (the health watcher's latest verdict, no query of its
    own). Unlogged and uncounted, like grpc.health.v1.Health: probes come every few seconds
    and Envoy's access log has each one."""

    def __init__(self, database_answers: Callable[[], bool]) -> None:
        self._database_answers = database_answers

    def CheckReadiness(
        self, request: bytes, context: grpc.ServicerContext
    ) -> pb.CheckReadinessResponse:
        try:
            wire.parse(pb.CheckReadinessRequest, request)
            if not self._database_answers():
                raise DatabaseNotAnswering("not ready: the database does not answer")
        except Exception as error:
            context.abort_with_status(errors.status_for(error))
        return READY

    def register(self, server: grpc.Server) -> None:
        wire.register(server, SERVICE, self)
