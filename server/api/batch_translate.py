"""BatchService protobuf ↔ the batch use cases' values, in the vendor's shapes. No decisions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from google.api import httpbody_pb2
from google.protobuf import struct_pb2
from mplus.v1 import batch_service_pb2

from server.api import http_query, translate
from server.domain.batches import BatchReport, PendingBatch, Receipt
from server.domain.delivery import ReceiptCode
from server.service.batches import BatchCall

Metadata = Sequence[tuple[str, str | bytes]]


def batch_call(request_key: str, metadata: Metadata, rule: http_query.QueryRule) -> BatchCall:
    """The key (the field, `?key=` or x-api-key, as AddMessages takes it) and the query
    string held to the endpoint's rule; one parse of the query serves both."""
    query = http_query.original_query(metadata)
    api_key = translate.api_key(request_key, metadata, query) if rule.key else None
    return BatchCall(api_key, tuple(http_query.query_violations(query, rule)))


def _info(code: ReceiptCode | None) -> struct_pb2.Value:
    """JSON null while pending, else {"code", "description"}."""
    value = struct_pb2.Value()
    if code is None:
        value.null_value = struct_pb2.NULL_VALUE
    else:
        value.struct_value.update({"code": code.code, "description": code.description})
    return value


def _receipt(receipt: Receipt) -> batch_service_pb2.Receipt:
    return batch_service_pb2.Receipt(
        destination=receipt.destination,
        delivered=receipt.delivered,
        failed=receipt.failed,
        batch_uuid=receipt.batch_uuid,
        message_uuid=receipt.message_uuid,
        info=_info(receipt.info),
    )


def get_batch_response(report: BatchReport) -> batch_service_pb2.GetBatchResponse:
    return batch_service_pb2.GetBatchResponse(
        counts=batch_service_pb2.BatchCounts(
            total=report.total, delivered=report.delivered, failed=report.failed
        ),
        details=[_receipt(r) for r in report.receipts],
    )


def iso_utc(at: datetime) -> str:
    """ISO 8601 in UTC with an explicit `+00:00`, to the second (milliseconds when given)."""
    at = at.astimezone(UTC)
    return at.isoformat(timespec="milliseconds" if at.microsecond else "seconds")


def _pending_batch(batch: PendingBatch) -> batch_service_pb2.PendingBatch:
    return batch_service_pb2.PendingBatch(
        identifier=batch.identifier,
        at=iso_utc(batch.at),
        message_count=batch.message_count,
        unit_count=batch.unit_count,
        **{"from": batch.sender},  # `from` is a Python keyword
    )


def list_pending_batches_response(
    batches: Sequence[PendingBatch],
) -> batch_service_pb2.ListPendingBatchesResponse:
    return batch_service_pb2.ListPendingBatchesResponse(
        batches=[_pending_batch(b) for b in batches]
    )


def list_receipt_codes_response(
    codes: Sequence[ReceiptCode],
) -> batch_service_pb2.ListReceiptCodesResponse:
    """Typed for gRPC, and the bare JSON array Envoy sends as the whole JSON answer."""
    pairs = [{"code": c.code, "description": c.description} for c in codes]
    return batch_service_pb2.ListReceiptCodesResponse(
        codes=[batch_service_pb2.ReceiptCode(**pair) for pair in pairs],
        json=httpbody_pb2.HttpBody(
            content_type="application/json",
            data=json.dumps(pairs, ensure_ascii=False, separators=(",", ":")).encode(),
        ),
    )
