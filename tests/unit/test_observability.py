"""The per-request record: the fields operators need, never the key, a body or a number."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest

from server.api.errors import refusal_for
from server.api.metrics import Metrics
from server.api.observability import Telemetry, rejected_by_reason
from server.domain.errors import InvalidRequest, Unauthenticated, Violation
from server.domain.model import MessageDraft, SenderDraft
from server.json_logs import JsonFormatter
from server.service.add_messages import AddMessagesCommand

KEY = "mp_secret-key-that-must-never-be-logged"
BODY = "a body that must never be logged"
NUMBER = "447700123456"
JSON_METADATA = (
    ("x-envoy-original-method", "POST"),
    ("x-envoy-original-path", f"/message?key={KEY}&dryRun=true"),
    ("x-request-id", "5c0ffee0-0000-4000-8000-000000000001"),
    ("x-api-key", KEY),
)


def command(messages: int = 2, dry_run: bool = False) -> AddMessagesCommand:
    draft = MessageDraft(to=NUMBER, sender=SenderDraft("custom", "Acme"), body=BODY)
    return AddMessagesCommand(KEY, [draft] * messages, dry_run=dry_run)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = JsonFormatter()
    return [formatter.format(r) for r in caplog.records if r.name == "server.api.observability"]


def test_an_accepted_json_request_logs_one_line_with_its_fields_and_no_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry = Telemetry(Metrics())
    with caplog.at_level(logging.INFO), telemetry.request(JSON_METADATA) as record:
        record.received(command(messages=2, dry_run=True))
        record.authenticated("account-1")
    (line,) = lines(caplog)
    assert KEY not in line and BODY not in line and NUMBER not in line
    fields = json.loads(line)
    assert fields["latency_ms"] >= 0
    assert {k: v for k, v in fields.items() if k not in ("time", "latency_ms")} == {
        "level": "INFO",
        "logger": "server.api.observability",
        "message": "AddMessages OK",
        "rpc": "AddMessages",
        "transport": "json",
        "request_id": "5c0ffee0-0000-4000-8000-000000000001",
        "account_id": "account-1",
        "messages": 2,
        "dry_run": True,
        "code": "OK",
        "reason": None,
    }
    sample = telemetry.metrics.registry.get_sample_value
    assert sample("mplus_messages_accepted_total", {"mode": "dry_run"}) == 2
    labels = {"rpc": "AddMessages", "transport": "json", "code": "OK", "reason": ""}
    assert sample("mplus_requests_total", labels) == 1


def test_a_refused_grpc_request_logs_its_code_and_reason_and_counts_its_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry = Telemetry(Metrics())
    error = Unauthenticated(f"unknown key {KEY}")  # even an error's text stays out
    with caplog.at_level(logging.INFO), telemetry.request([("x-api-key", KEY)]) as record:
        record.received(command(messages=3))
        record.refused(refusal_for(error), error)
    (line,) = lines(caplog)
    assert KEY not in line
    fields = json.loads(line)
    assert (fields["transport"], fields["request_id"], fields["account_id"]) == ("grpc", None, None)
    assert (fields["code"], fields["reason"], fields["messages"]) == (
        "UNAUTHENTICATED",
        "UNAUTHENTICATED",
        3,
    )
    sample = telemetry.metrics.registry.get_sample_value
    assert sample("mplus_messages_rejected_total", {"reason": "UNAUTHENTICATED"}) == 3
    assert sample("mplus_messages_accepted_total", {"mode": "stored"}) is None
    assert sample("mplus_requests_in_flight") == 0


def test_an_error_that_escapes_without_a_refusal_is_recorded_as_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry = Telemetry(Metrics())
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(RuntimeError),
        telemetry.request([]) as record,
    ):
        record.received(command(messages=1))
        raise RuntimeError("a bug while answering")
    assert json.loads(lines(caplog)[0])["code"] == "UNKNOWN"
    sample = telemetry.metrics.registry.get_sample_value
    labels = {"rpc": "AddMessages", "transport": "grpc", "code": "UNKNOWN", "reason": "INTERNAL"}
    assert sample("mplus_requests_total", labels) == 1
    assert sample("mplus_messages_rejected_total", {"reason": "INTERNAL"}) is None


def test_a_long_client_request_id_is_cut() -> None:
    with Telemetry(Metrics()).request([("x-request-id", "x" * 10_000)]) as record:
        pass
    assert record.request_id == "x" * 128


def test_rejected_messages_count_once_each_under_their_own_first_reason() -> None:
    error = InvalidRequest(
        [
            Violation("messages[0].to", "bad", "INVALID_PHONE_NUMBER"),
            Violation("messages[0].body", "missing", "REQUIRED"),
            Violation("messages[2].body", "missing", "REQUIRED"),
        ]
    )
    assert rejected_by_reason(error, "INVALID_REQUEST", 4) == Counter(
        {"INVALID_PHONE_NUMBER": 1, "REQUIRED": 1, "INVALID_REQUEST": 2}
    )


def test_a_request_wide_violation_names_the_messages_that_have_none_of_their_own() -> None:
    error = InvalidRequest(
        [
            Violation("dryRun", "twice", "REPEATED_PARAMETER"),
            Violation("messages[1].to", "missing", "REQUIRED"),
        ]
    )
    assert rejected_by_reason(error, "INVALID_REQUEST", 3) == Counter(
        {"REPEATED_PARAMETER": 2, "REQUIRED": 1}
    )
    assert rejected_by_reason(Unauthenticated("x"), "UNAUTHENTICATED", 2) == Counter(
        {"UNAUTHENTICATED": 2}
    )


def test_a_batch_call_is_logged_and_counted_under_its_rpc(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry(Metrics())
    with caplog.at_level(logging.INFO), telemetry.request(JSON_METADATA, "GetBatch") as record:
        record.authenticated("account-1")
    (line,) = lines(caplog)
    assert KEY not in line
    fields = json.loads(line)
    assert (fields["message"], fields["rpc"], fields["account_id"]) == (
        "GetBatch OK",
        "GetBatch",
        "account-1",
    )
    sample = telemetry.metrics.registry.get_sample_value
    labels = {"rpc": "GetBatch", "transport": "json", "code": "OK", "reason": ""}
    assert sample("mplus_requests_total", labels) == 1
    assert sample("mplus_batch_size_messages_count") == 0  # no messages were read
