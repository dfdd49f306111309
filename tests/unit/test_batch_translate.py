"""BatchService translation: the vendor's JSON shapes as protobuf's JSON printer (Envoy's
transcoder prints the same with `always_print_primitive_fields` off) gives them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import json_format

from server.api.batch_translate import (
    batch_call,
    get_batch_response,
    iso_utc,
    list_pending_batches_response,
    list_receipt_codes_response,
)
from server.api.http_query import GET_BATCH, LIST_RECEIPT_CODES
from server.domain.batches import BatchMessage, BatchReport, PendingBatch, Receipt
from server.domain.delivery import DELIVERED, RECEIPT_CODES, MessageStatus
from server.domain.errors import Unauthenticated

JSON_METADATA = (("x-envoy-original-method", "GET"),)


def printed(message: object) -> object:
    """As Envoy prints it: JSON names, fields without presence left out when empty."""
    return json.loads(json_format.MessageToJson(message))  # type: ignore[arg-type]


def test_a_batch_prints_zero_counts_false_flags_and_null_info() -> None:
    pending = BatchMessage("447700900001", "b", "m1", MessageStatus.QUEUED)
    delivered = BatchMessage("447700900002", "b", "m2", MessageStatus.DELIVERED, DELIVERED)
    assert printed(get_batch_response(BatchReport.of([pending, delivered], details=True))) == {
        "counts": {"total": 2, "delivered": 1, "failed": 0},
        "details": [
            {
                "destination": "+447700900001",
                "delivered": False,
                "failed": False,
                "batchuuid": "b",
                "messageuuid": "m1",
                "info": None,
            },
            {
                "destination": "+447700900002",
                "delivered": True,
                "failed": False,
                "batchuuid": "b",
                "messageuuid": "m2",
                "info": {"code": "00", "description": "Successful"},
            },
        ],
    }
    assert printed(get_batch_response(BatchReport(0, 0, 0))) == {
        "counts": {"total": 0, "delivered": 0, "failed": 0}
    }


def test_a_receipt_announced_but_not_final_is_still_pending() -> None:
    sent = BatchMessage("447700900001", "b", "m", MessageStatus.SENT, DELIVERED)
    assert Receipt.of(sent).info is None and not Receipt.of(sent).delivered


def test_pending_batches_print_the_vendors_names_and_a_normalised_time() -> None:
    batch = PendingBatch("b", datetime(2026, 1, 1, 9, tzinfo=UTC), "Acme", 2, 3)
    assert printed(list_pending_batches_response([batch])) == {
        "batches": [
            {
                "identifier": "b",
                "at": "2026-01-01T09:00:00+00:00",
                "from": "Acme",
                "messagecount": 2,
                "unitcount": 3,
            }
        ]
    }


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2026, 1, 1, 9, tzinfo=UTC), "2026-01-01T09:00:00+00:00"),
        (
            datetime(2026, 1, 1, 10, tzinfo=timezone(timedelta(hours=1))),
            "2026-01-01T09:00:00+00:00",
        ),
        (datetime(2026, 1, 1, 9, 0, 0, 250000, tzinfo=UTC), "2026-01-01T09:00:00.250+00:00"),
    ],
)
def test_times_are_utc_with_an_explicit_offset(at: datetime, expected: str) -> None:
    assert iso_utc(at) == expected


def test_receipt_codes_are_typed_and_a_bare_json_array() -> None:
    response = list_receipt_codes_response(RECEIPT_CODES)
    expected = [{"code": c.code, "description": c.description} for c in RECEIPT_CODES]
    assert [{"code": c.code, "description": c.description} for c in response.codes] == expected
    assert response.json.content_type == "application/json"
    assert json.loads(response.json.data) == expected


def test_the_key_and_the_query_rule_come_from_the_call() -> None:
    metadata = (*JSON_METADATA, ("x-envoy-original-path", "/batch/b?key=k&details=yes"))
    call = batch_call("k", metadata, GET_BATCH)
    assert call.api_key == "k"
    assert [v.reason for v in call.transport_violations] == ["INVALID_BOOLEAN"]
    with pytest.raises(Unauthenticated):
        batch_call("", (*metadata, ("x-api-key", "other")), GET_BATCH)
    public = batch_call("", (("x-api-key", "k"),), LIST_RECEIPT_CODES)
    assert public.api_key is None and public.transport_violations == ()
