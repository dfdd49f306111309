"""Limits through the real Envoy and server: per-key and route-wide rate limits, request size,
message count, connections and concurrent RPCs, each answered as JSON or a gRPC status.

Each test that needs other limits runs its own Envoy (`extra_gateway`) in front of the stack's
server, so the shared gateway keeps the defaults."""

from __future__ import annotations

import dataclasses
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mplus.v1 import message_service_pb2_grpc

from server.api.server import create_server
from server.config import Settings
from server.gateway import RATE_LIMITED
from server.service import accounts
from tests.support.calls import add_messages_status, grpc_request
from tests.support.stack import SQLITE_ONLY, HeldAddMessages, Stack, extra_gateway

BODY = {
    "messages": [{"from": {"type": "custom", "value": "Acme"}, "to": "441111111111", "body": "Hi"}]
}
SLOW = 0.05
"""One request per 20 s: no token comes back while a test runs."""

pytestmark = SQLITE_ONLY  # limits answer before any query runs: no database changes them


def post(settings: Settings, params: dict[str, str], **kwargs: Any) -> httpx.Response:
    url = f"http://127.0.0.1:{settings.http_port}/message"
    return httpx.post(url, params=params, json=BODY, timeout=30, **kwargs)


def assert_rate_limited(response: httpx.Response, retry_after: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"code": 8, "message": RATE_LIMITED, "details": []}
    assert response.headers["retry-after"] == retry_after
    assert response.headers["x-ratelimit-remaining"] == "0"


def new_key(stack: Stack) -> str:
    return accounts.create_account(stack.unit_of_work, f"limits-{uuid.uuid4()}").key


def test_a_key_past_its_burst_is_429_json_whether_sent_as_query_or_header(stack: Stack) -> None:
    with extra_gateway(stack, rate_limit_per_key=SLOW, rate_limit_burst=3) as limited:
        for _ in range(3):
            assert post(limited, {"key": stack.key}).status_code == 200
        assert_rate_limited(post(limited, {"key": stack.key}), retry_after="20")
        assert_rate_limited(post(limited, {}, headers={"x-api-key": stack.key}), "20")
        envoy = f"127.0.0.1:{limited.http_port}"
        assert add_messages_status(envoy, stack.key) is grpc.StatusCode.RESOURCE_EXHAUSTED
        other = new_key(stack)
        assert post(limited, {"key": other}).status_code == 200
        assert add_messages_status(envoy, other) is grpc.StatusCode.OK


def test_native_grpc_past_its_burst_is_resource_exhausted_saying_why(stack: Stack) -> None:
    with extra_gateway(stack, rate_limit_per_key=SLOW, rate_limit_burst=1) as limited:
        envoy = f"127.0.0.1:{limited.http_port}"
        assert add_messages_status(envoy, stack.key) is grpc.StatusCode.OK
        with grpc.insecure_channel(envoy) as channel:
            stub = message_service_pb2_grpc.MessageServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.AddMessages(grpc_request(), metadata=[("x-api-key", stack.key)], timeout=30)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert raised.value.details() == RATE_LIMITED


def test_a_request_naming_its_key_both_ways_costs_one_token(stack: Stack) -> None:
    with extra_gateway(stack, rate_limit_per_key=SLOW, rate_limit_burst=2) as limited:
        both = {"params": {"key": stack.key}, "headers": {"x-api-key": stack.key}}
        assert [post(limited, **both).status_code for _ in range(3)] == [200, 200, 429]


def test_a_percent_encoded_key_shares_the_keys_bucket(stack: Stack) -> None:
    with extra_gateway(stack, rate_limit_per_key=SLOW, rate_limit_burst=1) as limited:
        assert post(limited, {"key": stack.key}).status_code == 200
        encoded = "".join(f"%{ord(c):02X}" for c in stack.key)
        url = f"http://127.0.0.1:{limited.http_port}/message?key={encoded}"
        assert_rate_limited(httpx.post(url, json=BODY, timeout=30), retry_after="20")


def test_random_keys_meet_the_bucket_all_requests_share(stack: Stack) -> None:
    with extra_gateway(stack, rate_limit_per_key=100, rate_limit_global=SLOW) as limited:
        assert post(limited, {"key": "mp_random-1"}).status_code == 401  # reached the server
        assert_rate_limited(post(limited, {"key": "mp_random-2"}), retry_after="20")


def test_rate_limits_off_let_a_burst_through(stack: Stack) -> None:
    with extra_gateway(stack, rate_limit_per_key=0, rate_limit_global=0) as unlimited:
        responses = [post(unlimited, {"key": stack.key}) for _ in range(5)]
        assert [r.status_code for r in responses] == [200] * 5
        assert "x-ratelimit-limit" not in responses[-1].headers


def test_a_native_request_over_the_size_limit_is_resource_exhausted(stack: Stack) -> None:
    """The JSON twin (413 with code 8) is in test_json_gateway; both limits are one setting."""
    too_large = b"\x00" * (stack.settings.max_request_bytes + 1)
    envoy = stack.http_url.removeprefix("http://")
    for target in (stack.grpc_target, envoy):
        with grpc.insecure_channel(target) as channel:
            raw = channel.unary_unary(
                "/mplus.v1.MessageService/AddMessages",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.RpcError) as raised:
                raw(too_large, metadata=(("x-api-key", stack.key),), timeout=30)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_more_messages_than_the_limit_is_invalid_argument_natively(stack: Stack) -> None:
    """The JSON twin (400 naming `messages`) is in test_json_gateway."""
    (one,) = grpc_request().batch.messages
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = message_service_pb2_grpc.MessageServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.AddMessages(
                grpc_request(*[one] * (stack.settings.limits.max_messages + 1)),
                metadata=[("x-api-key", stack.key)],
                timeout=30,
            )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)  # type: ignore[arg-type]
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details)
    assert [v.field for v in bad_request.field_violations] == ["messages"]


def test_connections_past_the_cap_are_refused(stack: Stack) -> None:
    with extra_gateway(stack, max_connections=2) as capped:
        address = ("127.0.0.1", capped.http_port)
        held = [socket.create_connection(address, timeout=5) for _ in range(2)]
        try:
            request = b"POST /message HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
            for connection in held:  # answered, so Envoy has surely accepted (counted) both
                connection.sendall(request)
                assert connection.recv(1024).startswith(b"HTTP/1.1 ")
            with socket.create_connection(address, timeout=5) as third:
                try:
                    third.sendall(request)
                    answer = third.recv(1024)
                except ConnectionResetError:
                    answer = b""
                assert answer == b""  # closed or reset, never answered
            stats = httpx.get(
                f"http://127.0.0.1:{capped.envoy_admin_port}/stats",
                params={
                    "filter": rf"127\.0\.0\.1_{capped.http_port}\.downstream_global_cx_overflow"
                },
                timeout=5,
            ).text
            assert stats.split(": ")[-1].strip() == "1"  # refused for the cap, not by chance
            for connection in held:  # the two within the cap are served
                connection.sendall(request)
                assert connection.recv(1024).startswith(b"HTTP/1.1 ")
        finally:
            for connection in held:
                connection.close()


def test_calls_past_max_concurrent_rpcs_are_resource_exhausted_and_429_json(
    stack: Stack,
) -> None:
    held = HeldAddMessages(stack.unit_of_work, stack.settings.limits)
    one_at_a_time = dataclasses.replace(stack.settings, max_concurrent_rpcs=1, metrics_port=0)
    server = create_server(held, "127.0.0.1:0", one_at_a_time)
    server.start()
    try:
        with extra_gateway(stack, grpc_port=server.port) as gateway:
            direct = f"127.0.0.1:{server.port}"
            with ThreadPoolExecutor(1) as pool:
                busy = pool.submit(add_messages_status, direct, stack.key)
                assert held.entered.wait(timeout=10)
                assert add_messages_status(direct, stack.key) is grpc.StatusCode.RESOURCE_EXHAUSTED
                response = post(gateway, {"key": stack.key})
                held.release.set()
                assert busy.result(timeout=30) is grpc.StatusCode.OK
        assert response.status_code == 429, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == 8
    finally:
        held.release.set()
        server.stop(grace=1)
