"""Native gRPC against a real server: statuses with details, health, reflection through grpcurl.

Calls that store or authenticate run on SQLite and PostgreSQL; the transport's own shape
(health, reflection, malformed bytes, status size) on SQLite only (`SQLITE_ONLY`)."""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mplus.v1 import message_pb2, message_service_pb2, message_service_pb2_grpc

from server.api.server import create_server
from server.errors import CannotListen
from server.service.add_messages import AddMessages
from tests.support.calls import IN_A_DAY, call_error, grpcurl
from tests.support.locks import lock_held
from tests.support.stack import LOCK_TIMEOUT_MS, POOL, POSTGRES_ONLY, SQLITE_ONLY, Stack


def message(**fields: str) -> message_pb2.Message:
    sender = message_pb2.From(type=fields.pop("type", "custom"), value=fields.pop("value", "Acme"))
    built = message_pb2.Message(to="441111111111", body="Hello")
    for name, value in fields.items():
        setattr(built, name, value)
    getattr(built, "from").CopyFrom(sender)
    return built


def request(
    *messages: message_pb2.Message, key: str = "", **options: bool
) -> message_service_pb2.AddMessagesRequest:
    return message_service_pb2.AddMessagesRequest(
        key=key, batch=message_service_pb2.MessageBatch(messages=messages), **options
    )


@pytest.fixture
def stub(channel: grpc.Channel) -> message_service_pb2_grpc.MessageServiceStub:
    return message_service_pb2_grpc.MessageServiceStub(channel)


def test_add_messages_with_the_key_in_metadata(
    stack: Stack, stub: message_service_pb2_grpc.MessageServiceStub
) -> None:
    response = stub.AddMessages(
        request(
            message(to="+44 7000 000001"),
            message(type="shared", value="", to="447000000002", send_at=IN_A_DAY),
        ),
        metadata=[("x-api-key", stack.key)],
        timeout=10,
    )
    first, second = response.messages
    assert first.to == "447000000001" and getattr(first, "from").value == "Acme"
    assert first.HasField("scheduled") and first.scheduled is False
    assert not first.HasField("send_at") and not first.HasField("id") and not first.channels
    assert getattr(second, "from").value in POOL and second.scheduled is True
    assert second.send_at == IN_A_DAY
    assert stack.stored_count(message_uuid=second.message_uuid, scheduled=True) == 1


@SQLITE_ONLY
def test_invalid_argument_carries_every_field_violation(
    stack: Stack, stub: message_service_pb2_grpc.MessageServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.AddMessages(request(message(), message(to="1", body=""), key=stack.key), timeout=10)
    code, info, details = call_error(raised.value)  # type: ignore[arg-type]
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "INVALID_REQUEST" and info.domain == "mplus"
    (bad_request,) = [d for d in details if isinstance(d, error_details_pb2.BadRequest)]
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("messages[1].to", "INVALID_PHONE_NUMBER"),
        ("messages[1].body", "REQUIRED"),
    ]


def test_unauthenticated_without_a_valid_key(
    stack: Stack, stub: message_service_pb2_grpc.MessageServiceStub
) -> None:
    for key in ("", "mp_nope"):
        with pytest.raises(grpc.RpcError) as raised:
            stub.AddMessages(request(message(), key=key), timeout=10)
        code, info, _ = call_error(raised.value)  # type: ignore[arg-type]
        assert code is grpc.StatusCode.UNAUTHENTICATED and info.reason == "UNAUTHENTICATED"


def test_a_reused_id_with_other_content_is_already_exists(
    stack: Stack, stub: message_service_pb2_grpc.MessageServiceStub
) -> None:
    client_id = str(uuid.uuid4())
    first = stub.AddMessages(request(message(id=client_id), key=stack.key), timeout=10)
    again = stub.AddMessages(request(message(id=client_id), key=stack.key), timeout=10)
    assert again == first
    with pytest.raises(grpc.RpcError) as raised:
        stub.AddMessages(request(message(id=client_id, body="changed"), key=stack.key), timeout=10)
    code, info, _ = call_error(raised.value)  # type: ignore[arg-type]
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert dict(info.metadata) == {"field": "messages[0].id", "id": client_id}


def test_dry_run_flags_store_nothing_and_say_so_in_the_initial_metadata(
    stack: Stack, stub: message_service_pb2_grpc.MessageServiceStub
) -> None:
    before = stack.stored_count()
    envoy = stack.http_url.removeprefix("http://")
    with grpc.insecure_channel(envoy) as through_envoy:
        stubs = (stub, message_service_pb2_grpc.MessageServiceStub(through_envoy))
        for target_stub, flag in itertools.product(stubs, ("is_dryrun", "dry_run")):
            response, call = target_stub.AddMessages.with_call(
                request(message(), key="", **{flag: True}),
                metadata=[("x-api-key", stack.key)],
                timeout=10,
            )
            assert len(response.messages) == 1
            assert ("x-mplus-dry-run", "true") in call.initial_metadata()
    assert stack.stored_count() == before
    _, stored = stub.AddMessages.with_call(request(message(), key=stack.key), timeout=10)
    assert "x-mplus-dry-run" not in dict(stored.initial_metadata())


@POSTGRES_ONLY
def test_the_servers_database_work_ends_with_the_callers_deadline(
    stack: Stack, stub: message_service_pb2_grpc.MessageServiceStub
) -> None:
    """Past the deadline the caller has gone: the server must not go on to store (or hold a
    connection for) an answer nobody reads. The lock is released before the server's own
    lock timeout, so only the deadline can have stopped it."""
    before = stack.stored_count()
    with lock_held(stack.engine, stack.account_id):
        with pytest.raises(grpc.RpcError) as raised:
            stub.AddMessages(request(message(), key=stack.key), timeout=0.3)
        assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(LOCK_TIMEOUT_MS / 1000 * 0.7 - 0.3)
    time.sleep(0.5)  # time enough to commit, had the server kept waiting
    assert stack.stored_count() == before


@SQLITE_ONLY
def test_health_reports_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "mplus.v1.MessageService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


@SQLITE_ONLY
def test_grpcurl_lists_and_calls_through_reflection(stack: Stack) -> None:
    listed = grpcurl("-plaintext", stack.grpc_target, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "mplus.v1.CarrierService",
        "mplus.v1.HealthService",
        "mplus.v1.MessageService",
        "mplus.v1.BatchService",
    }
    body = {
        "batch": {
            "messages": [
                {
                    "from": {"type": "custom", "value": "sender-id"},
                    "to": "441111111111",
                    "body": "by hand",
                }
            ]
        }
    }
    called = grpcurl(
        "-plaintext",
        "-H",
        f"x-api-key: {stack.key}",
        "-d",
        json.dumps(body),
        stack.grpc_target,
        "mplus.v1.MessageService/AddMessages",
    )
    assert called.returncode == 0, called.stderr
    (added,) = json.loads(called.stdout)["messages"]
    assert added["from"] == {"type": "custom", "value": "sender-id"} and added["scheduled"] is False
    assert stack.stored_count(message_uuid=added["message_uuid"]) == 1  # grpcurl prints proto names


@SQLITE_ONLY
def test_grpcurl_shows_error_details(stack: Stack) -> None:
    called = grpcurl(
        "-plaintext",
        "-d",
        json.dumps({"key": stack.key, "batch": {"messages": [{"to": "1"}]}}),
        stack.grpc_target,
        "mplus.v1.MessageService/AddMessages",
    )
    assert called.returncode != 0
    assert "InvalidArgument" in called.stderr and "messages[0].to" in called.stderr


@SQLITE_ONLY
def test_a_malformed_request_is_invalid_argument_not_internal(
    stack: Stack, channel: grpc.Channel
) -> None:
    valid = request(message(body="placeholder"), key=stack.key).SerializeToString()
    broken_utf8 = valid.replace(b"placeholder", b"bad\xff\xfeutf")
    raw = channel.unary_unary(
        "/mplus.v1.MessageService/AddMessages",
        request_serializer=None,
        response_deserializer=None,
    )
    for payload in (broken_utf8, b"\xff\xff\xff\xff"):
        with pytest.raises(grpc.RpcError) as raised:
            raw(payload, timeout=10)
        code, _info, details = call_error(raised.value)  # type: ignore[arg-type]
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        (bad_request,) = [d for d in details if isinstance(d, error_details_pb2.BadRequest)]
        assert [v.reason for v in bad_request.field_violations] == ["MALFORMED_REQUEST"]


@SQLITE_ONLY
def test_a_thousand_invalid_messages_fit_in_the_status_grpc_clients_accept(
    stack: Stack, stub: message_service_pb2_grpc.MessageServiceStub
) -> None:
    messages = [message(to=f"4411111{i:05d}", callback="my-website.com/dr") for i in range(1000)]
    with pytest.raises(grpc.RpcError) as raised:
        stub.AddMessages(request(*messages, key=stack.key), timeout=10)
    code, info, details = call_error(raised.value)  # type: ignore[arg-type]
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.metadata["violations"] == "1000"
    (bad_request,) = [d for d in details if isinstance(d, error_details_pb2.BadRequest)]
    assert len(bad_request.field_violations) == int(info.metadata["listed"]) > 0


@SQLITE_ONLY
def test_a_taken_port_is_a_clear_startup_error(stack: Stack) -> None:
    with pytest.raises(CannotListen, match=re.escape(f"cannot listen on {stack.grpc_target}:")):
        create_server(AddMessages(stack.unit_of_work), stack.grpc_target, stack.settings)
