"""AddMessages calls built and their answers read, as the e2e and reliability suites make them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mplus.v1 import message_pb2, message_service_pb2, message_service_pb2_grpc

IN_A_DAY = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def grpc_request(*messages: message_pb2.Message) -> message_service_pb2.AddMessagesRequest:
    if not messages:
        messages = (message_pb2.Message(to="441111111111", body="Hi"),)
        getattr(messages[0], "from").CopyFrom(message_pb2.From(type="custom", value="Acme"))
    return message_service_pb2.AddMessagesRequest(
        batch=message_service_pb2.MessageBatch(messages=messages)
    )


def add_messages_status(target: str, key: str) -> grpc.StatusCode:
    """The status of one native AddMessages call to `target` with `key` as x-api-key metadata."""
    with grpc.insecure_channel(target) as channel:
        stub = message_service_pb2_grpc.MessageServiceStub(channel)
        try:
            stub.AddMessages(grpc_request(), metadata=[("x-api-key", key)], timeout=30)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def call_error(
    call: grpc.Call,
) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, list[object]]:
    status = rpc_status.from_call(call)
    assert status is not None, "no rich status details"
    details: list[object] = []
    info = error_details_pb2.ErrorInfo()
    for packed in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
        ):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
                if isinstance(detail, error_details_pb2.ErrorInfo):
                    info = detail
    return call.code(), info, details


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=30, check=False
    )
