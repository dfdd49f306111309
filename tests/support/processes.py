"""Real processes a reliability test may kill: `mplus serve` and Envoy, each started, killed
(SIGKILL, no goodbye) and started again on the same ports, with state private to one test."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mplus.v1 import message_service_pb2, message_service_pb2_grpc

from harness.envoy import start_envoy
from harness.waiting import wait_until
from server.config import Settings
from server.processes import stop_process
from tests.support.operator import MPLUS, Cli, make_cli

POOL = [f"4477009004{i:02d}" for i in range(4)]
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),  # Envoy back after a kill: reconnect soon
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def health_status(target: str, service: str = "mplus.v1.MessageService") -> int:
    """The server's gRPC health for `service`; raises grpc.RpcError if it does not answer."""
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status)


@dataclass
class Processes:
    """`mplus serve` and Envoy in front of it, each a child this test may SIGKILL."""

    cli: Cli
    key: str
    account_id: str
    server: subprocess.Popen[bytes] | None = None
    envoy: subprocess.Popen[bytes] | None = None
    starts: dict[str, int] = field(default_factory=lambda: {"server": 0, "envoy": 0})

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.cli.env)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.cli.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.cli.http_port}"

    def log(self, name: str) -> Path:
        return self.cli.state_dir / f"{name}-{self.starts[name]}.log"

    def start_server(self) -> None:
        self.starts["server"] += 1
        with self.log("server").open("wb") as sink:
            self.server = subprocess.Popen(
                [*MPLUS, "serve"], env=self.cli.env, stdout=sink, stderr=subprocess.STDOUT
            )
        server = self.server

        def serving() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"mplus serve exited: {self.server_logs()}")
            return health_status(self.grpc_target) == int(health_pb2.HealthCheckResponse.SERVING)

        wait_until(serving, "mplus serve to report SERVING", timeout=30)

    def start_envoy(self) -> None:
        """Returns once Envoy is live and sees the server healthy."""
        self.starts["envoy"] += 1
        self.envoy = start_envoy(self.settings, self.log("envoy"))

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no goodbye; in-flight requests lose their answers."""
        process = self.server if name == "server" else self.envoy
        assert process is not None and process.poll() is None, f"{name} is not running"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def server_logs(self) -> str:
        logs = sorted(self.cli.state_dir.glob("server-*.log"))
        return "\n".join(log.read_text(errors="replace") for log in logs)

    def stop(self) -> None:
        for process in (self.envoy, self.server):
            if process is not None:
                stop_process(process)

    def post(self, batch: list[dict[str, Any]], timeout: float = 10) -> httpx.Response:
        return httpx.post(
            f"{self.http_url}/message",
            params={"key": self.key},
            json={"messages": batch},
            timeout=timeout,
        )


def send_grpc(
    stub: message_service_pb2_grpc.MessageServiceStub,
    batch: list[dict[str, Any]],
    key: str,
    timeout: float = 10,
) -> list[dict[str, Any]]:
    """Native gRPC (x-api-key metadata), answered in the JSON shape for comparison."""
    request = message_service_pb2.AddMessagesRequest()
    json_format.ParseDict({"batch": {"messages": batch}}, request)
    response = stub.AddMessages(request, metadata=[("x-api-key", key)], timeout=timeout)
    messages: list[dict[str, Any]] = json_format.MessageToDict(response)["messages"]
    return messages


def prepared(state_dir: Path, database_url: str | None, **env: str) -> Processes:
    """A migrated database with a sender pool and one account, nothing running yet. Envoy's
    rate limits are off (one key drives all the load) and metrics too (no port to collide)."""
    cli = make_cli(state_dir, database_url)
    cli.env |= {
        "MPLUS_METRICS_PORT": "0",
        "MPLUS_RATE_LIMIT_PER_KEY": "0",
        "MPLUS_RATE_LIMIT_GLOBAL": "0",
        "MPLUS_SHUTDOWN_DRAIN_MS": "0",
    } | env
    cli.ok("db", "upgrade")
    cli.ok("senders", "add", *POOL)
    created = json.loads(cli.ok("accounts", "create", "reliability", "--json"))
    return Processes(cli, created["key"], created["id"])


@contextmanager
def running(processes: Processes) -> Iterator[Processes]:
    """Both started; both stopped at the end, whatever state the test left them in."""
    try:
        processes.start_server()
        processes.start_envoy()
        yield processes
    finally:
        processes.stop()
