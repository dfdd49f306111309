"""Hostile input through the real stack: generated and mutated JSON bodies, query strings and
headers through Envoy, and mutated protobuf over native gRPC (direct and through Envoy).

Whatever arrives, the answer is a 200 or a documented 4xx in the documented JSON shape, the
server keeps serving, and nothing from a refused request is stored. Every fuzz message carries
a marker (`fzc<case>m<i>`) in its body, so the database shows which requests stored what.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mplus.v1 import message_service_pb2
from sqlalchemy import select

from server.config import DatabaseTimeouts
from server.storage.tables import queued_messages
from tests.support.calls import IN_A_DAY
from tests.support.figures import record, scaled
from tests.support.stack import Stack, extra_gateway, running_stack

GRPCIO_METADATA_NOISE = "Invalid encoding on"
"""grpcio logs (at ERROR, with a traceback) each metadata value that is not UTF-8, such as an
x-api-key of raw bytes, before any handler runs; the call itself is answered 401."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The e2e stack on SQLite, waiting the default 5 s for SQLite's one write lock rather than
    the e2e tests' 1 s: eight fuzzing threads beside an in-process server on two cores can hold
    a writer past 1 s, and that 503 is the documented answer to a busy database, not to input."""
    state = tmp_path_factory.mktemp("stack-fuzz")
    with running_stack(
        f"sqlite:///{state / 'mplus.db'}", state, lock_timeout_ms=DatabaseTimeouts().lock_ms
    ) as running:
        yield running


SEED = 20260301
THREADS = 8
JSON_CASES = scaled(6_000, 60_000)
QUERY_CASES = scaled(1_500, 15_000)
HEADER_CASES = scaled(1_500, 15_000)
GRPC_CASES = scaled(1_200, 12_000)
"""Split evenly between the gRPC port itself and Envoy's port."""
METHOD = "/mplus.v1.MessageService/AddMessages"
MAX_BODY = 1_100_000
"""Just past the stack's 1 MiB request limit: a few 413s, no time spent on bigger bodies."""

CODES_BY_STATUS = {400: {3, 9}, 401: {16}, 404: {5}, 405: {12}, 409: {6}, 413: {8}, 429: {8}}
"""The README's error table: the gRPC code a JSON error body may carry for each HTTP status."""
GRPC_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
"""What a native caller may hear for bad input; never INTERNAL, UNKNOWN or UNAVAILABLE."""


@dataclass
class Outcome:
    """What one case got back: enough to judge the answer and the database afterwards."""

    kind: str
    case: int
    status: str
    problem: str | None = None
    message_uuids: list[str] = field(default_factory=list)
    surely_stored: bool = False
    """A 200 that was certainly not a dry run: every message it lists must be in the database."""


# ---------------------------------------------------------------- generated and mutated bodies


def spec_examples(case: int, message_id: str) -> list[dict[str, Any]]:
    """The vendor page's examples (as in tests/e2e/test_json_gateway.py), bodies marked."""

    def body(i: int, text: str) -> str:
        return f"fzc{case}m{i} {text}"

    custom = {"type": "custom", "value": "sender-id"}
    return [
        {"messages": [{"from": custom, "to": "441111111111", "body": body(0, "A test!")}]},
        {
            "messages": [
                {
                    "from": custom,
                    "to": "441111111111",
                    "body": body(0, "All parameters"),
                    "callback": "https://my-callback.com/delivery-receipt",
                    "channels": ["sms"],
                    "id": message_id,
                    "send_at": IN_A_DAY,
                }
            ]
        },
        {
            "messages": [
                {"from": custom, "to": "441111111111", "body": body(0, "first")},
                {"from": {"type": "shared"}, "to": "+44 2222 222222", "body": body(1, "second")},
            ]
        },
        {
            "defaults": {"from": {"type": "shared"}, "callback": "https://my-website.com/dr"},
            "messages": [
                {"to": "441111111111", "body": body(0, "defaults")},
                {"to": "442222222222", "body": body(1, "later"), "channels": ["rcs", "sms"]},
            ],
        },
    ]


WEIRD_STRINGS = [
    "",
    " ",
    "\x00",
    "\x07bell",
    "\u202eevil",
    "\ufeffbom",
    "😀" * 50,
    "\ud83d",  # a lone surrogate, sent as a JSON escape
    "e\u0301",
    "null",
    "0",
    "-1",
    "1e309",
    "true",
    "{}",
    "../../etc/passwd",
    "'; DROP TABLE queued_messages; --",
    "%s%n",
    "<script>",
    "ftp://x",
    "http://[::1",
    "9" * 40,
    "2026-02-30T25:61:61Z",
    "99999-01-01T00:00:00Z",
    "sms",
    "rcs",
    "custom",
    "shared",
]


def weird_value(rng: random.Random) -> Any:
    """A JSON value of any type, often not the one the field wants."""
    choice = rng.randrange(12)
    if choice == 0:
        return rng.choice([441111111111, -1, 0, 1.5, 1e308, 2**64])
    if choice == 1:
        return rng.choice([True, False, None])
    if choice == 2:
        return rng.choice([[], {}, ["sms", 1], {"a": [1, {"b": None}]}, [None]])
    if choice == 3:
        return "x" * rng.choice([1601, 5000, 50_000])
    if choice == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 40)))
    if choice == 5:
        return "".join(chr(rng.randrange(0, 0x20)) for _ in range(rng.randrange(1, 10)))
    if choice == 6:
        return nested(rng.randrange(2, 200), rng)
    return rng.choice(WEIRD_STRINGS)


def nested(depth: int, rng: random.Random) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"n": value}
    return value


def paths(tree: Any) -> Iterator[tuple[Any, ...]]:
    """Places in a JSON tree worth mutating, as the keys and indexes leading to them: the
    document's own fields, not the inside of junk already nested deep or repeated many times."""
    pending: list[tuple[tuple[Any, ...], Any]] = [((), tree)]
    while pending:
        path, value = pending.pop()
        yield path
        if len(path) >= 5:
            continue
        if isinstance(value, dict):
            pending.extend(((*path, key), child) for key, child in value.items())
        elif isinstance(value, list):
            shown = [*range(min(3, len(value))), *([len(value) - 1] if len(value) > 3 else [])]
            pending.extend(((*path, index), value[index]) for index in shown)


def parent_of(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        tree = tree[step]
    return tree


def mutate_tree(tree: Any, rng: random.Random) -> Any:
    """One structural mutation; a `body` keeps its marker so the database can name its case."""
    places = [p for p in paths(tree) if p]
    operation = rng.choice(["type", "drop", "extra", "string", "duplicate", "many", "nest"])
    if not places or operation == "nest":
        return {"messages": tree, "extra": nested(rng.randrange(50, 400), rng)}
    path = rng.choice(places)
    parent = parent_of(tree, path)
    last = path[-1]
    if operation == "type":
        old = parent[last]
        marker = old.split(" ")[0] if last == "body" and isinstance(old, str) else None
        parent[last] = f"{marker} {rng.choice(WEIRD_STRINGS)}" if marker else weird_value(rng)
    elif operation == "drop":
        del parent[last]
    elif operation == "extra" and isinstance(parent, dict):
        name = rng.choice(["key", "defualts", "sendAt", "@type", "messages ", "é", "", "from"])
        parent[name] = weird_value(rng)
    elif operation == "string" and isinstance(parent[last], str):
        parent[last] += rng.choice(WEIRD_STRINGS) + weird_value(rng).__str__()[:3000]
    elif operation == "duplicate" and isinstance(parent, list):
        parent.append(json.loads(json.dumps(parent[last])))
    elif operation == "many" and "messages" in tree and isinstance(tree["messages"], list):
        size = len(json.dumps(tree["messages"]))  # a 1001-message batch only of small ones
        times = min(rng.choice([2, 50, 600, 1001]), max(1, 150_000 // size))
        tree["messages"] = json.loads(json.dumps(tree["messages"] * times))  # copies, not aliases
    else:
        parent[last] = weird_value(rng)
    return tree


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Breaks the encoding rather than the structure: truncation, bad UTF-8, stray bytes."""
    operation = rng.randrange(9)
    at = rng.randrange(len(data) + 1)
    if operation == 0:
        return data[:at]
    if operation == 1:
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
        marker = data.find(b"fzc")
        at = marker if marker >= 0 and rng.random() < 0.7 else at  # inside a body string
        return data[:at] + bad + data[at:]
    if operation == 2:
        return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
    if operation == 3:
        return data.replace(b"}", b",}", 1).replace(b"]", b",]", 1)  # trailing commas
    if operation == 4:
        return b"\xef\xbb\xbf" + data
    if operation == 5:
        return data + rng.choice([b"garbage", b"{}", b"\x00", b" \n"])
    if operation == 6:
        deep = b'{"messages": [' + b"[" * 20_000 + b"]" * 20_000 + b"]}"
        return rng.choice([b"", b" ", b"null", b"[]", b'"s"', b"123", b"{", b"[" * 10_000, deep])
    if operation == 7:
        return data.decode("utf-8", "replace").encode("utf-16")
    return data.replace(b'"', b"'", 1)


# ------------------------------------------------------------------------------- the clients


@dataclass
class JsonCase:
    kind: str
    case: int
    query: str
    body: bytes
    headers: dict[str, str | bytes]
    dry_run_unknown: bool = False
    method: str = "POST"
    path: str = "/message"


@dataclass
class GrpcCase:
    kind: str
    case: int
    payload: bytes
    metadata: tuple[tuple[str, str | bytes], ...]
    through_envoy: bool
    dry_run_unknown: bool = True


class Connections:
    """One keep-alive connection per worker thread, all closed at the end."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mine = threading.local()
        self.opened: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def connection(self) -> tuple[http.client.HTTPConnection, bool]:
        existing: http.client.HTTPConnection | None = getattr(self.mine, "connection", None)
        if existing is not None:
            return existing, False
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        with self.lock:
            self.opened.append(connection)
        self.mine.connection = connection
        return connection, True

    def send(self, case: JsonCase) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            connection, fresh = self.connection()
            try:
                url = f"{case.path}?{case.query}" if case.query else case.path
                connection.putrequest(case.method, url, skip_accept_encoding=True)
                for name, value in case.headers.items():
                    connection.putheader(name, value)
                connection.putheader("content-length", str(len(case.body)))
                connection.endheaders(case.body)
                response = connection.getresponse()
                data = response.read()
                headers = {k.lower(): v for k, v in response.getheaders()}
                if headers.get("connection", "").lower() == "close":
                    self.drop()
                return response.status, headers, data
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                self.drop()
                if fresh or attempt == 2:
                    raise  # a new connection refused: that is a finding, not a stale one
        raise AssertionError("unreachable")

    def drop(self) -> None:
        self.mine.connection.close()
        self.mine.connection = None

    def close(self) -> None:
        for connection in self.opened:
            connection.close()


def judge_json(case: JsonCase, status: int, headers: dict[str, str], data: bytes) -> Outcome:
    if headers.get("content-type", "").startswith("application/grpc"):
        return judge_grpc_over_http1(case, status, headers)
    outcome = Outcome(case.kind, case.case, str(status))
    try:
        answer = json.loads(data)
    except ValueError:
        outcome.problem = f"not JSON: {data[:200]!r}"
        return outcome
    if status == 200:
        entries = answer.get("messages") if isinstance(answer, dict) else None
        if not isinstance(entries, list) or not entries:
            outcome.problem = f"a 200 without messages: {data[:200]!r}"
            return outcome
        outcome.message_uuids = [entry["messageUuid"] for entry in entries]
        outcome.surely_stored = not case.dry_run_unknown
        return outcome
    if not isinstance(answer, dict):
        outcome.problem = f"error body not an object: {data[:200]!r}"
    elif set(answer) != {"code", "message", "details"} and not grpcio_overload(status, answer):
        outcome.problem = f"error body of another shape: {data[:300]!r}"
    elif not isinstance(answer["code"], int) or not isinstance(answer["message"], str):
        outcome.problem = f"error body with wrong types: {data[:300]!r}"
    elif not isinstance(answer.get("details", []), list):
        outcome.problem = f"details not a list: {data[:300]!r}"
    elif answer["code"] not in CODES_BY_STATUS.get(status, set()):
        outcome.problem = f"HTTP {status} with code {answer['code']}: {data[:300]!r}"
    return outcome


def judge_grpc_over_http1(case: JsonCase, status: int, headers: dict[str, str]) -> Outcome:
    """A request sent as `application/grpc` is native gRPC to Envoy, answered in gRPC's terms:
    HTTP 200 with the status in `grpc-status` (a header, or a trailer HTTP/1.1 cannot show).
    A JSON body is no gRPC frame: grpcio resets the stream (Envoy says UNAVAILABLE, 14), and a
    path other than the method's is UNIMPLEMENTED (12). Nothing is stored either way."""
    code = headers.get("grpc-status", "trailer")
    outcome = Outcome(case.kind, case.case, f"{status} grpc-status {code}")
    allowed = {str(c.value[0]) for c in GRPC_CODES if c is not grpc.StatusCode.OK} | {"12", "14"}
    if status != 200 or (code != "trailer" and code not in allowed):
        outcome.problem = f"gRPC answer {status} grpc-status {code}"
    return outcome


def grpcio_overload(status: int, answer: dict[str, Any]) -> bool:
    """The one documented reply without details: grpcio refusing past its concurrency cap."""
    return status == 429 and set(answer) == {"code", "message"} and answer["code"] == 8


def judge_grpc(case: GrpcCase, call: Callable[[GrpcCase], Any]) -> Outcome:
    try:
        reply = call(case)
    except grpc.RpcError as error:
        code = error.code()
        outcome = Outcome(case.kind, case.case, code.name)
        if code not in GRPC_CODES:
            outcome.problem = f"{code.name}: {error.details()}"
        return outcome
    response = message_service_pb2.AddMessagesResponse.FromString(reply)
    outcome = Outcome(case.kind, case.case, "OK")
    outcome.message_uuids = [m.message_uuid for m in response.messages]
    outcome.surely_stored = not case.dry_run_unknown
    if not outcome.message_uuids:
        outcome.problem = "OK without messages"
    return outcome


# ------------------------------------------------------------------------------- the cases


def json_cases(key: str, first: int, count: int, rng: random.Random) -> Iterator[JsonCase]:
    """Spec examples, mutated in structure (most) or in bytes (some), a few left valid."""
    for case in range(first, first + count):
        tree = rng.choice(spec_examples(case, str(uuid.uuid4())))
        mutations = rng.choice([0, 1, 1, 1, 2, 3])
        for _ in range(mutations):
            tree = mutate_tree(tree, rng)
        data = json.dumps(tree).encode()
        if rng.random() < 0.25:
            data = mutate_bytes(data, rng)
        data = data[:MAX_BODY]
        headers: dict[str, str | bytes] = {"content-type": "application/json"}
        yield JsonCase("json_body", case, f"key={key}", data, headers)


QUERY_PARTS = [
    "dryRun=true",
    "dryRun=false",
    "isDryrun=true",
    "isDryrun=false",
    "dryRun=TRUE",
    "dryRun=1",
    "dryRun=yes",
    "dryRun=",
    "dryRun",
    "isDryrun=true&isDryrun=false",
    "key=",
    "key",
    "KEY={key}",
    "foo=bar",
    "batch.defaults.body=x",
    "batch.messages=x",
    "is_dryrun=true",
    "dry_run=true",
    "key={key}",
    "key=wrong",
    "key=%ZZ",
    "key=%00",
    "key=%FF%FE",
    "=x",
    "&",
    "%C3%A9=%C3%A9",
    "a%20b=c%2Bd",
    "x=" + "y" * 4000,
    "key={key}%20",
    ";dryRun=true",
    "key[]={key}",
]


def query_cases(key: str, first: int, count: int, rng: random.Random) -> Iterator[JsonCase]:
    """A valid body under odd query strings: the key placed, encoded and repeated every way."""
    encoded = "".join(f"%{b:02X}" for b in key.encode())
    for case in range(first, first + count):
        body = json.dumps(spec_examples(case, str(uuid.uuid4()))[rng.randrange(4)]).encode()
        key_part = rng.choice([f"key={key}", f"key={encoded}", f"key={quote(key)}", ""])
        parts = [p.format(key=key) for p in rng.sample(QUERY_PARTS, rng.randrange(0, 4))]
        parts.insert(rng.randrange(len(parts) + 1), key_part)
        query = "&".join(parts)
        headers: dict[str, str | bytes] = {"content-type": "application/json"}
        if not key_part:
            headers["x-api-key"] = key
        yield JsonCase("json_query", case, query, body, headers, dry_run_unknown=True)


CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/json; charset=latin1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/grpc",
    "application/grpc+proto",
    "application/grpc-web",
    "application/grpc-web-text",
    "application/octet-stream",
    "",
    "*/*",
    "application/json" + "x" * 2000,
]


def header_cases(key: str, first: int, count: int, rng: random.Random) -> Iterator[JsonCase]:
    """A valid body under odd headers: content types, x-api-key variants, spoofed internals."""
    api_keys: list[str | bytes | None] = [
        None,
        key,
        "",
        " ",
        f"{key} ",
        key.upper(),
        "wrong",
        "k" * 5000,
        "ключ".encode(),
        b"\xff\xfe",
        f"{key},{key}",
    ]
    extra: list[tuple[str, str | bytes]] = [
        ("x-envoy-original-path", "/message?foo=bar"),
        ("x-envoy-original-path", "/message"),
        ("x-mplus-public", "0"),
        ("grpc-timeout", "1n"),
        ("te", "trailers"),
        ("content-encoding", "gzip"),
        ("x-http-method-override", "GET"),
        ("accept", "application/grpc"),
        ("x-request-id", "r" * 1000),
        ("x-forwarded-for", "1.2.3.4"),
        ("grpc-encoding", "gzip"),
        ("x-api-key-2", key),
    ]
    for case in range(first, first + count):
        body = json.dumps(spec_examples(case, str(uuid.uuid4()))[rng.randrange(4)]).encode()
        headers: dict[str, str | bytes] = {}
        content_type = rng.choice(CONTENT_TYPES)
        if content_type is not None:
            headers["content-type"] = content_type
        api_key = rng.choice(api_keys)
        if api_key is not None:
            headers["x-api-key"] = api_key
        for name, value in rng.sample(extra, rng.randrange(0, 3)):
            headers[name] = value
        query = rng.choice([f"key={key}", "", "", "key=other"])
        method, path = ("POST", "/message")
        if rng.random() < 0.05:
            method, path = rng.choice(
                [("GET", "/message"), ("PUT", "/message"), ("POST", "/messages"), ("POST", "/")]
            )
        yield JsonCase("json_headers", case, query, body, headers, False, method, path)


GRPC_STRINGS = [s for s in WEIRD_STRINGS if not any(0xD800 <= ord(c) <= 0xDFFF for c in s)]
"""What protobuf can carry: no lone surrogates (bad UTF-8 goes in as raw bytes instead)."""


def grpc_request(case: int, rng: random.Random) -> message_service_pb2.AddMessagesRequest:
    """A valid request, or one with odd field values (strings, channels, flags)."""
    request = message_service_pb2.AddMessagesRequest()
    for i in range(rng.choice([1, 1, 2, 5])):
        message = request.batch.messages.add(to="441111111111", body=f"fzc{case}m{i} grpc")
        getattr(message, "from").type = "custom"
        getattr(message, "from").value = "sender-id"
        if rng.random() < 0.5:
            message.id = str(uuid.uuid4())
    if rng.random() < 0.7:
        message = request.batch.messages[rng.randrange(len(request.batch.messages))]
        name = rng.choice(["to", "body", "callback", "id", "send_at", "from", "channels"])
        weird = rng.choice([*GRPC_STRINGS, "x" * 100_000])
        if name == "body":
            message.body += weird
        elif name == "from":
            getattr(message, "from").type = rng.choice([weird, "shared", "custom"])
            getattr(message, "from").value = rng.choice([weird, ""])
        elif name == "channels":
            message.channels.CopyFrom(struct_pb2.ListValue())
            values: list[Any] = [1.5, None, True, "sms", "sms", weird, [1], {"a": 2}]
            for value in rng.sample(values, 3):
                message.channels.append(value)
        else:
            setattr(message, name, weird)
    if rng.random() < 0.2:
        getattr(request.batch.defaults, "from").type = rng.choice(["shared", "custom", "x"])
    if rng.random() < 0.2:
        request.dry_run = True
    if rng.random() < 0.1:
        request.is_dryrun = True
    return request


def mutate_protobuf(data: bytes, rng: random.Random) -> bytes:
    """Wire-format damage: flipped and stray bytes, cuts, bogus tags and lengths, bad UTF-8."""
    operation = rng.randrange(7)
    at = rng.randrange(len(data) + 1)
    if operation == 0:
        return data[:at]
    if operation == 1:
        return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
    if operation == 2:
        return data[:at] + rng.randbytes(rng.randrange(1, 8)) + data[at:]
    if operation == 3:
        marker = data.find(b"fzc")
        return data[:marker] + b"\xff\xfe" + data[marker + 2 :] if marker >= 0 else data
    if operation == 4:  # unknown fields: varint, length-delimited, a group, a huge length
        return data + rng.choice(
            [b"\xf8\x07\x01", b"\xfa\x07\x03abc", b"\x2b\x2c", b"\x22\xff\xff\xff\xff\x0f"]
        )
    if operation == 5:
        return rng.randbytes(rng.randrange(0, 64))
    return data[:at] + b"\x22" + bytes([0x80] * 11) + data[at:]  # an over-long varint


def grpc_cases(key: str, first: int, count: int, rng: random.Random) -> Iterator[GrpcCase]:
    for case in range(first, first + count):
        request = grpc_request(case, rng)
        through_envoy = case % 2 == 0
        metadata: tuple[tuple[str, str | bytes], ...] = (("x-api-key", key),)
        if not through_envoy and rng.random() < 0.3:
            request.key = key  # internal callers may name the key in the field
            metadata = ()
        elif rng.random() < 0.1:
            metadata = rng.choice([(), (("x-api-key", "wrong"),), (("x-api-key", ""),)])
        payload = request.SerializeToString()
        mutated = rng.random() < 0.5
        if mutated:
            payload = mutate_protobuf(payload, rng)
        flags_untouched = not mutated and not (request.dry_run or request.is_dryrun)
        kind = "grpc_envoy" if through_envoy else "grpc_direct"
        yield GrpcCase(kind, case, payload, metadata, through_envoy, not flags_untouched)


# ------------------------------------------------------------------------------- the run


def stored_uuids(stack: Stack) -> set[str]:
    """Every stored message uuid. Attribution is by uuid, not by the marker in a body: a
    mutation that drops a digit of `fzc541790m3` turns it into case 54179's marker."""
    with stack.engine.connect() as connection:
        rows = connection.execute(select(queued_messages.c.message_uuid))
        return {message_uuid for (message_uuid,) in rows}


def test_no_input_gets_a_5xx_a_stray_shape_or_a_stored_message_from_a_refusal(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(SEED)
    with extra_gateway(stack, rate_limit_per_key=0, rate_limit_global=0) as gateway:
        connections = Connections(gateway.http_port)
        direct = grpc.insecure_channel(stack.grpc_target)
        via_envoy = grpc.insecure_channel(f"127.0.0.1:{gateway.http_port}")
        stubs = {
            False: direct.unary_unary(METHOD, request_serializer=None, response_deserializer=None),
            True: via_envoy.unary_unary(
                METHOD, request_serializer=None, response_deserializer=None
            ),
        }

        def call(case: GrpcCase) -> Any:
            return stubs[case.through_envoy](case.payload, metadata=case.metadata, timeout=30)

        def run(case: JsonCase | GrpcCase) -> Outcome:
            if isinstance(case, GrpcCase):
                return judge_grpc(case, call)
            try:
                status, headers, data = connections.send(case)
            except (OSError, http.client.HTTPException) as error:
                return Outcome(case.kind, case.case, "no answer", f"{type(error).__name__}")
            return judge_json(case, status, headers, data)

        cases: list[JsonCase | GrpcCase] = []
        counts = [JSON_CASES, QUERY_CASES, HEADER_CASES, GRPC_CASES]
        makers: list[Callable[[str, int, int, random.Random], Iterator[JsonCase | GrpcCase]]]
        makers = [json_cases, query_cases, header_cases, grpc_cases]
        first = 0
        for maker, count in zip(makers, counts, strict=True):
            cases.extend(maker(stack.key, first, count, rng))
            first += count
        rng.shuffle(cases)

        started = time.monotonic()
        with caplog.at_level(logging.ERROR), ThreadPoolExecutor(THREADS) as pool:
            outcomes = list(pool.map(run, cases, chunksize=16))
        duration = time.monotonic() - started

        # Alive: health says SERVING and a valid request is stored, through both ports.
        with grpc.insecure_channel(stack.grpc_target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        alive = stack.post(
            {"messages": [{"from": {"type": "shared"}, "to": "441111111111", "body": "alive"}]}
        )
        assert alive.status_code == 200, alive.text
        direct.close()
        via_envoy.close()
        connections.close()

    statuses = Counter(o.status for o in outcomes)
    by_kind = Counter(o.kind for o in outcomes)
    server_errors = sum(1 for o in outcomes if o.status.isdigit() and int(o.status) >= 500)
    problems = [o for o in outcomes if o.problem]
    record(
        "fuzz",
        cases=len(outcomes),
        cases_by_kind=dict(by_kind),
        statuses=dict(statuses.most_common()),
        http_5xx=server_errors,
        problems=len(problems),
        duration_s=round(duration, 1),
        cases_per_s=round(len(outcomes) / duration),
        threads=THREADS,
        seed=SEED,
    )
    assert len(outcomes) >= scaled(10_000, 100_000)
    problems.sort(key=lambda p: not p.status.startswith("5"))  # the worst first
    shown = [(p.kind, p.case, p.status, p.problem) for p in problems[:200]]
    assert not problems, "\n".join(map(repr, shown))
    assert server_errors == 0, statuses
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and not r.getMessage().startswith(GRPCIO_METADATA_NOISE)
    ]
    assert not errors, errors[:5]

    # Nothing from a refusal is stored, and every 200 not a dry run is stored in full.
    uuids = stored_uuids(stack)
    answered = {u for o in outcomes for u in o.message_uuids}
    # every stored message was answered in a 200: a refused request stored nothing
    assert uuids - answered == {alive.json()["messages"][0]["messageUuid"]}
    for outcome in outcomes:
        listed = set(outcome.message_uuids)
        if outcome.surely_stored:
            assert listed <= uuids, outcome
        else:  # a dry run stores nothing, any other 200 everything
            assert listed <= uuids or not listed & uuids, outcome
