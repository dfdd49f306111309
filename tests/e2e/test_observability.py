"""Logs and metrics of a real server behind Envoy: one JSON line per request, exact counters."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from mplus.v1 import message_pb2, message_service_pb2, message_service_pb2_grpc

from harness.ports import free_port
from harness.waiting import wait_for_serving
from server.json_logs import JsonFormatter
from server.processes import stop_process
from server.service import accounts
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.unit_of_work import UnitOfWork
from tests.support.metrics import Samples, labels, scrape
from tests.support.stack import Stack

BODY = "observability body 7f3a"
NUMBER = "447700123456"
REQUEST_LOGGER = "server.api.observability"


def moved(before: Samples, after: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every series of `name` that changed, by its labels (without `le`, buckets aside)."""
    return {
        series[1]: after[series] - before[series]
        for series in after
        if series[0] == name and after[series] != before[series]
    }


def add_messages(**pairs: str) -> frozenset[tuple[str, str]]:
    """The labels of an AddMessages call's series."""
    return labels(rpc="AddMessages", **pairs)


def json_message(to: str = NUMBER, body: str | None = BODY) -> dict[str, Any]:
    message: dict[str, Any] = {"from": {"type": "custom", "value": "Acme"}, "to": to}
    if body is not None:
        message["body"] = body
    return message


def grpc_message(to: str = NUMBER, body: str = BODY) -> message_pb2.Message:
    message = message_pb2.Message(to=to, body=body)
    getattr(message, "from").CopyFrom(message_pb2.From(type="custom", value="Acme"))
    return message


def add(target: str, key: str, *messages: message_pb2.Message) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        stub = message_service_pb2_grpc.MessageServiceStub(channel)
        request = message_service_pb2.AddMessagesRequest(
            batch=message_service_pb2.MessageBatch(messages=messages)
        )
        try:
            stub.AddMessages(request, metadata=[("x-api-key", key)], timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_requests_through_envoy_and_over_grpc_move_the_metrics_exactly(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    before = scrape(stack.metrics_url)
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        # JSON through Envoy: 2 stored, 1 dry run, 3 invalid (one per reason), 1 unknown key
        assert stack.post({"messages": [json_message(), json_message()]}).status_code == 200
        dry = stack.post({"messages": [json_message()]}, {"key": stack.key, "dryRun": "true"})
        assert dry.status_code == 200
        invalid = {"messages": [json_message(to="1"), json_message(body=None), json_message()]}
        assert stack.post(invalid).status_code == 400
        assert stack.post({"messages": [json_message()]}, {"key": "mp_wrong"}).status_code == 401
        # native gRPC, direct: 1 stored, 2 invalid, 2 unknown key; through Envoy: 1 stored
        direct, via_envoy = stack.grpc_target, stack.http_url.removeprefix("http://")
        assert add(direct, stack.key, grpc_message()) is grpc.StatusCode.OK
        invalid_code = add(direct, stack.key, grpc_message(to="1"), grpc_message())
        assert invalid_code is grpc.StatusCode.INVALID_ARGUMENT
        unknown_code = add(direct, "mp_wrong", grpc_message(), grpc_message())
        assert unknown_code is grpc.StatusCode.UNAUTHENTICATED
        assert add(via_envoy, stack.key, grpc_message()) is grpc.StatusCode.OK
    after = scrape(stack.metrics_url)

    assert moved(before, after, "mplus_requests_total") == {
        add_messages(transport="json", code="OK", reason=""): 2,
        add_messages(transport="json", code="INVALID_ARGUMENT", reason="INVALID_REQUEST"): 1,
        add_messages(transport="json", code="UNAUTHENTICATED", reason="UNAUTHENTICATED"): 1,
        add_messages(transport="grpc", code="OK", reason=""): 2,
        add_messages(transport="grpc", code="INVALID_ARGUMENT", reason="INVALID_REQUEST"): 1,
        add_messages(transport="grpc", code="UNAUTHENTICATED", reason="UNAUTHENTICATED"): 1,
    }
    assert moved(before, after, "mplus_messages_accepted_total") == {
        labels(mode="stored"): 4,
        labels(mode="dry_run"): 1,
    }
    assert moved(before, after, "mplus_messages_rejected_total") == {
        labels(reason="INVALID_PHONE_NUMBER"): 2,
        labels(reason="REQUIRED"): 1,
        labels(reason="INVALID_REQUEST"): 2,  # valid messages refused with their batch
        labels(reason="UNAUTHENTICATED"): 3,
    }
    assert moved(before, after, "mplus_request_duration_seconds_count") == {
        add_messages(transport="json"): 4,
        add_messages(transport="grpc"): 4,
    }
    assert moved(before, after, "mplus_batch_size_messages_count") == {labels(): 8}
    assert moved(before, after, "mplus_batch_size_messages_sum") == {labels(): 13}
    batch_le_1 = ("mplus_batch_size_messages_bucket", labels(le="1.0"))
    assert after[batch_le_1] - before[batch_le_1] == 4  # four requests of one message
    # every request with a key takes one transaction, refused ones included
    assert moved(before, after, "mplus_db_transaction_duration_seconds_count") == {labels(): 8}
    assert after[("mplus_requests_in_flight", labels())] == 0

    formatter = JsonFormatter()
    written = [formatter.format(r) for r in caplog.records if r.name == REQUEST_LOGGER]
    for line in written:
        assert stack.key not in line and BODY not in line and NUMBER not in line, line
    logged = [json.loads(line) for line in written]
    assert [(e["transport"], e["code"], e["reason"], e["messages"]) for e in logged] == [
        ("json", "OK", None, 2),
        ("json", "OK", None, 1),
        ("json", "INVALID_ARGUMENT", "INVALID_REQUEST", 3),
        ("json", "UNAUTHENTICATED", "UNAUTHENTICATED", 1),
        ("grpc", "OK", None, 1),
        ("grpc", "INVALID_ARGUMENT", "INVALID_REQUEST", 2),
        ("grpc", "UNAUTHENTICATED", "UNAUTHENTICATED", 2),
        ("grpc", "OK", None, 1),
    ]
    account = stack.account_id
    assert [e["account_id"] for e in logged] == [account] * 3 + [None] + [account] * 2 + [
        None,
        account,
    ]
    assert [e["dry_run"] for e in logged] == [False, True] + [False] * 6
    through_envoy = [bool(e["request_id"]) for e in logged]
    assert through_envoy == [True] * 4 + [False] * 3 + [True]
    assert all(e["latency_ms"] > 0 and e["rpc"] == "AddMessages" for e in logged)


def test_mplus_serve_writes_only_json_lines_and_serves_metrics(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'mplus.db'}")
    upgrade(engine)
    key = accounts.create_account(lambda: UnitOfWork(engine), "logs").key
    engine.dispose()
    grpc_port, metrics_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("MPLUS_")}
    env |= {
        "MPLUS_STATE_DIR": str(tmp_path),
        "MPLUS_GRPC_PORT": str(grpc_port),
        "MPLUS_METRICS_PORT": str(metrics_port),
    }
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve"], env=env, stderr=sink
        )
    try:
        target = f"127.0.0.1:{grpc_port}"
        wait_for_serving(target)
        assert add(target, key, grpc_message()) is grpc.StatusCode.OK
        scraped = scrape(f"http://127.0.0.1:{metrics_port}/metrics")  # counted before answering
        assert (
            scraped[("mplus_requests_total", add_messages(transport="grpc", code="OK", reason=""))]
            == 1
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        stop_process(server)

    text = stderr.read_text()
    assert key not in text and BODY not in text and NUMBER not in text
    logged = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    messages = [e["message"] for e in logged]
    assert messages[-1] == "gRPC server stopped"
    (started,) = [e for e in logged if e["message"].startswith("gRPC server listening")]
    assert (started["grpc_port"], started["metrics_port"]) == (grpc_port, metrics_port)
    (request,) = [e for e in logged if e["logger"] == REQUEST_LOGGER]
    assert (request["code"], request["messages"], request["transport"]) == ("OK", 1, "grpc")
