"""`mplus` run as an operator runs it: one real subprocess per command, or `mplus up` in the
background, with state (and the ports it listens on) private to one test."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.ports import consecutive_free_ports, free_port
from harness.waiting import wait_until

MPLUS = [sys.executable, "-m", "server.cli"]
SPEC_SINGLE_MESSAGE = {
    "messages": [
        {
            "from": {"type": "custom", "value": "sender-id"},
            "to": "441111111111",
            "body": "This is a test message!",
        }
    ]
}


@dataclass
class Cli:
    """Runs `mplus` with MPLUS_STATE_DIR (and maybe MPLUS_DATABASE_URL) set for one test."""

    env: dict[str, str]
    state_dir: Path
    grpc_port: int
    http_port: int
    admin_port: int

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MPLUS, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def fails(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A refused command: non-zero exit, a message on stderr, never a traceback."""
        result = self.run(*args)
        assert result.returncode != 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip(), "the refusal says nothing on stderr"
        return result

    def accounts(self) -> dict[str, int]:
        """Account name → active key count, from `accounts list --json`."""
        listed = json.loads(self.ok("accounts", "list", "--json"))
        return {entry["name"]: entry["active_keys"] for entry in listed}

    def senders(self) -> list[str]:
        return self.ok("senders", "list").split()


def make_cli(state_dir: Path, database_url: str | None, workers: int = 1) -> Cli:
    """`workers` gRPC ports from grpc_port on are kept free for `mplus up --workers`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MPLUS_")}
    grpc_port, http_port, admin_port = consecutive_free_ports(workers), free_port(), free_port()
    env |= {
        "MPLUS_STATE_DIR": str(state_dir),
        "MPLUS_GRPC_PORT": str(grpc_port),
        "MPLUS_HTTP_PORT": str(http_port),
        "MPLUS_ENVOY_ADMIN_PORT": str(admin_port),
        "MPLUS_METRICS_PORT": str(free_port()),
        "MPLUS_DISPATCH_METRICS_PORT": str(consecutive_free_ports(4)),  # up to 4 dispatchers
    }
    if database_url is not None:
        env["MPLUS_DATABASE_URL"] = database_url
    return Cli(env, state_dir, grpc_port, http_port, admin_port)


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_up(cli: Cli, *args: str) -> Iterator[Up]:
    """`mplus up ARGS` in its own session (as a terminal's foreground job), stopped at the
    end as an operator would (SIGTERM: it stops its children in order); SIGKILL only if that
    hangs, and then its children, each in a process group of its own, die with it (they get
    SIGTERM when their parent dies)."""
    log = cli.state_dir / "up.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*MPLUS, "up", *args],
            env=cli.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Up(process, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def post(cli: Cli, key: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{cli.http_port}/message",
        params={"key": key},
        json=SPEC_SINGLE_MESSAGE,
        timeout=5,
    )


def wait_until_serving(cli: Cli, up: Up, key: str) -> dict[str, Any]:
    answered: list[httpx.Response] = []

    def accepted() -> bool:
        if up.process.poll() is not None:
            raise AssertionError(f"mplus up exited with {up.process.returncode}: {up.output()}")
        try:
            response = post(cli, key)
        except httpx.HTTPError:
            return False
        answered.append(response)
        return response.status_code == 200

    wait_until(accepted, "POST /message to return 200 through `mplus up`", timeout=30)
    body: dict[str, Any] = answered[-1].json()
    return body


def envoy_host_stats(cli: Cli, stat: str) -> dict[str, str]:
    """Envoy's view of each upstream of `mplus up`: `127.0.0.1:PORT` → the value of `stat`."""
    clusters = httpx.get(f"http://127.0.0.1:{cli.admin_port}/clusters", timeout=5).text
    pattern = re.compile(rf"^mplus_grpc::([\d.]+:\d+)::{stat}::(.*)$", re.MULTILINE)
    return dict(pattern.findall(clusters))


def balanced_over_workers(cli: Cli, key: str, workers: int = 2) -> bool:
    """Envoy balances over every worker: its health checks pass on all, and 32 dry runs from
    8 threads reach each at least 32 / (2 x workers) times. Neither alone is proof: just after
    a start Envoy is in panic mode and spreads requests over workers that failed their first
    check; then, for a few seconds after /clusters shows all healthy, it may still send nearly
    all concurrent traffic to one."""

    def healthy() -> bool:
        flags = envoy_host_stats(cli, "health_flags")
        return len(flags) == workers and set(flags.values()) == {"healthy"}

    def dry_run(_: int) -> int:
        return httpx.post(
            f"http://127.0.0.1:{cli.http_port}/message",
            params={"key": key, "dryRun": "true"},
            json=SPEC_SINGLE_MESSAGE,
            timeout=5,
        ).status_code

    if not healthy():
        return False
    before = envoy_host_stats(cli, "rq_total")
    with ThreadPoolExecutor(8) as pool:
        if set(pool.map(dry_run, range(32))) != {200}:
            return False  # a worker still starting
    after = envoy_host_stats(cli, "rq_total")
    share = 32 // (2 * workers)
    balanced = all(int(after[h]) - int(before.get(h, 0)) >= share for h in after)
    return len(after) == workers and balanced and healthy()


def closed(port: int) -> bool:
    """Nothing accepts a connection on the loopback `port` (any more)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True
