"""Polling until something holds: a condition, or a gRPC server's health reporting SERVING."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (httpx.HTTPError, OSError, grpc.RpcError):
            pass  # not up yet
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_serving(target: str) -> None:
    """Polls the gRPC health service at `target` until it reports SERVING."""
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        wait_until(
            lambda: (
                health.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING
            ),
            f"gRPC server at {target} to serve",
        )
