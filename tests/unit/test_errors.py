"""The error table: each domain error becomes the documented code with google.rpc details."""

from __future__ import annotations

import base64
import logging
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.api.errors import refusal_for, status_for
from server.domain.errors import (
    IdConflict,
    InvalidRequest,
    NoSharedSenders,
    Unauthenticated,
    Violation,
)
from server.storage.errors import (
    ConflictingWrite,
    DatabaseNotAnswering,
    DeadlineExceeded,
    StorageUnavailable,
)


def decoded(status: grpc.Status) -> tuple[grpc.StatusCode, status_pb2.Status]:
    (key, value), *_ = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    return status.code, status_pb2.Status.FromString(value)


def detail(status: status_pb2.Status, kind: Any) -> object:
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


def test_thousands_of_violations_fit_the_trailer_peers_accept() -> None:
    violations = [
        Violation(f"messages[{i}].callback", "must be an absolute http or https URL", "INVALID")
        for i in range(1000)
    ]
    status = status_for(InvalidRequest(violations))
    _, decoded_status = decoded(status)
    details_bin = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details_bin, bytes)
    trailer = base64.b64encode(details_bin)
    assert len(trailer) + len(status.details.encode()) < 8192
    info = detail(decoded_status, error_details_pb2.ErrorInfo)
    bad_request = detail(decoded_status, error_details_pb2.BadRequest)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    listed = len(bad_request.field_violations)
    assert 20 <= listed < 1000
    assert dict(info.metadata) == {"violations": "1000", "listed": str(listed)}
    assert [v.field for v in bad_request.field_violations] == [v.field for v in violations[:listed]]


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (Unauthenticated("no key"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
        (IdConflict("messages[3].id", "b2693dfe"), grpc.StatusCode.ALREADY_EXISTS, "ID_REUSED"),
        (NoSharedSenders(), grpc.StatusCode.FAILED_PRECONDITION, "SHARED_SENDER_POOL_EMPTY"),
        (StorageUnavailable("db down"), grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE"),
        (DatabaseNotAnswering("not ready"), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
        (DeadlineExceeded("too late"), grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
        (ConflictingWrite("race"), grpc.StatusCode.ABORTED, "CONCURRENT_CONFLICT"),
    ],
)
def test_each_error_has_its_code_and_an_error_info(
    error: Exception, code: grpc.StatusCode, reason: str
) -> None:
    refusal = refusal_for(error)
    got, status = decoded(refusal.status)
    assert got is code
    info = detail(status, error_details_pb2.ErrorInfo)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (reason, "mplus")
    assert (refusal.code, refusal.reason) == (code.name, reason)  # what logs and metrics show


def test_an_invalid_request_and_a_bug_name_their_code_and_reason_for_the_record() -> None:
    invalid = refusal_for(InvalidRequest([Violation("messages[0].to", "is required", "REQUIRED")]))
    assert (invalid.code, invalid.reason) == ("INVALID_ARGUMENT", "INVALID_REQUEST")
    bug = refusal_for(KeyError("x"))
    assert (bug.code, bug.reason) == ("INTERNAL", "INTERNAL")


def test_a_bug_is_internal_logged_and_not_exposed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        code, status = decoded(status_for(KeyError("secret detail")))
    assert code is grpc.StatusCode.INTERNAL
    assert "secret detail" not in status.message
    assert "secret detail" in caplog.text
