"""The documented JSON API through the real Envoy binary: every spec example, every error shape.

On SQLite and PostgreSQL: whatever stores, replays, pins or authenticates. On SQLite only
(`SQLITE_ONLY`): what Envoy or validation decides, which no database can change."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest

from server.service import accounts, senders
from tests.support.calls import IN_A_DAY
from tests.support.locks import lock_held
from tests.support.stack import LOCK_TIMEOUT_MS, POOL, SQLITE_ONLY, Stack

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def custom(value: str) -> dict[str, str]:
    return {"type": "custom", "value": value}


# The examples of the vendor page (../shared/spec/add-message.txt), as valid JSON: the page's
# trailing commas removed, and a future `send_at` where its 2026-01-01 has passed.
SPEC_EXAMPLES: dict[str, dict[str, Any]] = {
    "single message": {
        "messages": [
            {"from": custom("sender-id"), "to": "441111111111", "body": "This is a test message!"}
        ]
    },
    "all parameters": {
        "messages": [
            {
                "from": custom("sender-id"),
                "to": "441111111111",
                "body": "This is a test message!",
                "callback": "https://my-callback.com/delivery-receipt",
                "channels": ["sms"],
                "id": str(uuid.uuid4()),  # the page's b2693dfe-… would replay on a rerun
                "send_at": IN_A_DAY,
            }
        ]
    },
    "multiple messages": {
        "messages": [
            {
                "from": custom("sender-id-1"),
                "to": "441111111111",
                "body": "This is my first test message!",
            },
            {
                "from": custom("sender-id-2"),
                "to": "442222222222",
                "body": "This is my second test message!",
            },
        ]
    },
    "message defaults": {
        "defaults": {"from": custom("sender-id")},
        "messages": [
            {"to": "441111111111", "body": "This is the first test message!"},
            {"to": "442222222222", "body": "This is the second test message!"},
        ],
    },
    "defaults overridden": {
        "defaults": {"from": custom("mplus-test")},
        "messages": [
            {"to": "441111111111", "body": "This is the first test message!"},
            {"to": "442222222222", "body": "This is the second test message!"},
            {
                "from": custom("specific"),
                "to": "44333333333333",
                "body": "This is the third test message!",
            },
        ],
    },
    "callback": {
        "messages": [
            {
                "from": custom("mplus-test"),
                "to": "441111111111",
                "body": "This is my test message!",
                "callback": "https://my-website.com/delivery-receipt",
            }
        ]
    },
    "callback per message": {
        "messages": [
            {
                "from": custom("mplus-test"),
                "to": "441111111111",
                "body": "This is my first test message!",
                "callback": "https://my-website.com/dr?id=first_message",
            },
            {
                "from": custom("mplus-test"),
                "to": "442222222222",
                "body": "This is my second test message!",
                "callback": "https://my-website.com/dr?id=second_message",
            },
        ]
    },
    "channels": {
        "messages": [
            {
                "from": custom("specific"),
                "to": "44333333333333",
                "body": "This is the third test message!",
                "channels": ["rcs"],
            }
        ]
    },
    "shared sender": {
        "messages": [
            {
                "from": {"type": "shared"},
                "to": "44333333333333",
                "body": "This is the third test message!",
                "channels": ["rcs"],
            }
        ]
    },
}


def expected_echo(message: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **message}
    echo: dict[str, Any] = {
        k: merged[k]
        for k in ("to", "body", "from", "callback", "channels", "id", "send_at")
        if k in merged
    }
    echo["to"] = re.sub(r"[^0-9]", "", echo["to"])
    return echo


@pytest.mark.parametrize("name", SPEC_EXAMPLES)
def test_every_spec_example_is_accepted_stored_and_echoed(stack: Stack, name: str) -> None:
    body = SPEC_EXAMPLES[name]
    before = stack.stored_count()
    response = stack.post(body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answered = response.json()["messages"]
    assert len(answered) == len(body["messages"])
    for sent, got in zip(body["messages"], answered, strict=True):
        echo = expected_echo(sent, body.get("defaults", {}))
        identifiers = {k: got.pop(k) for k in ("batchUuid", "messageUuid", "scheduled")}
        if echo["from"]["type"] == "shared":
            assert got["from"]["value"] in POOL
            echo["from"] = {"type": "shared", "value": got["from"]["value"]}
        assert got == echo
        assert UUID.fullmatch(identifiers["batchUuid"]) and UUID.fullmatch(
            identifiers["messageUuid"]
        )
        assert identifiers["scheduled"] is ("send_at" in sent)
    batch_ids = {m["batchUuid"] for m in response.json()["messages"]}
    assert len(batch_ids) == len(answered)  # each message is its own batch
    assert stack.stored_count() == before + len(answered)
    for got in response.json()["messages"]:
        assert stack.stored_count(message_uuid=got["messageUuid"], account_id=stack.account_id) == 1


@SQLITE_ONLY
def test_the_spec_defaults_example_works_as_written_trailing_commas_and_all(stack: Stack) -> None:
    text = """{
        "defaults": {"from": {"type": "custom", "value": "sender-id"}},
        "messages": [
            {
                "to": "441111111111",
                "body": "This is the first test message!",
            },
            {
                "to": "442222222222",
                "body": "This is the second test message!",
            },
        ]
    }"""
    response = httpx.post(f"{stack.http_url}/message", params={"key": stack.key}, content=text)
    assert response.status_code == 200, response.text
    assert [m["from"]["value"] for m in response.json()["messages"]] == ["sender-id"] * 2


@SQLITE_ONLY
def test_the_misspelt_defualts_example_is_rejected_naming_the_missing_sender(stack: Stack) -> None:
    body = {
        "defualts": {
            "from": custom("specific"),
            "callback": "https://my-website.com/delivery-receipt",
        },
        "messages": [{"to": "441111111111", "body": "This is my first test message!"}],
    }
    response = stack.post(body)
    assert response.status_code == 400
    violations = bad_request_fields(response.json())
    assert violations == ["messages[0].from"]


def bad_request_fields(error: dict[str, Any]) -> list[str]:
    (bad_request,) = [d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    return [v["field"] for v in bad_request["fieldViolations"]]


def test_validation_errors_list_every_violation_with_field_paths(stack: Stack) -> None:
    body = {
        "defaults": {"from": custom("ok-sender")},
        "messages": [
            {"to": "441111111111", "body": "fine"},
            {"to": "12", "body": " ", "channels": ["sms", "fax"], "send_at": "soon"},
            {"to": "441111111111", "body": "x", "from": {"type": "shared", "value": "nope"}},
        ],
    }
    before = stack.stored_count()
    response = stack.post(body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["code"] == 3
    assert bad_request_fields(error) == [
        "messages[1].to",
        "messages[1].body",
        "messages[1].channels[1]",
        "messages[1].send_at",
        "messages[2].from.value",
    ]
    (info,) = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info["reason"] == "INVALID_REQUEST" and info["domain"] == "mplus"
    assert stack.stored_count() == before  # nothing of a rejected request is stored


@SQLITE_ONLY
def test_more_messages_than_the_limit_is_a_400(stack: Stack) -> None:
    message = {"from": custom("x1"), "to": "441111111111", "body": "Hi"}
    response = stack.post({"messages": [message] * 1001})
    assert response.status_code == 400
    assert bad_request_fields(response.json()) == ["messages"]


class TestApiKey:
    BODY = SPEC_EXAMPLES["single message"]

    def test_missing_and_unknown_keys_are_401_json(self, stack: Stack) -> None:
        for params in ({}, {"key": "mp_unknown"}):
            response = stack.post(self.BODY, params=params)
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/json"
            assert response.json()["code"] == 16

    def test_the_key_may_come_as_an_x_api_key_header(self, stack: Stack) -> None:
        response = stack.post(self.BODY, params={}, headers={"x-api-key": stack.key})
        assert response.status_code == 200

    def test_header_and_query_naming_different_valid_keys_is_401(self, stack: Stack) -> None:
        other = accounts.create_account(stack.unit_of_work, f"other-{uuid.uuid4()}").key
        before = stack.stored_count()
        for params, header in (({"key": stack.key}, other), ({"key": other}, stack.key)):
            response = stack.post(self.BODY, params=params, headers={"x-api-key": header})
            assert response.status_code == 401
        assert stack.stored_count() == before

    def test_an_empty_query_key_is_401_alone_and_400_beside_a_header_key(
        self, stack: Stack
    ) -> None:
        """As the README says: an empty `?key=` names no key, so alone it is unauthenticated;
        with an x-api-key that authenticates, it is refused as a violation naming `key`."""
        before = stack.stored_count()
        alone = stack.post(self.BODY, params={"key": ""})
        assert alone.status_code == 401 and alone.json()["code"] == 16
        beside = stack.post(self.BODY, params={"key": ""}, headers={"x-api-key": stack.key})
        assert beside.status_code == 400 and beside.json()["code"] == 3
        assert bad_request_fields(beside.json()) == ["key"]
        assert stack.stored_count() == before

    def test_an_empty_x_api_key_header_counts_as_absent(self, stack: Stack) -> None:
        assert stack.post(self.BODY, headers={"x-api-key": ""}).status_code == 200

    def test_a_key_in_the_json_body_never_authenticates(self, stack: Stack) -> None:
        body = {**self.BODY, "key": stack.key}
        assert stack.post(body, params={}).status_code == 401
        assert stack.post(body, params={"key": "mp_random"}).status_code == 401

    def test_a_key_in_the_json_body_never_overrides_the_query_key(self, stack: Stack) -> None:
        response = stack.post({**self.BODY, "key": "mp_attacker"})
        assert response.status_code == 200

    @SQLITE_ONLY
    def test_the_key_never_reaches_the_access_log(self, stack: Stack) -> None:
        stack.post(self.BODY)
        stack.post(self.BODY, params={"key": "mp_wrong-key-for-the-log"})
        log = stack.envoy_log.read_text()
        assert '"path":"/message"' in log
        assert stack.key not in log and "mp_wrong-key-for-the-log" not in log


@pytest.mark.parametrize("flag", ["isDryrun", "dryRun"])
def test_a_dry_run_answers_in_full_and_stores_nothing(stack: Stack, flag: str) -> None:
    body = {
        "messages": [
            {
                "from": {"type": "shared"},
                "to": "447000000999",
                "body": "Preview",
                "id": str(uuid.uuid4()),
            }
        ]
    }
    before, pins_before = stack.stored_count(), stack.pin_count()
    response = stack.post(body, params={"key": stack.key, flag: "true"})
    assert response.status_code == 200
    assert response.headers["x-mplus-dry-run"] == "true"  # the marker; the body is the vendor's
    (preview,) = response.json()["messages"]
    assert set(response.json()) == {"messages"}
    assert preview["from"]["value"] in POOL and preview["scheduled"] is False
    assert stack.stored_count() == before
    assert stack.pin_count() == pins_before  # no sticky assignment recorded
    stored = stack.post(body)
    assert "x-mplus-dry-run" not in stored.headers
    real = stored.json()["messages"][0]
    assert real["messageUuid"] != preview["messageUuid"]
    assert stack.stored_count() == before + 1


@SQLITE_ONLY
def test_a_refused_dry_run_is_the_usual_json_error_without_the_marker(stack: Stack) -> None:
    body = {"messages": [{"from": custom("Acme"), "to": "1", "body": "Hi"}]}
    response = stack.post(body, params={"key": stack.key, "dryRun": "true"})
    assert response.status_code == 400 and response.json()["code"] == 3
    assert bad_request_fields(response.json()) == ["messages[0].to"]
    assert "x-mplus-dry-run" not in response.headers


def test_resending_an_id_replays_and_other_content_is_409(stack: Stack) -> None:
    client_id = str(uuid.uuid4())
    message = {"from": custom("Acme"), "to": "441111111111", "body": "Once", "id": client_id}
    first = stack.post({"messages": [message]}).json()["messages"][0]
    respelled = {
        **message,
        "to": "+44 1111 111111",
        "id": client_id.upper(),
        "channels": ["sms"],
    }
    again = stack.post({"messages": [respelled]}).json()["messages"][0]
    assert again == first  # the stored answer, not an echo of the resend
    assert stack.stored_count(client_id=message["id"]) == 1
    conflict = stack.post({"messages": [{**message, "body": "Twice"}]})
    assert conflict.status_code == 409
    assert conflict.json()["code"] == 6
    assert "messages[0].id" in conflict.json()["message"]
    duplicate = stack.post({"messages": [message, {**message, "to": "442222222222"}]})
    assert duplicate.status_code == 400
    assert bad_request_fields(duplicate.json()) == ["messages[1].id"]


def test_shared_senders_stick_to_a_number(stack: Stack) -> None:
    message = {"from": {"type": "shared"}, "to": "447000000555", "body": "Hi"}
    senders = {
        stack.post({"messages": [message]}).json()["messages"][0]["from"]["value"] for _ in range(4)
    }
    assert len(senders) == 1


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "path", "params", "content", "status", "code"),
    [
        ("POST", "/message", "ok", b'{"messages": [', 400, 3),
        ("POST", "/message", "ok", b"[1, 2]", 400, 3),
        ("POST", "/message", "unknown", b'{"messages": []}', 400, 3),
        ("GET", "/message", "ok", b"", 404, 5),
        ("POST", "/messages", "ok", b"{}", 404, 5),
        ("POST", "/message/", "ok", b"{}", 404, 5),
        ("POST", "/message", "ok", b"{" + b'"x":"' + b"y" * (1024 * 1024) + b'"}', 413, 8),
    ],
    ids=[
        "malformed",
        "wrong-type",
        "unknown-query-parameter",
        "get",
        "unknown-path",
        "trailing-slash",
        "too-large",
    ],
)
def test_envoy_made_errors_are_json_in_the_same_shape(
    stack: Stack, method: str, path: str, params: str, content: bytes, status: int, code: int
) -> None:
    query = {"key": stack.key} | ({"foo": "bar"} if params == "unknown" else {})
    response = httpx.request(
        method, f"{stack.http_url}{path}", params=query, content=content, timeout=30
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["code"] == code and error["message"] and error["details"] == []


def test_native_grpc_is_served_on_the_same_port_as_json(stack: Stack) -> None:
    """With the key as x-api-key metadata, where Envoy's per-key rate limit sees it; the key
    field alone is refused on this port (the limit cannot read a protobuf body)."""
    import grpc
    from mplus.v1 import message_pb2, message_service_pb2, message_service_pb2_grpc

    message = message_pb2.Message(to="441111111111", body="via envoy")
    getattr(message, "from").CopyFrom(message_pb2.From(type="custom", value="Acme"))
    batch = message_service_pb2.MessageBatch(messages=[message])
    with grpc.insecure_channel(stack.http_url.removeprefix("http://")) as channel:
        stub = message_service_pb2_grpc.MessageServiceStub(channel)
        response = stub.AddMessages(
            message_service_pb2.AddMessagesRequest(batch=batch),
            metadata=[("x-api-key", stack.key)],
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.AddMessages(
                message_service_pb2.AddMessagesRequest(key=stack.key, batch=batch), timeout=10
            )
    assert response.messages[0].to == "441111111111"
    assert stack.stored_count(message_uuid=response.messages[0].message_uuid) == 1
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "x-api-key" in str(refused.value.details())


@SQLITE_ONLY
def test_a_thousand_invalid_messages_get_a_400_listing_what_fits(stack: Stack) -> None:
    body = {
        "defaults": {"from": custom("abc"), "callback": "my-website.com/dr"},
        "messages": [{"to": f"4411111{i:05d}", "body": "hi"} for i in range(1000)],
    }
    response = stack.post(body)
    assert response.status_code == 400
    error = response.json()
    (info,) = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info["metadata"]["violations"] == "1000"
    listed = bad_request_fields(error)
    assert listed == [f"messages[{i}].callback" for i in range(len(listed))]
    assert str(len(listed)) == info["metadata"]["listed"]
    assert "and 995 more" in error["message"]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("fields", "violation"),
    [
        ({"channels": []}, "messages[0].channels"),
        ({"channels": [None]}, "messages[0].channels[0]"),
        ({"channels": ["sms", 1]}, "messages[0].channels[1]"),
        ({"body": "a\u0000b"}, "messages[0].body"),
        ({"callback": "https://example.com/\u0000"}, "messages[0].callback"),
        ({"send_at": "9999-12-31T23:59:59-01:00"}, "messages[0].send_at"),
        ({"send_at": "0001-01-01T00:00:00+01:00"}, "messages[0].send_at"),
    ],
    ids=[
        "empty-channels",
        "null-channel",
        "number-channel",
        "nul-body",
        "nul-callback",
        "after-year-9999",
        "before-year-1",
    ],
)
def test_hostile_values_are_field_violations(
    stack: Stack, fields: dict[str, Any], violation: str
) -> None:
    message = {"from": custom("Acme"), "to": "441111111111", "body": "Hi", **fields}
    response = stack.post({"messages": [message]})
    assert response.status_code == 400, response.text
    assert bad_request_fields(response.json()) == [violation]


@SQLITE_ONLY
def test_an_empty_channel_list_in_a_message_overrides_the_defaults_and_is_rejected(
    stack: Stack,
) -> None:
    body = {
        "defaults": {"from": custom("Acme"), "channels": ["rcs"]},
        "messages": [{"to": "441111111111", "body": "Hi", "channels": []}],
    }
    response = stack.post(body)
    assert response.status_code == 400
    assert bad_request_fields(response.json()) == ["messages[0].channels"]


def test_an_empty_shared_pool_is_a_400_failed_precondition(stack: Stack) -> None:
    senders.remove_senders(stack.unit_of_work, POOL)
    try:
        message = {"from": {"type": "shared"}, "to": "447000000777", "body": "Hi"}
        response = stack.post({"messages": [message]})
    finally:
        senders.add_senders(stack.unit_of_work, POOL)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == 9 and "shared sender pool is empty" in error["message"]
    assert stack.post({"messages": [message]}).status_code == 200


def test_a_database_lock_held_elsewhere_is_a_503_after_the_lock_timeout(stack: Stack) -> None:
    """JSON carries no deadline: the server's own bound answers, well before Envoy's 30 s."""
    body = {"messages": [{"from": custom("Acme"), "to": "441111111111", "body": "Hi"}]}
    before = stack.stored_count()
    with lock_held(stack.engine, stack.account_id):
        started = time.monotonic()
        response = stack.post(body)
        waited = time.monotonic() - started
    assert response.status_code == 503, response.text
    error = response.json()
    assert error["code"] == 14 and "a lock was not granted in time" in error["message"]
    assert LOCK_TIMEOUT_MS / 1000 * 0.9 <= waited < LOCK_TIMEOUT_MS / 1000 + 2
    assert stack.stored_count() == before
    assert stack.post(body).status_code == 200


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ("batch.defaults.body=injected", "batch.defaults.body", "UNKNOWN_QUERY_PARAMETER"),
        ("batch.defaults.from.type=shared", "batch.defaults.from.type", "UNKNOWN_QUERY_PARAMETER"),
        ("is_dryrun=true", "is_dryrun", "UNKNOWN_QUERY_PARAMETER"),
        ("isDryrun=yes", "isDryrun", "INVALID_BOOLEAN"),
        ("dryRun=1", "dryRun", "INVALID_BOOLEAN"),
        ("dryRun=true&dryRun=false", "dryRun", "REPEATED_PARAMETER"),
    ],
)
def test_only_the_documented_query_parameters_are_accepted(
    stack: Stack, query: str, field: str, reason: str
) -> None:
    body = {"messages": [{"from": custom("Acme"), "to": "441111111111", "body": "Hi"}]}
    before = stack.stored_count()
    response = httpx.post(
        f"{stack.http_url}/message?key={stack.key}&{query}", json=body, timeout=30
    )
    assert response.status_code == 400, response.text
    (bad_request,) = [
        d for d in response.json()["details"] if d["@type"].endswith("google.rpc.BadRequest")
    ]
    assert [(v["field"], v["reason"]) for v in bad_request["fieldViolations"]] == [(field, reason)]
    assert stack.stored_count() == before


def test_a_query_naming_two_keys_is_401_whichever_comes_last(stack: Stack) -> None:
    body = {"messages": [{"from": custom("Acme"), "to": "441111111111", "body": "Hi"}]}
    before = stack.stored_count()
    for query in (f"key=mp_other&key={stack.key}", f"key={stack.key}&key=mp_other"):
        response = httpx.post(f"{stack.http_url}/message?{query}", json=body, timeout=30)
        assert response.status_code == 401
    assert stack.stored_count() == before
    same_twice = f"key={stack.key}&key={stack.key}"
    assert httpx.post(f"{stack.http_url}/message?{same_twice}", json=body).status_code == 200


def test_explicit_false_flags_store_the_messages(stack: Stack) -> None:
    before = stack.stored_count()
    body = {"messages": [{"from": custom("Acme"), "to": "441111111111", "body": "Hi"}]}
    response = stack.post(body, params={"key": stack.key, "isDryrun": "false", "dryRun": "false"})
    assert response.status_code == 200
    assert stack.stored_count() == before + 1


def test_query_violations_come_after_authentication_and_with_the_bodys(stack: Stack) -> None:
    bad_body = {"messages": [{"from": custom("Acme"), "to": "1", "body": "Hi"}]}
    unauthenticated = httpx.post(
        f"{stack.http_url}/message?key=mp_wrong&dryRun=yes", json=bad_body, timeout=30
    )
    assert unauthenticated.status_code == 401
    both = httpx.post(
        f"{stack.http_url}/message?key={stack.key}&dryRun=yes", json=bad_body, timeout=30
    )
    assert both.status_code == 400
    assert bad_request_fields(both.json()) == ["dryRun", "messages[0].to"]


@SQLITE_ONLY
def test_a_client_cannot_spoof_the_original_path_envoy_forwards(stack: Stack) -> None:
    body = {"messages": [{"from": custom("Acme"), "to": "441111111111"}]}
    before = stack.stored_count()
    response = httpx.post(
        f"{stack.http_url}/message?key={stack.key}&batch.defaults.body=injected",
        json=body,
        headers={"x-envoy-original-path": f"/message?key={stack.key}"},
        timeout=30,
    )
    assert response.status_code == 400
    assert bad_request_fields(response.json())[0] == "batch.defaults.body"
    assert stack.stored_count() == before


@SQLITE_ONLY
def test_a_grpc_web_request_gets_a_json_error_not_text(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.http_url}/mplus.v1.MessageService/AddMessages",
        content=b"x",
        headers={"content-type": "application/grpc-web+json"},
        timeout=30,
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == 5


@SQLITE_ONLY
def test_a_json_caller_cannot_shorten_the_deadline_with_a_grpc_timeout_header(
    stack: Stack,
) -> None:
    """Found by the fuzzer: Envoy forwarded `grpc-timeout: 1n` from a JSON request, so the call
    expired before it ran (504, its body without `details`). JSON calls get the server's timeout."""
    before = stack.stored_count()
    body = {"messages": [{"from": custom("sender-id"), "to": "441111111111", "body": "Hi"}]}
    response = stack.post(body, headers={"grpc-timeout": "1n"})
    assert response.status_code == 200, response.text
    assert stack.stored_count() == before + 1
