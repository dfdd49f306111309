"""Protobuf presence survives translation: an omitted field is None, so defaults can fill it."""

from __future__ import annotations

import time

import pytest
from mplus.v1 import message_pb2, message_service_pb2

from server.api.http_query import original_query
from server.api.translate import api_key, command_from_request
from server.domain.errors import Unauthenticated
from server.domain.model import MessageDraft, SenderDraft


def test_omitted_fields_become_none_and_given_ones_are_kept_even_when_empty() -> None:
    message = message_pb2.Message(to="", body="hi")
    message.channels.extend(["rcs"])
    defaults = message_pb2.Defaults(callback="https://a.b/c")
    getattr(defaults, "from").type = "shared"
    request = message_service_pb2.AddMessagesRequest(
        key="k",
        dry_run=True,
        batch=message_service_pb2.MessageBatch(
            messages=[message],
            defaults=defaults,
        ),
    )
    command = command_from_request(request, [])
    assert command.messages == [MessageDraft(to="", body="hi", channels=("rcs",))]
    assert command.defaults == MessageDraft(
        sender=SenderDraft("shared", ""), callback="https://a.b/c"
    )
    assert command.dry_run is True and command.api_key == "k"


def test_no_defaults_is_none() -> None:
    command = command_from_request(message_service_pb2.AddMessagesRequest(), [])
    assert command.defaults is None and command.messages == [] and command.dry_run is False


@pytest.mark.parametrize(
    ("field", "metadata", "expected"),
    [
        ("k1", [], "k1"),
        ("", [("x-api-key", "k2")], "k2"),
        ("k1", [("x-api-key", "k1")], "k1"),
        ("", [], None),
    ],
)
def test_the_key_comes_from_the_field_or_the_header(
    field: str, metadata: list[tuple[str, str]], expected: str | None
) -> None:
    assert api_key(field, metadata) == expected


def test_a_field_and_header_naming_different_keys_are_refused() -> None:
    with pytest.raises(Unauthenticated):
        api_key("k1", [("x-api-key", "k2")])


def test_a_query_naming_two_keys_is_refused_even_though_envoy_bound_one() -> None:
    metadata = [("x-envoy-original-path", "/message?key=k1&key=k2")]
    with pytest.raises(Unauthenticated):
        api_key("k2", metadata, original_query(metadata))
    same_twice = [("x-envoy-original-path", "/message?key=k1&key=k1")]
    assert api_key("k1", same_twice, original_query(same_twice)) == "k1"


def test_a_grpc_deadline_becomes_the_commands_and_no_deadline_none() -> None:
    request = message_service_pb2.AddMessagesRequest()
    before = time.monotonic()
    deadline = command_from_request(request, [], time_remaining=2.5).deadline
    assert deadline is not None and before + 2.5 <= deadline <= time.monotonic() + 2.5
    assert command_from_request(request, []).deadline is None
    assert command_from_request(request, [], time_remaining=9.2e18).deadline is None  # grpcio's


def test_through_the_public_port_a_key_only_in_the_field_is_refused() -> None:
    """Envoy's per-key rate limit reads headers and the query, not a protobuf body."""
    public = [("x-mplus-public", "1")]
    with pytest.raises(Unauthenticated, match="x-api-key"):
        api_key("k1", public)
    assert api_key("", [*public, ("x-api-key", "k1")]) == "k1"
    assert api_key("k1", [*public, ("x-api-key", "k1")]) == "k1"
    json_call = [*public, ("x-envoy-original-path", "/message?key=k1")]
    assert api_key("k1", json_call, original_query(json_call)) == "k1"  # bound from ?key=
    assert api_key("k1", []) == "k1"  # an internal caller on the gRPC port


def test_a_call_without_a_deadline_gets_the_servers_timeout_and_a_shorter_one_its_own() -> None:
    request = message_service_pb2.AddMessagesRequest()
    before = time.monotonic()
    json_call = command_from_request(request, [], time_remaining=None, timeout=20.0).deadline
    assert json_call is not None and before + 20.0 <= json_call <= time.monotonic() + 20.0
    short = command_from_request(request, [], time_remaining=1.0, timeout=20.0).deadline
    assert short is not None and short <= time.monotonic() + 1.0
    endless = command_from_request(request, [], time_remaining=9.2e18, timeout=20.0).deadline
    assert endless is not None and endless <= time.monotonic() + 20.0
