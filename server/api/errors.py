"""The one table from errors to gRPC statuses with google.rpc details (JSON through Envoy alike)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message as ProtoMessage
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain.errors import (
    Abandoned,
    BatchAlreadySent,
    BatchNotFound,
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

ERROR_DOMAIN = "mplus"
DETAILS_BUDGET_BYTES = 3000
"""Room for the listed violations: grpc-status-details-bin goes out base64-encoded (4/3) in
a trailer that peers cap at 8 KiB, next to grpc-message, which repeats the first five."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """The status a caller is sent, with its code name and ErrorInfo reason for logs and metrics."""

    status: grpc.Status
    code: str
    reason: str


def refusal_for(error: Exception) -> Refusal:
    """How `error` is answered; unexpected errors are logged, never exposed."""
    code, message, details = _classify(error)
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    info = details[0]
    assert isinstance(info, error_details_pb2.ErrorInfo), "every status leads with its ErrorInfo"
    return Refusal(rpc_status.to_status(status), code_pb2.Code.Name(code), info.reason)


def status_for(error: Exception) -> grpc.Status:
    """The status a caller sees for `error`."""
    return refusal_for(error).status


def _info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)


def _bad_request(violations: Sequence[Violation]) -> error_details_pb2.BadRequest:
    """As many violations as fit the budget, in order: details travel in a trailer, and
    clients and Envoy refuse trailers past 8 KiB (1000 bad messages would be far more)."""
    bad_request = error_details_pb2.BadRequest()
    size = 0
    for v in violations:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=v.field, description=v.description, reason=v.reason
        )
        size += violation.ByteSize() + 3
        if size > DETAILS_BUDGET_BYTES:
            break
        bad_request.field_violations.append(violation)
    return bad_request


def _classify(error: Exception) -> tuple[int, str, list[ProtoMessage]]:
    match error:
        case InvalidRequest(violations=violations):
            bad_request = _bad_request(violations)
            return (
                code_pb2.INVALID_ARGUMENT,
                str(error),
                [
                    _info(
                        "INVALID_REQUEST",
                        violations=str(len(violations)),
                        listed=str(len(bad_request.field_violations)),
                    ),
                    bad_request,
                ],
            )
        case Unauthenticated():
            return code_pb2.UNAUTHENTICATED, str(error), [_info("UNAUTHENTICATED")]
        case Abandoned():
            return code_pb2.DEADLINE_EXCEEDED, str(error), [_info("DEADLINE_EXCEEDED")]
        case IdConflict(field=field, client_id=client_id):
            return (
                code_pb2.ALREADY_EXISTS,
                str(error),
                [_info("ID_REUSED", field=field, id=client_id)],
            )
        case BatchNotFound(batch_uuid=batch_uuid):
            return (
                code_pb2.NOT_FOUND,
                str(error),
                [_info("BATCH_NOT_FOUND", batchUuid=batch_uuid)],
            )
        case BatchAlreadySent(batch_uuid=batch_uuid):
            # ABORTED, not FAILED_PRECONDITION: Envoy answers JSON clients 409 for it (400 for
            # the other), the conflict it is; the reason says a retry cannot help.
            return (
                code_pb2.ABORTED,
                str(error),
                [_info("BATCH_ALREADY_SENT", batchUuid=batch_uuid)],
            )
        case NoSharedSenders():
            return (
                code_pb2.FAILED_PRECONDITION,
                str(error),
                [
                    _info("SHARED_SENDER_POOL_EMPTY"),
                    error_details_pb2.PreconditionFailure(
                        violations=[
                            error_details_pb2.PreconditionFailure.Violation(
                                type="SHARED_SENDER_POOL",
                                subject="from.type",
                                description="the shared sender pool is empty",
                            )
                        ]
                    ),
                ],
            )
        case DeadlineExceeded():
            # As the caller's own deadline says, so that it reads the same whichever comes first.
            return (
                code_pb2.DEADLINE_EXCEEDED,
                f"{error}; the messages may not have been stored: "
                "retry with an id on each message to make the retry safe",
                [_info("DEADLINE_EXCEEDED")],
            )
        case DatabaseNotAnswering():  # a readiness probe's answer; the probe logs the outage
            return code_pb2.UNAVAILABLE, str(error), [_info("DATABASE_UNAVAILABLE")]
        case StorageUnavailable():
            log.warning("storage unavailable: %s", error)
            return (
                code_pb2.UNAVAILABLE,
                f"{error}; the messages may not have been stored: "
                "retry later, with an id on each message to make the retry safe",
                [_info("STORAGE_UNAVAILABLE")],
            )
        case ConflictingWrite():
            return (
                code_pb2.ABORTED,
                "concurrent requests kept conflicting; nothing was stored, retry",
                [_info("CONCURRENT_CONFLICT")],
            )
        case _:
            log.error("unexpected error: %s", type(error).__name__, exc_info=error)
            return (
                code_pb2.INTERNAL,
                "internal error; the messages may not have been stored: "
                "retry with an id on each message to make the retry safe",
                [_info("INTERNAL")],
            )
