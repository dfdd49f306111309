"""Protobuf ↔ domain values, and where the API key comes from. No decisions here."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2
from mplus.v1 import message_pb2, message_service_pb2

from server.api import http_query
from server.domain.errors import Unauthenticated
from server.domain.model import AcceptedMessage, MessageDraft, SenderDraft
from server.service.add_messages import AddMessagesCommand

API_KEY_METADATA = "x-api-key"
PUBLIC_PORT_METADATA = "x-mplus-public"
"""Envoy sets it (overwriting any a client sent) on every call through the public port."""
MAX_GRPC_TIMEOUT_S = 99_999_999 * 3600
"""The longest deadline a grpc-timeout header can carry (8 digits of hours); grpcio reports a
call without a deadline as some 9e18 seconds remaining."""


def draft_from_proto(message: message_pb2.Message | message_pb2.Defaults) -> MessageDraft:
    """Presence is kept: a field the caller did not send becomes None, not ''."""
    given: dict[str, Any] = {field.name: value for field, value in message.ListFields()}
    sender = given.pop("from", None)
    if sender is not None:
        given["sender"] = SenderDraft(sender.type, sender.value)
    channels = given.get("channels")
    if channels is not None:
        given["channels"] = _channels(channels)
    return MessageDraft(**given)


def _channels(values: struct_pb2.ListValue) -> tuple[str, ...]:
    """Strings as they are; anything else as its JSON text, which no channel name matches."""
    return tuple(
        value.string_value
        if value.WhichOneof("kind") == "string_value"
        else json_format.MessageToJson(value, indent=None)
        for value in values.values
    )


def api_key(
    request_key: str,
    metadata: Sequence[tuple[str, str | bytes]],
    query: http_query.Query = (),
) -> str | None:
    """The `key` field (the `?key=` query parameter over JSON) or the x-api-key metadata.

    Naming two different keys (query and header, or `?key=` twice) is refused: it is
    ambiguous which account speaks, and Envoy itself would keep only the last `?key=`.
    Through Envoy's public port a native gRPC call must send x-api-key: Envoy's per-key rate
    limit reads headers and the query, never a protobuf body.
    """
    keys = {v for k, v in metadata if k == API_KEY_METADATA and isinstance(v, str) and v}
    keys.update(v for v in http_query.query_values(query, "key") if v)
    if request_key and not keys and _through_public_port(metadata):
        raise Unauthenticated(
            "through the public port send the API key as x-api-key metadata "
            "(the `key` field is for internal callers on the gRPC port)"
        )
    if request_key:
        keys.add(request_key)
    if len(keys) > 1:
        raise Unauthenticated("the request names more than one API key (query and x-api-key)")
    return next(iter(keys), None)


def _through_public_port(metadata: Sequence[tuple[str, str | bytes]]) -> bool:
    return any(k == PUBLIC_PORT_METADATA for k, _ in metadata)


def command_from_request(
    request: message_service_pb2.AddMessagesRequest,
    metadata: Sequence[tuple[str, str | bytes]],
    time_remaining: float | None = None,
    timeout: float | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> AddMessagesCommand:
    """The query string, when there is one (JSON through Envoy), is parsed once for both the
    key and its own rule. The deadline is the call's own (`time_remaining`, grpc's
    `context.time_remaining()`), at most `timeout` seconds: a JSON call has none of its own."""
    batch = request.batch
    query = http_query.original_query(metadata)
    return AddMessagesCommand(
        api_key=api_key(request.key, metadata, query),
        messages=[draft_from_proto(m) for m in batch.messages],
        defaults=draft_from_proto(batch.defaults) if batch.HasField("defaults") else None,
        dry_run=request.is_dryrun or request.dry_run,
        transport_violations=tuple(http_query.query_violations(query)),
        deadline=_deadline(time_remaining, timeout),
        cancelled=cancelled,
    )


def _deadline(time_remaining: float | None, timeout: float | None) -> float | None:
    if time_remaining is not None and time_remaining > MAX_GRPC_TIMEOUT_S:
        time_remaining = None  # grpcio's way of saying "no deadline"
    bounds = [b for b in (time_remaining, timeout) if b is not None]
    return time.monotonic() + min(bounds) if bounds else None


def _fill(added: message_pb2.AddedMessage, accepted: AcceptedMessage) -> None:
    added.to, added.body = accepted.to, accepted.body
    added.batch_uuid, added.message_uuid = accepted.batch_uuid, accepted.message_uuid
    added.scheduled = accepted.scheduled
    if accepted.callback is not None:
        added.callback = accepted.callback
    if accepted.channels is not None:
        added.channels.extend(accepted.channels)
    if accepted.id is not None:
        added.id = accepted.id
    if accepted.send_at is not None:
        added.send_at = accepted.send_at
    sender = getattr(added, "from")  # `from` is a Python keyword
    sender.type, sender.value = accepted.sender_type.value, accepted.sender


def response_from_accepted(
    accepted: Sequence[AcceptedMessage],
) -> message_service_pb2.AddMessagesResponse:
    """Each entry built in place in the response (no copy of a message built on its own)."""
    response = message_service_pb2.AddMessagesResponse()
    add = response.messages.add
    for entry in accepted:
        _fill(add(), entry)
    return response
