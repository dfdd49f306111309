"""The error table: each domain error becomes the documented code with google.rpc details."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from sqlalchemy.exc import OperationalError

from server.api.errors import status_for
from server.domain.errors import (
    IdConflict,
    InvalidRequest,
    NoSharedSenders,
    Unauthenticated,
    Violation,
)


def decoded(status: grpc.Status) -> tuple[grpc.StatusCode, status_pb2.Status]:
    (key, value), *_ = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    return status.code, status_pb2.Status.FromString(value)


def detail(status: status_pb2.Status, kind: type) -> object:
    (found,) = [d for d in status.details if d.Is(kind.DESCRIPTOR)]
    unpacked = kind()
    found.Unpack(unpacked)
    return unpacked


def test_invalid_request_lists_each_violation() -> None:
    error = InvalidRequest([Violation("messages[0].to", "is required", "REQUIRED")])
    code, status = decoded(status_for(error))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == "invalid request (1 violation): messages[0].to: is required"
    bad_request = detail(status, error_details_pb2.BadRequest)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [(v.field, v.description, v.reason) for v in bad_request.field_violations] == [
        ("messages[0].to", "is required", "REQUIRED")
    ]


def test_the_summary_message_stays_short_for_many_violations() -> None:
    violations = [Violation(f"messages[{i}].to", "is required", "REQUIRED") for i in range(40)]
    _, status = decoded(status_for(InvalidRequest(violations)))
    assert status.message.endswith("; and 35 more")
    bad_request = detail(status, error_details_pb2.BadRequest)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert len(bad_request.field_violations) == 40


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (Unauthenticated("no key"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
        (IdConflict("messages[3].id", "b2693dfe"), grpc.StatusCode.ALREADY_EXISTS, "ID_REUSED"),
        (NoSharedSenders(), grpc.StatusCode.FAILED_PRECONDITION, "SHARED_SENDER_POOL_EMPTY"),
        (
            OperationalError("SELECT 1", {}, Exception("connection refused")),
            grpc.StatusCode.UNAVAILABLE,
            "STORAGE_UNAVAILABLE",
        ),
    ],
)
def test_each_error_has_its_code_and_an_error_info(
    error: Exception, code: grpc.StatusCode, reason: str
) -> None:
    got, status = decoded(status_for(error))
    assert got is code
    info = detail(status, error_details_pb2.ErrorInfo)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (reason, "mplus")


def test_a_bug_is_internal_logged_and_not_exposed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        code, status = decoded(status_for(KeyError("secret detail")))
    assert code is grpc.StatusCode.INTERNAL
    assert "secret detail" not in status.message
    assert "secret detail" in caplog.text
