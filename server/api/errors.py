"""The one table from errors to gRPC statuses with google.rpc details (JSON through Envoy alike)."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message as ProtoMessage
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from server.domain.errors import (
    IdConflict,
    InvalidRequest,
    NoSharedSenders,
    Unauthenticated,
)

ERROR_DOMAIN = "mplus"
log = logging.getLogger(__name__)


def status_for(error: Exception) -> grpc.Status:
    """The status a caller sees for `error`; unexpected errors are logged, never exposed."""
    code, message, details = _classify(error)
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return rpc_status.to_status(status)


def _info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)


def _classify(error: Exception) -> tuple[int, str, list[ProtoMessage]]:
    match error:
        case InvalidRequest(violations=violations):
            return (
                code_pb2.INVALID_ARGUMENT,
                str(error),
                [
                    _info("INVALID_REQUEST", violations=str(len(violations))),
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(
                                field=v.field, description=v.description, reason=v.reason
                            )
                            for v in violations
                        ]
                    ),
                ],
            )
        case Unauthenticated():
            return code_pb2.UNAUTHENTICATED, str(error), [_info("UNAUTHENTICATED")]
        case IdConflict(field=field, client_id=client_id):
            return (
                code_pb2.ALREADY_EXISTS,
                str(error),
                [_info("ID_REUSED", field=field, id=client_id)],
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
        case DBAPIError() | PoolTimeout() if _is_outage(error):
            log.warning("storage unavailable: %s", type(error).__name__)
            return (
                code_pb2.UNAVAILABLE,
                "storage is unavailable, nothing was stored; retry later",
                [_info("STORAGE_UNAVAILABLE")],
            )
        case _:
            log.exception("unexpected error", exc_info=error)
            return code_pb2.INTERNAL, "internal error, nothing was stored", [_info("INTERNAL")]


def _is_outage(error: Exception) -> bool:
    """Connection loss, timeouts and locks: the database, not the request, is at fault."""
    if isinstance(error, PoolTimeout):
        return True
    assert isinstance(error, DBAPIError)
    return error.connection_invalidated or type(error).__name__ == "OperationalError"
