"""MessageService over gRPC: translate the request, make one call, translate the result."""

from __future__ import annotations

import grpc
from mplus.v1 import message_service_pb2, message_service_pb2_grpc

from server.api import errors, translate
from server.service.add_messages import AddMessages

SERVICE_NAME: str = message_service_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name


class MessageServicer(message_service_pb2_grpc.MessageServiceServicer):
    def __init__(self, add_messages: AddMessages) -> None:
        self._add_messages = add_messages

    def AddMessages(
        self,
        request: message_service_pb2.AddMessagesRequest,
        context: grpc.ServicerContext,
    ) -> message_service_pb2.AddMessagesResponse:
        try:
            command = translate.command_from_request(request, context.invocation_metadata())
            accepted = self._add_messages(command)
        except Exception as error:
            context.abort_with_status(errors.status_for(error))
        return translate.response_from_accepted(accepted)
