"""The probes on the gateway's port, through the real Envoy: `GET /healthz` (Envoy's own answer)
and `GET /readyz` (a server's, mplus.v1.HealthService). The database being down is in
tests/reliability/test_outage.py, where a PostgreSQL of the test's own can be stopped."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from harness.waiting import wait_until
from tests.support.processes import prepared, running
from tests.support.stack import SQLITE_ONLY, Stack, extra_gateway

SLOW = 0.05
"""One request per 20 s: no token comes back while a test runs."""


def assert_json(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    body: dict[str, object] = response.json()
    return body


@SQLITE_ONLY
def test_healthz_is_answered_by_envoy_itself_with_no_key(stack: Stack) -> None:
    response = httpx.get(f"{stack.http_url}/healthz", timeout=10)
    assert assert_json(response, 200) == {"status": "ok"}
    assert "x-envoy-upstream-service-time" not in response.headers  # no server was asked
    refused = httpx.post(f"{stack.http_url}/healthz", timeout=10)
    assert assert_json(refused, 404)["code"] == 5  # other methods, as on every path: JSON 404


def test_readyz_says_ready_while_a_server_and_its_database_answer(stack: Stack) -> None:
    response = httpx.get(f"{stack.http_url}/readyz", timeout=10)
    assert assert_json(response, 200) == {"status": "ready"}


@SQLITE_ONLY
def test_readyz_takes_no_query_parameter(stack: Stack) -> None:
    response = httpx.get(f"{stack.http_url}/readyz", params={"key": stack.key}, timeout=10)
    assert assert_json(response, 400)["code"] == 3


@SQLITE_ONLY
def test_probes_are_not_rate_limited(stack: Stack) -> None:
    """A probe refused under load would restart, or take out of service, a working gateway."""
    with extra_gateway(stack, rate_limit_per_key=SLOW, rate_limit_global=SLOW) as limited:
        url = f"http://127.0.0.1:{limited.http_port}"
        body = {"messages": [{"from": {"type": "shared"}, "to": "441111111111", "body": "Hi"}]}
        posted = [
            httpx.post(f"{url}/message", params={"key": stack.key}, json=body, timeout=10)
            for _ in range(2)
        ]
        assert [p.status_code for p in posted] == [200, 429]  # the bucket is empty
        for _ in range(10):
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
            assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200


def test_readyz_is_a_json_503_while_no_server_answers(tmp_path: Path) -> None:
    processes = prepared(tmp_path, f"sqlite:///{tmp_path / 'mplus.db'}")
    with running(processes):
        url = processes.http_url
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        processes.kill("server")
        killed_at = time.monotonic()
        answers: list[httpx.Response] = []
        # At once (the connection refused) and after Envoy's checks took the server out
        # (two failed checks a second apart): the gateway's own 503, as JSON, each time.
        while time.monotonic() - killed_at < 3.5:
            answers.append(httpx.get(f"{url}/readyz", timeout=10))
            time.sleep(0.1)
        for answer in answers:
            body = assert_json(answer, 503)
            assert body["code"] == 14 and body["message"] and body["details"] == [], body
        assert assert_json(httpx.get(f"{url}/healthz", timeout=10), 200) == {"status": "ok"}
        processes.start_server()
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200, "ready again")
