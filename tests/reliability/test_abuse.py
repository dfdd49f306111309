"""Abuse through the real Envoy and server: hostile bodies, queries and clients each get a 4xx
JSON error of the documented shape (or a refused connection), never a 5xx; memory stays
bounded; keys cannot be guessed at speed, revoked keys stop at once everywhere, lookups do not
leak timing and no key or body reaches a log. Figures go to var/reliability/abuse.json."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e import conftest as e2e
from tests.e2e.conftest import SQLITE_ONLY, Stack
from tests.reliability.figures import record

stack = e2e.stack  # the e2e stack: in-process server and a real Envoy, per database

FIGURES: dict[str, Any] = {}
"""What each abuse case got back, written once the module is done."""


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    if FIGURES:
        record("abuse", **FIGURES)


def message(**fields: Any) -> dict[str, Any]:
    sender = {"type": "custom", "value": "Acme"}
    return {"from": sender, "to": "441111111111", "body": "Hi"} | fields


def batch(**fields: Any) -> bytes:
    return json.dumps({"messages": [message(**fields)]}).encode()


def assert_json_4xx(response: httpx.Response) -> dict[str, Any]:
    """A client error in the documented shape: {"code", "message", "details"}, code not OK."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/json", response.headers
    error: dict[str, Any] = response.json()
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], int) and error["code"] != 0
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    return error


def outcome(response: httpx.Response) -> str:
    """`413 code 8` etc., for the figures."""
    return f"{response.status_code} code {response.json()['code']}"


def raw_exchange(port: int, request: bytes, timeout: float = 30) -> bytes:
    """Sends `request` bytes as they are (no client library fixing them up) and reads the
    answer until Envoy closes the connection; b"" when it closes or resets without one."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(request)
            while chunk := connection.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return answer


def parse_http(answer: bytes) -> httpx.Response:
    """An HTTP/1.1 answer read off a socket, as an httpx.Response (content-length framed)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [(name, value) for name, _, value in (h.partition(": ") for h in header_lines)]
    length = int(dict((k.lower(), v) for k, v in headers).get("content-length", len(body)))
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body[:length])


def nested_channels(depth: int) -> bytes:
    """`channels` is a google.protobuf.ListValue: each JSON level is two protobuf levels."""
    return batch(channels="X").replace(b'"X"', b"[" * depth + b"]" * depth)


HOSTILE_BODIES = {
    "100k-open-brackets": b"[" * 100_000,
    "50k-nested-objects": b'{"a":' * 50_000,
    "nested-channels-30": nested_channels(30),
    "nested-channels-60": nested_channels(60),  # past the protobuf decoder's depth, not Envoy's
    "nested-channels-10k": nested_channels(10_000),
    "nested-unknown-field": batch(zz="X").replace(b'"X"', b"[" * 10_000 + b"]" * 10_000),
    "non-utf8-in-a-string": batch(body="X").replace(b'"X"', b'"\xff\xfe\xc0\x80"'),
    "non-utf8-outside-strings": b'{"messages":\xff[]}',
    "overlong-utf8-nul": batch(body="X").replace(b'"X"', b'"a\xc0\x80b"'),
    "raw-nul-byte": b'{"messages":\x00[]}',
    "escaped-nul-in-every-field": json.dumps(
        {"messages": [{k: "\u0000" for k in ("to", "body", "callback", "id", "send_at")}]}
    ).encode(),
    "1001-messages": json.dumps({"messages": [message()] * 1001}).encode(),
    "20000-empty-messages": json.dumps({"messages": [{}] * 20_000}).encode(),
    "20000-channels": batch(channels=["sms"] * 20_000),
    "not-json": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16,
    "empty": b"",
}


@SQLITE_ONLY
@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_a_hostile_body_gets_a_4xx_json_error(stack: Stack, name: str) -> None:
    response = httpx.post(
        f"{stack.http_url}/message",
        params={"key": stack.key},
        content=HOSTILE_BODIES[name],
        timeout=30,
    )
    assert_json_4xx(response)
    FIGURES.setdefault("hostile_bodies", {})[name] = outcome(response)


HOSTILE_QUERIES = {
    "percent-encoded-non-utf8-key": "key=%FF%FE",
    "raw-non-utf8-key": "key=\xff\xfe",
    "overlong-utf8-key": "key=%C0%80",
    "nul-key": "key=%00",
    "nul-inside-key": "key=KEY%00",
    "non-utf8-flag": "key=KEY&isDryrun=%FF",
    "non-utf8-parameter-name": "key=KEY&%FF=1",
    "nul-parameter-name": "key=KEY&%00=1",
    "100kb-key": "key=" + "k" * 100_000,
    "10k-parameters": "key=KEY" + "&isDryrun=true" * 10_000,
}


@SQLITE_ONLY
@pytest.mark.parametrize("name", list(HOSTILE_QUERIES))
def test_a_hostile_query_string_gets_a_4xx_json_error(stack: Stack, name: str) -> None:
    """Sent off a raw socket: httpx would re-encode the bytes."""
    query = HOSTILE_QUERIES[name].replace("KEY", stack.key).encode("latin-1")
    body = batch()
    request = b"POST /message?%s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" % query
    request += b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    response = parse_http(raw_exchange(stack.settings.http_port, request))
    assert_json_4xx(response)
    assert stack.key.encode() not in response.content  # never echoed back
    FIGURES.setdefault("hostile_queries", {})[name] = outcome(response)


FIELDS = {
    "to": lambda s: {"to": s},
    "body": lambda s: {"body": s},
    "callback": lambda s: {"callback": "https://example.com/" + s},
    "id": lambda s: {"id": s},
    "send_at": lambda s: {"send_at": s},
    "from.type": lambda s: {"from": {"type": s}},
    "from.value": lambda s: {"from": {"type": "custom", "value": s}},
    "channels[0]": lambda s: {"channels": [s]},
    "unknown-field": lambda s: {"zz": s},
}


@SQLITE_ONLY
def test_huge_strings_in_every_field_are_400_within_the_limit_and_413_past_it(
    stack: Stack,
) -> None:
    """Each field alone, in a message and in the defaults, as dry runs. An unknown field is
    dropped by Envoy (documented), so a message otherwise valid is accepted (200) and a
    defaults-only message without a sender is still a 400."""
    limit = stack.settings.max_request_bytes
    sizes = {"within": limit - 2048, "2MB": 2 * 1024 * 1024, "8MB": 8 * 1024 * 1024}
    seen: dict[str, str] = {}
    for field, shape in FIELDS.items():
        for where in ("message", "defaults"):
            for size_name, size in sizes.items():
                huge = "7" * size
                body: dict[str, Any]
                if where == "message":
                    body = {"messages": [message() | shape(huge)]}
                else:
                    body = {"messages": [{"to": "441111111111"}], "defaults": shape(huge)}
                content = json.dumps(body).encode()
                response = httpx.post(
                    f"{stack.http_url}/message",
                    params={"key": stack.key, "isDryrun": "true"},
                    content=content,
                    timeout=60,
                )
                name = f"{where}.{field}@{size_name}"
                assert len(response.content) < 64 * 1024, name  # the value is never echoed whole
                if len(content) <= limit and field == "unknown-field" and where == "message":
                    assert response.status_code == 200, (name, response.text[:500])
                    seen[name] = "200 (unknown field dropped)"
                    continue
                error = assert_json_4xx(response)
                expected = 413 if len(content) > limit else 400
                assert response.status_code == expected, (name, error)
                seen[name] = outcome(response)
    FIGURES["huge_strings"] = {
        "requests": len(seen),
        "answers": sorted(set(seen.values())),
        "limit_bytes": limit,
    }


@SQLITE_ONLY
@pytest.mark.parametrize("header", ["x-api-key", "x-request-id", "content-type", "x-custom"])
def test_a_huge_header_is_431_json(stack: Stack, header: str) -> None:
    response = httpx.post(
        f"{stack.http_url}/message",
        params={"key": stack.key},
        headers={header: "h" * 100_000},
        content=batch(),
        timeout=30,
    )
    assert response.status_code == 431
    assert_json_4xx(response)
    FIGURES.setdefault("huge_headers", {})[header] = outcome(response)


@SQLITE_ONLY
def test_a_chunked_body_growing_past_the_limit_is_413_or_cut_off(stack: Stack) -> None:
    """No content-length: Envoy counts as the chunks arrive and answers 413 once past the limit
    (it reads and drops what comes after, or closes; it never buffers it: see the memory test)."""
    limit = stack.settings.max_request_bytes
    chunk = b"7" * 65536
    head = b"POST /message?key=%s HTTP/1.1\r\nhost: x\r\n" % stack.key.encode()
    head += b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    answer = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", stack.settings.http_port), timeout=30) as conn:
        try:
            conn.sendall(head + b"%x\r\n%s\r\n" % (15, b'{"messages":["'))
            while sent < 4 * limit:  # up to four times the limit, never a last chunk
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy stopped reading: the answer may still be waiting
        try:
            while data := conn.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    if answer:
        response = parse_http(answer)
        assert response.status_code == 413, answer[:300]
        assert_json_4xx(response)
    FIGURES["chunked_past_limit"] = {
        "answer": outcome(parse_http(answer)) if answer else "connection closed",
        "bytes_sent": sent,
        "limit_bytes": limit,
    }
