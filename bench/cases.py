"""The request shapes measured, and their bodies as h2load sends them (gRPC frame or JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf import json_format
from mplus.v1 import message_service_pb2


@dataclass(frozen=True)
class Case:
    transport: str  # "grpc" (straight to the server) or "json" (through Envoy)
    messages: int  # per request
    clients: int  # concurrent connections, one request in flight on each
    mix: bool = False
    """Every other message names its own custom sender over the defaults' shared one."""

    @property
    def name(self) -> str:
        return f"{self.transport} {self.messages}-msg{' mix' if self.mix else ''} c{self.clients}"

    def over(self, transport: str) -> Case:
        return Case(transport, self.messages, self.clients, self.mix)


CASES = (
    Case("grpc", 1, 1),
    Case("grpc", 1, 8),
    Case("grpc", 1, 32),
    Case("grpc", 100, 8),
    Case("grpc", 100, 8, mix=True),
    Case("grpc", 1000, 8),
    Case("json", 1, 8),
    Case("json", 100, 8),
)
SINGLE_C32 = Case("grpc", 1, 32)
BULK = Case("grpc", 1000, 8)
CUSTOM_SENDER = {"type": "custom", "value": "Bench"}


def batch_fields(size: int, mix: bool = False) -> dict[str, object]:
    """A MessageBatch as JSON: shared sender and channels in defaults, ids omitted; in a mix,
    every odd message overrides the shared sender with a custom one."""
    messages: list[dict[str, object]] = [
        {"to": f"4470{i:08d}", "body": f"Benchmark message {i}"} for i in range(size)
    ]
    if mix:
        for message in messages[1::2]:
            message["from"] = CUSTOM_SENDER
    return {
        "defaults": {"from": {"type": "shared"}, "channels": ["rcs", "sms"]},
        "messages": messages,
    }


def body(case: Case, dry_run: bool = False) -> bytes:
    """The request body: a length-prefixed gRPC message (uncompressed, key left out: it goes
    in x-api-key), or the JSON batch; `dry_run` (gRPC only) validates and stores nothing."""
    fields = batch_fields(case.messages, case.mix)
    if case.transport == "json":
        assert not dry_run, "a JSON dry run is a query parameter"
        return json.dumps(fields).encode()
    batch = json_format.ParseDict(fields, message_service_pb2.MessageBatch())
    request = message_service_pb2.AddMessagesRequest(batch=batch, dry_run=dry_run)
    payload = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload
