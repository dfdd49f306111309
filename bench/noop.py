"""The ceiling: AddMessages that parses and answers with fresh UUIDs, validating and storing
nothing, on create_server's settings. `python -m bench.noop` serves it on MPLUS_GRPC_PORT."""

from __future__ import annotations

import uuid

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from mplus.v1 import message_pb2, message_service_pb2

from server.api.server import bound_the_allocator, grpc_server, shorten_the_switch_interval
from server.api.servicer import SERVICE_NAME
from server.config import Settings


def add_messages(request: bytes, _context: grpc.ServicerContext) -> bytes:
    """The same response shape as mplus: each message echoed with its batch's defaults filled
    in, a batch UUID and a message UUID."""
    batch = message_service_pb2.AddMessagesRequest.FromString(request).batch
    defaults = batch.defaults
    batch_uuid = str(uuid.uuid4())
    response = message_service_pb2.AddMessagesResponse()
    for message in batch.messages:
        added: message_pb2.AddedMessage = response.messages.add(
            to=message.to,
            body=message.body,
            batch_uuid=batch_uuid,
            message_uuid=str(uuid.uuid4()),
        )
        sender = getattr(message, "from") if message.HasField("from") else getattr(defaults, "from")
        getattr(added, "from").CopyFrom(sender)
        channels = message.channels if message.HasField("channels") else defaults.channels
        added.channels.extend(value.string_value for value in channels.values)
    return response.SerializeToString()


def create_noop_server(settings: Settings) -> tuple[grpc.Server, int]:
    """On mplus's own server settings (`grpc_server`), with health so Envoy routes to it."""
    server = grpc_server(settings)
    handler = grpc.unary_unary_rpc_method_handler(
        add_messages, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"AddMessages": handler}),)
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(settings.grpc_address)
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def main() -> None:
    bound_the_allocator()  # as `mplus serve` does
    shorten_the_switch_interval()
    server, _port = create_noop_server(Settings.from_env())
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
