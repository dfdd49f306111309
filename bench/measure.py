"""One case against one target: a checked request, then bounded h2load runs with the CPU the
server (and Envoy, over JSON) spent; medians over the repeats."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from mplus.v1 import message_service_pb2

from bench import h2load
from bench.cases import Case
from bench.stack import Target, cpu_seconds

GRPC_PATH = "/mplus.v1.MessageService/AddMessages"
WARM_UP_S = 1.0
"""A discarded h2load run before each measured one: fresh connections, warm caches."""


def check_once(target: Target, case: Case, body: bytes) -> None:
    """One request of the case must be accepted: h2load counts a gRPC error as a 200."""
    if case.transport == "grpc":
        with grpc.insecure_channel(target.grpc_target) as channel:
            call = channel.unary_unary(
                GRPC_PATH, request_serializer=None, response_deserializer=None
            )
            response = message_service_pb2.AddMessagesResponse.FromString(
                call(body[5:], metadata=(("x-api-key", target.key),), timeout=30)
            )
        accepted = len(response.messages)
    else:
        reply = httpx.post(
            f"http://127.0.0.1:{target.http_port}/message",
            params={"key": target.key},
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        reply.raise_for_status()
        accepted = len(reply.json()["messages"])
    if accepted != case.messages:
        raise h2load.LoadFailed(f"{target.name} {case.name}: {accepted} messages accepted")


@dataclass(frozen=True)
class Run:
    """One measured h2load run, with the CPU the server (and Envoy, over JSON) spent in it."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s_per_1000: float
    envoy_cpu_s_per_1000: float | None


def _url_and_headers(target: Target, case: Case) -> tuple[str, dict[str, str]]:
    if case.transport == "grpc":
        url = f"http://{target.grpc_target}{GRPC_PATH}"
        return url, {"content-type": "application/grpc", "te": "trailers", "x-api-key": target.key}
    url = f"http://127.0.0.1:{target.http_port}/message?key={target.key}"
    return url, {"content-type": "application/json"}


def measure(tool: str, target: Target, case: Case, body: Path, seconds: float) -> Run:
    url, headers = _url_and_headers(target, case)
    h2load.run(tool, url, body, headers, case.clients, WARM_UP_S)
    server_before, envoy_before = cpu_seconds(target.server_pid), cpu_seconds(target.envoy_pid)
    sample = h2load.run(tool, url, body, headers, case.clients, seconds)
    server_cpu = cpu_seconds(target.server_pid) - server_before
    envoy_cpu = cpu_seconds(target.envoy_pid) - envoy_before
    thousands = sample.succeeded * case.messages / 1000
    return Run(
        sample.requests_per_s,
        sample.p50_ms,
        sample.p99_ms,
        server_cpu / thousands,
        envoy_cpu / thousands if case.transport == "json" else None,
    )


def send(tool: str, target: Target, case: Case, body: Path, requests: int) -> None:
    """Exactly `requests` requests of the case, every one accepted."""
    url, headers = _url_and_headers(target, case)
    h2load.run(tool, url, body, headers, case.clients, requests=requests)


def median_rate(runs: list[Run]) -> float:
    """Median requests/s."""
    return statistics.median(r.requests_per_s for r in runs)


def median_of(runs: list[Run], messages: int) -> dict[str, float | None]:
    requests_per_s = median_rate(runs)
    envoy = [r.envoy_cpu_s_per_1000 for r in runs if r.envoy_cpu_s_per_1000 is not None]
    return {
        "requests_per_s": requests_per_s,
        "messages_per_s": requests_per_s * messages,
        "p50_ms": statistics.median(r.p50_ms for r in runs),
        "p99_ms": statistics.median(r.p99_ms for r in runs),
        "server_cpu_s_per_1000": statistics.median(r.server_cpu_s_per_1000 for r in runs),
        "envoy_cpu_s_per_1000": statistics.median(envoy) if envoy else None,
    }
