"""Requests read from their raw bytes, so that a malformed one is the caller's error."""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf.descriptor import ServiceDescriptor

from server.domain.errors import InvalidRequest, Violation

Request = TypeVar("Request", bound=protobuf_message.Message)


def parse(request_type: type[Request], data: bytes) -> Request:
    """A malformed request (bad UTF-8, broken wire format) is INVALID_ARGUMENT like any other
    bad input, not grpcio's INTERNAL with a traceback."""
    try:
        return request_type.FromString(data)
    except protobuf_message.DecodeError:
        raise InvalidRequest(
            [
                Violation(
                    "request",
                    f"is not a valid {request_type.DESCRIPTOR.full_name} (malformed protobuf or "
                    "invalid UTF-8 in a string field)",
                    "MALFORMED_REQUEST",
                )
            ]
        ) from None


def serialize(response: protobuf_message.Message) -> bytes:
    return response.SerializeToString()


def register(server: grpc.Server, service: ServiceDescriptor, servicer: Any) -> None:
    """Registers each of `service`'s methods, the servicer's method of that name, with no
    deserializer: `parse` then sees every request."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name), request_deserializer=None, response_serializer=serialize
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
