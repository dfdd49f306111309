"""One record per call (AddMessages, the BatchService RPCs), written out twice: a JSON log
line and the metrics.

The record holds only what is safe to log: never the API key, a message body or a number,
nor the invocation metadata wholesale (Envoy's x-envoy-original-path carries `?key=`).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from server.api.errors import Refusal
from server.api.metrics import Metrics
from server.domain.errors import InvalidRequest
from server.json_logs import FIELDS
from server.service.add_messages import AddMessagesCommand

log = logging.getLogger(__name__)

ORIGINAL_METHOD_METADATA = "x-envoy-original-method"
"""Set by Envoy's transcoder only: its presence means the call began as JSON."""
REQUEST_ID_METADATA = "x-request-id"
REQUEST_ID_MAX_CHARS = 128
"""A client may send its own x-request-id; a longer one is cut so that it cannot bloat logs."""
_MESSAGE_FIELD = re.compile(r"messages\[(\d+)\]")


@dataclass
class RequestRecord:
    """What one call did; `fields()` is the log line's content."""

    transport: str
    request_id: str | None
    rpc: str = "AddMessages"
    account_id: str | None = None
    messages: int | None = None
    """Messages in the request; None when it could not be read."""
    dry_run: bool = False
    code: str = "OK"
    reason: str | None = None
    rejected: Counter[str] = field(default_factory=Counter)
    latency_s: float = 0.0

    def received(self, command: AddMessagesCommand) -> None:
        self.messages = len(command.messages)
        self.dry_run = command.dry_run

    def authenticated(self, account_id: str) -> None:
        self.account_id = account_id

    def refused(self, refusal: Refusal, error: Exception) -> None:
        self.code, self.reason = refusal.code, refusal.reason
        self.rejected = rejected_by_reason(error, refusal.reason, self.messages or 0)

    def fields(self) -> dict[str, Any]:
        return {
            "rpc": self.rpc,
            "transport": self.transport,
            "request_id": self.request_id,
            "account_id": self.account_id,
            "messages": self.messages,
            "dry_run": self.dry_run,
            "code": self.code,
            "reason": self.reason,
            "latency_ms": round(self.latency_s * 1000, 3),
        }


def rejected_by_reason(error: Exception, reason: str, messages: int) -> Counter[str]:
    """Each message of a refused request once: under its own first violation's reason, else
    under the first request-wide violation's (TOO_MANY_MESSAGES, a bad query parameter), else
    under the request's reason (a valid message shares its invalid batch's fate)."""
    own: dict[int, str] = {}
    request_wide: list[str] = []
    if isinstance(error, InvalidRequest):
        for violation in error.violations:
            match = _MESSAGE_FIELD.match(violation.field)
            if match:
                own.setdefault(int(match[1]), violation.reason)
            else:
                request_wide.append(violation.reason)
    fallback = request_wide[0] if request_wide else reason
    return Counter(own.get(index, fallback) for index in range(messages))


class Telemetry:
    """Turns each call's record into one log line and the metrics of one server."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @contextmanager
    def request(
        self, metadata: Sequence[tuple[str, str | bytes]], rpc: str = "AddMessages"
    ) -> Iterator[RequestRecord]:
        record = RequestRecord(
            transport=_transport(metadata), request_id=_request_id(metadata), rpc=rpc
        )
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            yield record
        except BaseException:
            if record.reason is None:  # escaped without a refusal: grpcio answers UNKNOWN
                record.code, record.reason = "UNKNOWN", "INTERNAL"
            raise
        finally:
            record.latency_s = time.perf_counter() - started
            self.metrics.in_flight.dec()
            self._write(record)

    def _write(self, record: RequestRecord) -> None:
        log.info("%s %s", record.rpc, record.code, extra={FIELDS: record.fields()})
        metrics = self.metrics
        metrics.requests.labels(
            record.rpc, record.transport, record.code, record.reason or ""
        ).inc()
        metrics.request_duration.labels(record.rpc, record.transport).observe(record.latency_s)
        if record.messages is not None:
            metrics.batch_size.observe(record.messages)
            if record.code == "OK":
                mode = "dry_run" if record.dry_run else "stored"
                metrics.messages_accepted.labels(mode).inc(record.messages)
        for reason, count in record.rejected.items():
            metrics.messages_rejected.labels(reason).inc(count)


def _transport(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    return "json" if any(key == ORIGINAL_METHOD_METADATA for key, _ in metadata) else "grpc"


def _request_id(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == REQUEST_ID_METADATA and isinstance(value, str):
            return value[:REQUEST_ID_MAX_CHARS]
    return None
