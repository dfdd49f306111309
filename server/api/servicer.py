"""MessageService over gRPC: translate the request, make one call, translate the result."""

from __future__ import annotations

import grpc
from mplus.v1 import message_service_pb2

from server.api import errors, translate, wire
from server.api.observability import Telemetry
from server.service.add_messages import AddMessages

SERVICE = message_service_pb2.DESCRIPTOR.services_by_name["MessageService"]
SERVICE_NAME: str = SERVICE.full_name
DRY_RUN_METADATA = (("x-mplus-dry-run", "true"),)
"""Sent with a dry run's answer only (a response header over JSON): nothing was stored, and the
body keeps the vendor's shape. Never with an error, whose status must travel trailers-only for
Envoy to turn it into JSON."""


class MessageServicer:
    def __init__(
        self, add_messages: AddMessages, telemetry: Telemetry, request_timeout_s: float
    ) -> None:
        self._add_messages = add_messages
        self._telemetry = telemetry
        self._request_timeout_s = request_timeout_s

    def AddMessages(
        self, request: bytes, context: grpc.ServicerContext
    ) -> message_service_pb2.AddMessagesResponse:
        """Takes the raw request: a malformed one (bad UTF-8, broken wire format) is then an
        INVALID_ARGUMENT like any other bad input, not grpcio's INTERNAL with a traceback."""
        metadata = context.invocation_metadata()
        with self._telemetry.request(metadata) as record:
            try:
                command = translate.command_from_request(
                    _parse(request),
                    metadata,
                    context.time_remaining(),
                    timeout=self._request_timeout_s,
                    cancelled=lambda: not context.is_active(),
                )
                record.received(command)
                accepted = self._add_messages(command, authenticated=record.authenticated)
            except Exception as error:
                refusal = errors.refusal_for(error)
                record.refused(refusal, error)
                context.abort_with_status(refusal.status)
            if command.dry_run:
                context.send_initial_metadata(DRY_RUN_METADATA)
            return translate.response_from_accepted(accepted)

    def register(self, server: grpc.Server) -> None:
        wire.register(server, SERVICE, self)


def _parse(request: bytes) -> message_service_pb2.AddMessagesRequest:
    return wire.parse(message_service_pb2.AddMessagesRequest, request)
