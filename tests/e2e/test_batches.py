"""The batch and receipt endpoints through the real Envoy, and over native gRPC: the vendor's
exact JSON shapes, cancelling, and every error's status.

On SQLite and PostgreSQL: whatever reads or writes batches. On SQLite only (`SQLITE_ONLY`):
what Envoy decides, or the transport's shape, which no database can change."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from mplus.v1 import batch_service_pb2, batch_service_pb2_grpc
from sqlalchemy import update

from harness.waiting import wait_until
from server.domain.delivery import DELIVERED, HANDSET_UNREACHABLE, RECEIPT_CODES, ReceiptCode
from server.service import accounts
from server.storage.tables import queued_messages
from tests.support.calls import call_error, grpcurl
from tests.support.stack import SQLITE_ONLY, Stack

TOMORROW_9 = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0)
SEND_AT = TOMORROW_9.strftime("%Y-%m-%dT%H:%MZ")  # no seconds, as the scheduling guide shows
AT = TOMORROW_9.strftime("%Y-%m-%dT%H:%M:00+00:00")  # as GET /batch gives it back


def new_key(stack: Stack) -> str:
    """A key of a fresh account: the stack's database is shared by the module's tests."""
    return accounts.create_account(stack.unit_of_work, f"batches-{uuid.uuid4().hex[:8]}").key


def add(stack: Stack, key: str, to: str = "441111111111", **fields: Any) -> dict[str, Any]:
    message = {"from": {"type": "custom", "value": "Acme"}, "to": to, "body": "Hello"} | fields
    response = stack.post({"messages": [message]}, {"key": key})
    assert response.status_code == 200, response.text
    added: dict[str, Any] = response.json()["messages"][0]
    return added


def set_state(
    stack: Stack, message_uuid: str, status: str, receipt: ReceiptCode | None = None
) -> None:
    """What the dispatcher (built elsewhere) writes: a state and, once final, its receipt."""
    with stack.engine.begin() as connection:
        connection.execute(
            update(queued_messages)
            .where(queued_messages.c.message_uuid == message_uuid)
            .values(
                status=status,
                receipt_code=receipt.code if receipt else None,
                receipt_description=receipt.description if receipt else None,
            )
        )


def get(stack: Stack, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{stack.http_url}{path}", params=params, timeout=30)


def delete(stack: Stack, path: str, **params: str) -> httpx.Response:
    return httpx.delete(f"{stack.http_url}{path}", params=params, timeout=30)


def error_of(response: httpx.Response) -> tuple[int, int, str | None]:
    """HTTP status, the JSON body's gRPC code, and its ErrorInfo reason (None: no details)."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    reasons = [d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo")]
    return response.status_code, body["code"], reasons[0] if reasons else None


def test_get_batch_prints_counts_and_with_details_each_receipt(stack: Stack) -> None:
    key = new_key(stack)
    added = add(stack, key, to="+44 7700 900123")
    batch, message = added["batchUuid"], added["messageUuid"]

    pending = get(stack, f"/batch/{batch}", key=key)
    assert pending.status_code == 200 and pending.headers["content-type"] == "application/json"
    assert pending.text == '{"counts":{"total":1,"delivered":0,"failed":0}}'  # zeros print

    detailed = get(stack, f"/batch/{batch}", key=key, details="true")
    assert detailed.json() == {
        "counts": {"total": 1, "delivered": 0, "failed": 0},
        "details": [
            {
                "destination": "+447700900123",
                "delivered": False,
                "failed": False,
                "batchuuid": batch,
                "messageuuid": message,
                "info": None,
            }
        ],
    }
    assert '"info":null' in detailed.text

    set_state(stack, message, "delivered", DELIVERED)
    (receipt,) = get(stack, f"/batch/{batch}", key=key, details="true").json()["details"]
    assert (receipt["delivered"], receipt["failed"]) == (True, False)
    assert receipt["info"] == {"code": "00", "description": "Successful"}
    assert get(stack, f"/batch/{batch}", key=key, details="false").json() == {
        "counts": {"total": 1, "delivered": 1, "failed": 0}
    }

    set_state(stack, message, "failed", HANDSET_UNREACHABLE)
    body = get(stack, f"/batch/{batch}", key=key, details="true").json()
    assert body["counts"] == {"total": 1, "delivered": 0, "failed": 1}
    assert body["details"][0]["info"] == {
        "code": "22",
        "description": HANDSET_UNREACHABLE.description,
    }


def test_pending_batches_list_scheduled_ones_and_an_empty_list_prints(stack: Stack) -> None:
    key = new_key(stack)
    empty = get(stack, "/batch", key=key)
    assert (empty.status_code, empty.text) == (200, '{"batches":[]}')

    scheduled = add(stack, key, send_at=SEND_AT, body="x" * 161)  # two SMS parts
    add(stack, key)  # sent now: never pending
    listed = get(stack, "/batch", key=key)
    assert listed.json() == {
        "batches": [
            {
                "identifier": scheduled["batchUuid"],
                "at": AT,
                "from": "Acme",
                "messagecount": 1,
                "unitcount": 2,
            }
        ]
    }
    header = httpx.get(f"{stack.http_url}/batch", headers={"x-api-key": key}, timeout=30)
    assert header.json() == listed.json()


def test_cancel_is_200_then_the_batch_is_gone(stack: Stack) -> None:
    key = new_key(stack)
    batch = add(stack, key, send_at=SEND_AT)["batchUuid"]
    cancelled = delete(stack, f"/batch/{batch}", key=key)
    assert (cancelled.status_code, cancelled.json()) == (200, {})
    assert error_of(get(stack, f"/batch/{batch}", key=key)) == (404, 5, "BATCH_NOT_FOUND")
    assert error_of(delete(stack, f"/batch/{batch}", key=key)) == (404, 5, "BATCH_NOT_FOUND")
    assert get(stack, "/batch", key=key).json() == {"batches": []}
    assert stack.stored_count(batch_uuid=batch, status="cancelled") == 1


@pytest.mark.parametrize("state", ["sending", "sent", "delivered"])
def test_cancelling_a_released_batch_is_409(stack: Stack, state: str) -> None:
    key = new_key(stack)
    added = add(stack, key, send_at=SEND_AT)
    set_state(stack, added["messageUuid"], state)
    refused = delete(stack, f"/batch/{added['batchUuid']}", key=key)
    assert error_of(refused) == (409, 10, "BATCH_ALREADY_SENT")
    assert stack.stored_count(batch_uuid=added["batchUuid"], status=state) == 1


def test_another_accounts_batch_is_404_never_403(stack: Stack) -> None:
    owner, other = new_key(stack), new_key(stack)
    batch = add(stack, owner, send_at=SEND_AT)["batchUuid"]
    assert error_of(get(stack, f"/batch/{batch}", key=other)) == (404, 5, "BATCH_NOT_FOUND")
    assert error_of(delete(stack, f"/batch/{batch}", key=other)) == (404, 5, "BATCH_NOT_FOUND")
    assert get(stack, "/batch", key=other).json() == {"batches": []}
    assert get(stack, f"/batch/{batch}", key=owner).status_code == 200  # still there


def test_a_missing_or_unknown_key_is_401(stack: Stack) -> None:
    batch = add(stack, stack.key)["batchUuid"]
    for params in ({}, {"key": "mp_unknown"}):
        assert error_of(get(stack, "/batch", **params))[:2] == (401, 16)
        assert error_of(get(stack, f"/batch/{batch}", **params))[:2] == (401, 16)
        assert error_of(delete(stack, f"/batch/{batch}", **params))[:2] == (401, 16)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "path", "query", "reason"),
    [
        ("GET", "/batch/{batch}", "&foo=1", None),  # Envoy: names no request field
        ("GET", "/batch/{batch}", "&details=yes", "INVALID_REQUEST"),  # Envoy reads it as true
        ("GET", "/batch/{batch}", "&details=true&details=true", "INVALID_REQUEST"),
        ("GET", "/batch/{batch}", "&batchUuid=x", "INVALID_REQUEST"),  # a field, not a parameter
        ("GET", "/batch/{batch}", "&key=", "INVALID_REQUEST"),
        ("GET", "/batch", "&details=true", None),
        ("DELETE", "/batch/{batch}", "&details=true", None),
        ("GET", "/dr-responses", "", None),  # it takes no key either
    ],
)
def test_unknown_query_parameters_are_400(
    stack: Stack, method: str, path: str, query: str, reason: str | None
) -> None:
    batch = add(stack, stack.key, send_at=SEND_AT)["batchUuid"]
    url = f"{stack.http_url}{path.format(batch=batch)}?key={stack.key}{query}"
    response = httpx.request(method, url, timeout=30)
    assert error_of(response) == (400, 3, reason)
    assert stack.stored_count(batch_uuid=batch, status="queued") == 1


@SQLITE_ONLY
def test_receipt_codes_are_a_bare_array_with_no_key(stack: Stack) -> None:
    response = get(stack, "/dr-responses")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [
        {"code": c.code, "description": c.description} for c in RECEIPT_CODES
    ]
    assert response.text.startswith('[{"code":"00","description":"Successful"},')


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/batch"),
        ("PUT", "/batch/{batch}"),
        ("POST", "/batch/{batch}"),
        ("DELETE", "/batch"),
        ("POST", "/dr-responses"),
        ("GET", "/batch/{batch}/details"),
        ("GET", "/batches"),
    ],
)
def test_undocumented_methods_and_paths_are_json_404(stack: Stack, method: str, path: str) -> None:
    url = f"{stack.http_url}{path.format(batch=uuid.uuid4())}?key={stack.key}"
    response = httpx.request(method, url, timeout=30)
    assert error_of(response) == (404, 5, None)


@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/nope", "/batch/x/y"])
def test_the_no_such_endpoint_reply_lists_the_endpoints(stack: Stack, path: str) -> None:
    response = httpx.get(f"{stack.http_url}{path}", timeout=30)
    assert error_of(response) == (404, 5, None)
    message = response.json()["message"]
    assert message.startswith(f"Could not resolve {path} to a method.")  # the transcoder's
    for endpoint in ("POST /message", "GET /batch", "DELETE /batch/{batch-uuid}", "/dr-responses"):
        assert endpoint in message


def test_native_grpc_direct_and_through_envoy(stack: Stack) -> None:
    key = new_key(stack)
    added = add(stack, key, send_at=SEND_AT)
    batch = added["batchUuid"]
    for target, credentials in (
        (stack.grpc_target, {"key": key}),
        (stack.http_url.removeprefix("http://"), {}),
    ):
        metadata = [] if credentials else [("x-api-key", key)]
        with grpc.insecure_channel(target) as channel:
            stub = batch_service_pb2_grpc.BatchServiceStub(channel)
            report = stub.GetBatch(
                batch_service_pb2.GetBatchRequest(batch_uuid=batch, details=True, **credentials),
                metadata=metadata,
                timeout=10,
            )
            pending = stub.ListPendingBatches(
                batch_service_pb2.ListPendingBatchesRequest(**credentials),
                metadata=metadata,
                timeout=10,
            )
            codes = stub.ListReceiptCodes(batch_service_pb2.ListReceiptCodesRequest(), timeout=10)
        assert (report.counts.total, report.counts.delivered, report.counts.failed) == (1, 0, 0)
        assert report.details[0].message_uuid == added["messageUuid"]
        assert report.details[0].info.WhichOneof("kind") == "null_value"
        assert [(b.identifier, b.at, b.message_count) for b in pending.batches] == [(batch, AT, 1)]
        assert [c.code for c in codes.codes] == [c.code for c in RECEIPT_CODES]
        assert json.loads(codes.json.data) == [
            {"code": c.code, "description": c.description} for c in RECEIPT_CODES
        ]

    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = batch_service_pb2_grpc.BatchServiceStub(channel)
        set_state(stack, added["messageUuid"], "sending")
        with pytest.raises(grpc.RpcError) as sent:
            stub.CancelBatch(batch_service_pb2.CancelBatchRequest(key=key, batch_uuid=batch))
        set_state(stack, added["messageUuid"], "queued")
        stub.CancelBatch(batch_service_pb2.CancelBatchRequest(key=key, batch_uuid=batch))
        with pytest.raises(grpc.RpcError) as gone:
            stub.GetBatch(batch_service_pb2.GetBatchRequest(key=key, batch_uuid=batch))
    code, info, _ = call_error(sent.value)  # type: ignore[arg-type]
    assert (code, info.reason) == (grpc.StatusCode.ABORTED, "BATCH_ALREADY_SENT")
    code, info, _ = call_error(gone.value)  # type: ignore[arg-type]
    assert (code, info.reason, info.metadata["batchUuid"]) == (
        grpc.StatusCode.NOT_FOUND,
        "BATCH_NOT_FOUND",
        batch,
    )


@SQLITE_ONLY
def test_malformed_bytes_are_invalid_argument(stack: Stack) -> None:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        get_batch = channel.unary_unary(
            "/mplus.v1.BatchService/GetBatch", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as malformed:
            get_batch(b"\xff\xff\xff", timeout=10)
    code, info, _ = call_error(malformed.value)  # type: ignore[arg-type]
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert "mplus.v1.GetBatchRequest" in str(malformed.value.details())


@SQLITE_ONLY
def test_grpcurl_reads_a_batch_through_reflection(stack: Stack) -> None:
    batch = add(stack, stack.key)["batchUuid"]
    called = grpcurl(
        "-plaintext",
        "-H",
        f"x-api-key: {stack.key}",
        "-d",
        json.dumps({"batch_uuid": batch}),
        stack.grpc_target,
        "mplus.v1.BatchService/GetBatch",
    )
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["counts"] == {"total": 1, "delivered": 0, "failed": 0}
    codes = grpcurl("-plaintext", stack.grpc_target, "mplus.v1.BatchService/ListReceiptCodes")
    assert codes.returncode == 0, codes.stderr
    assert json.loads(codes.stdout)["codes"][0] == {"code": "00", "description": "Successful"}


@SQLITE_ONLY
def test_the_access_log_names_the_method_the_client_used(stack: Stack) -> None:
    """The transcoder sends every call upstream as a POST; the log keeps the client's."""
    key = new_key(stack)
    batch = add(stack, key)["batchUuid"]
    assert get(stack, f"/batch/{batch}", key=key).status_code == 200
    assert delete(stack, f"/batch/{batch}", key=key).status_code == 200  # no dispatcher here
    wanted = {("POST", "/message"), ("GET", f"/batch/{batch}"), ("DELETE", f"/batch/{batch}")}

    def logged() -> set[tuple[str, str]]:
        lines = stack.envoy_log.read_text().splitlines()
        return {(e["method"], e["path"]) for e in map(json.loads, lines) if "path" in e}

    wait_until(lambda: wanted <= logged(), "Envoy to flush its access log (every second)")
