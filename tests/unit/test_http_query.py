"""The JSON query string rule, applied to the original path Envoy forwards."""

from __future__ import annotations

import pytest

from server.api.http_query import (
    CANCEL_BATCH,
    GET_BATCH,
    LIST_PENDING_BATCHES,
    LIST_RECEIPT_CODES,
    QueryRule,
    original_query,
    query_values,
    query_violations,
)


def violations(path: str) -> list[tuple[str, str]]:
    metadata = [("x-envoy-original-path", path), ("x-envoy-original-method", "POST")]
    return [(v.field, v.reason) for v in query_violations(original_query(metadata))]


@pytest.mark.parametrize(
    "path",
    [
        "/message?key=k",
        "/message?key=k&isDryrun=true",
        "/message?dryRun=false&key=k",
        "/message?key=k&isDryrun=false&dryRun=true",
        "/message",
    ],
)
def test_the_documented_parameters_pass(path: str) -> None:
    assert violations(path) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/message?key=k&batch.defaults.body=x",
            [("batch.defaults.body", "UNKNOWN_QUERY_PARAMETER")],
        ),
        ("/message?key=k&is_dryrun=true", [("is_dryrun", "UNKNOWN_QUERY_PARAMETER")]),
        ("/message?key=k&=x", [("(empty name)", "UNKNOWN_QUERY_PARAMETER")]),
        ("/message?key=&dryRun=true", [("key", "EMPTY_KEY")]),  # an x-api-key would pass it
        ("/message?dryRun=true&dryRun=true", [("dryRun", "REPEATED_PARAMETER")]),
        ("/message?key=k&dryRun", [("dryRun", "INVALID_BOOLEAN")]),
        ("/message?key=k&isDryrun=TRUE", [("isDryrun", "INVALID_BOOLEAN")]),
        ("/message?key=k&isDryrun=1", [("isDryrun", "INVALID_BOOLEAN")]),
        ("/message?dry%52un=1", [("dryRun", "INVALID_BOOLEAN")]),  # names are decoded
        (
            "/message?key=k&dryRun=yes&batch.messages=x",
            [("batch.messages", "UNKNOWN_QUERY_PARAMETER"), ("dryRun", "INVALID_BOOLEAN")],
        ),
    ],
)
def test_anything_else_is_named(path: str, expected: list[tuple[str, str]]) -> None:
    assert violations(path) == expected


def test_native_grpc_has_no_query_to_check() -> None:
    assert query_violations(original_query([("x-api-key", "k")])) == []


def test_every_value_of_a_repeated_parameter_is_seen() -> None:
    metadata = [("x-envoy-original-path", "/message?key=a&ke%79=b&dryRun=true")]
    assert query_values(original_query(metadata), "key") == ["a", "b"]


@pytest.mark.parametrize(
    ("rule", "path", "expected"),
    [
        (GET_BATCH, "/batch/b?key=k&details=true", []),
        (GET_BATCH, "/batch/b?details=false", []),
        (GET_BATCH, "/batch/b?key=k&details=1", [("details", "INVALID_BOOLEAN")]),
        (GET_BATCH, "/batch/b?details=true&details=true", [("details", "REPEATED_PARAMETER")]),
        (GET_BATCH, "/batch/b?key=k&batchUuid=c", [("batchUuid", "UNKNOWN_QUERY_PARAMETER")]),
        (GET_BATCH, "/batch/b?key=k&isDryrun=true", [("isDryrun", "UNKNOWN_QUERY_PARAMETER")]),
        (GET_BATCH, "/batch/b?key=", [("key", "EMPTY_KEY")]),
        (LIST_PENDING_BATCHES, "/batch?key=k", []),
        (
            LIST_PENDING_BATCHES,
            "/batch?key=k&details=true",
            [("details", "UNKNOWN_QUERY_PARAMETER")],
        ),
        (CANCEL_BATCH, "/batch/b?key=k", []),
        (CANCEL_BATCH, "/batch/b?key=k&details=true", [("details", "UNKNOWN_QUERY_PARAMETER")]),
        (LIST_RECEIPT_CODES, "/dr-responses", []),
        (LIST_RECEIPT_CODES, "/dr-responses?key=k", [("key", "UNKNOWN_QUERY_PARAMETER")]),
    ],
)
def test_each_endpoint_takes_its_own_parameters(
    rule: QueryRule, path: str, expected: list[tuple[str, str]]
) -> None:
    query = original_query([("x-envoy-original-path", path)])
    assert [(v.field, v.reason) for v in query_violations(query, rule)] == expected


def test_an_unknown_parameter_names_the_endpoint_and_what_it_takes() -> None:
    query = original_query([("x-envoy-original-path", "/dr-responses?key=k")])
    (violation,) = query_violations(query, LIST_RECEIPT_CODES)
    assert violation.description == "is not a query parameter of GET /dr-responses (it takes none)"
    query = original_query([("x-envoy-original-path", "/batch/b?x=1")])
    (violation,) = query_violations(query, GET_BATCH)
    assert violation.description == (
        "is not a query parameter of GET /batch/{batch-uuid} (allowed: key, details)"
    )
