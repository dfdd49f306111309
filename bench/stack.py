"""The servers under test, each with its own Envoy, on private ports: the no-op ceiling, and
`mplus serve` on a fresh migrated database."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from harness.envoy import start_envoy
from harness.ports import free_port
from harness.waiting import wait_for_serving
from server.config import Settings
from server.processes import stop_process
from server.service import accounts, senders
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.tables import queued_messages
from server.storage.unit_of_work import UnitOfWork

POOL = tuple(f"4477009004{i:02d}" for i in range(20))


@dataclass(frozen=True)
class Target:
    """Where one server answers: gRPC directly, and JSON through its Envoy."""

    name: str
    grpc_port: int
    http_port: int
    key: str
    server_pid: int
    envoy_pid: int

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def _serve(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(command, env=env, stdout=sink, stderr=sink)


@contextmanager
def _with_envoy(
    name: str, server: subprocess.Popen[bytes], grpc_port: int, key: str, state: Path
) -> Iterator[Target]:
    with ExitStack() as cleanup:
        cleanup.callback(stop_process, server)
        wait_for_serving(f"127.0.0.1:{grpc_port}")
        settings = dataclasses.replace(
            Settings(),
            state_dir=state,
            grpc_port=grpc_port,
            http_port=free_port(),
            envoy_admin_port=free_port(),
            rate_limit_per_key=0,  # one key drives every case: measure the service, not limits
            rate_limit_global=0,
        )
        envoy = start_envoy(settings, state / "envoy.log")
        cleanup.callback(stop_process, envoy)
        yield Target(name, grpc_port, settings.http_port, key, server.pid, envoy.pid)


def _environment(state: Path, grpc_port: int, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "MPLUS_DATABASE_URL": database_url,
        "MPLUS_STATE_DIR": str(state),
        "MPLUS_GRPC_PORT": str(grpc_port),
        "MPLUS_METRICS_PORT": "0",
        "MPLUS_SHUTDOWN_DRAIN_MS": "0",
    }


@contextmanager
def noop_stack(state: Path) -> Iterator[Target]:
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _environment(state, port, f"sqlite:///{state / 'unused.db'}")
    server = _serve([sys.executable, "-m", "bench.noop"], env, state / "server.log")
    with _with_envoy("no-op", server, port, "no-key-needed", state) as target:
        yield target


@contextmanager
def mplus_stack(state: Path, database_url: str, name: str = "mplus") -> Iterator[Target]:
    """`mplus serve` on `database_url`, migrated, with a shared pool and one account."""
    state.mkdir(parents=True, exist_ok=True)
    engine = create_database_engine(database_url)
    upgrade(engine)
    senders.add_senders(lambda: UnitOfWork(engine), POOL)
    key = accounts.create_account(lambda: UnitOfWork(engine), "bench").key
    engine.dispose()
    port = free_port()
    env = _environment(state, port, database_url)
    server = _serve([sys.executable, "-m", "server.cli", "serve"], env, state / "server.log")
    with _with_envoy(name, server, port, key, state) as target:
        yield target


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a running process has used (Linux /proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory_kib(pid: int) -> tuple[int, int]:
    """Resident memory now and its peak so far (VmRSS, VmHWM), in KiB (Linux /proc)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def stored_messages(database_url: str) -> int:
    engine = create_database_engine(database_url)
    try:
        with engine.connect() as connection:
            query = select(func.count()).select_from(queued_messages)
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()
