"""The database goes away under load: requests fail fast with UNAVAILABLE (HTTP 503, the
documented JSON), health says NOT_SERVING, nothing crashes, and service resumes by itself
when the database returns. SQLite's own outages (a locked or read-only file) answer alike."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from harness.waiting import wait_until
from server.storage.tables import queued_messages
from tests.support.figures import record, scaled
from tests.support.operator import make_cli
from tests.support.processes import Processes, health_status, prepared, running

FAIL_FAST_S = 6.0
"""An outage is answered within this: PostgreSQL's connect attempt gives up after 5 s."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class OwnPostgres:
    """A pgserver of this test's own, so that stopping it disturbs no other test."""

    data: Path
    url: str
    user: str | None

    def pg_ctl(self, *args: str) -> None:
        pg_ctl = _postgres_bin() / "pg_ctl"
        subprocess.run(
            [str(pg_ctl), "-D", str(self.data), *args],
            user=self.user,  # pgserver runs PostgreSQL as an unprivileged user when we are root
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # postgres inherits these: no pipe left open to hang on
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )

    def stop(self) -> None:
        """Fast shutdown: sessions are ended mid-transaction, as in a crash of the database."""
        self.pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        socket_dir = make_url(self.url).query["host"]
        assert isinstance(socket_dir, str)
        self.pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "start")


def _postgres_bin() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    data = Path(tempfile.mkdtemp(prefix="mplus-outage-pg-"))
    server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield OwnPostgres(data, server.get_uri(), server.system_user)
    finally:
        if server.get_pid() is None:  # stopped by the test and not started again
            OwnPostgres(data, server.get_uri(), server.system_user).start()
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def message(client_id: str) -> dict[str, Any]:
    return {"from": {"type": "shared"}, "to": "447000000001", "body": "outage", "id": client_id}


def assert_unavailable(response: httpx.Response) -> None:
    """503 with a google.rpc.Status: code 14, a message, an ErrorInfo; never a traceback."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == 14 and body["message"], body
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo", body
    assert "Traceback" not in response.text


@dataclass
class Answer:
    sent_at: float
    seconds: float
    status: int
    text: str
    client_id: str


class Load:
    """Clients posting one message with an id each, as fast as they are answered."""

    def __init__(self, processes: Processes, threads: int = 2) -> None:
        self.processes = processes
        self.answers: list[Answer] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(threads)]

    def _client(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.done.is_set():
                client_id, started = str(uuid.uuid4()), time.monotonic()
                response = http.post(
                    f"{self.processes.http_url}/message",
                    params={"key": self.processes.key},
                    json={"messages": [message(client_id)]},
                )
                self.answers.append(
                    Answer(
                        started,
                        time.monotonic() - started,
                        response.status_code,
                        response.text,
                        client_id,
                    )
                )

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=60)


def health(processes: Processes) -> int:
    return health_status(processes.grpc_target)


def alive(processes: Processes) -> None:
    assert processes.server is not None and processes.server.poll() is None, "server died"
    assert processes.envoy is not None and processes.envoy.poll() is None, "envoy died"


@pytest.mark.postgres
def test_postgres_stopped_under_load_fails_fast_reports_not_serving_and_recovers(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    processes = prepared(tmp_path, own_postgres.url)
    outages = scaled(1, 3)
    fail_times: list[float] = []
    recover_times: list[float] = []
    with running(processes), Load(processes) as load:
        for _ in range(outages):
            wait_until(
                lambda: sum(a.status == 200 for a in load.answers) >= 10, "load to be served"
            )
            stopped_at = time.monotonic()
            own_postgres.stop()

            wait_until(lambda: health(processes) == NOT_SERVING, "health NOT_SERVING", timeout=15)
            for _ in range(3):  # each request during the outage: 503 JSON, soon
                started = time.monotonic()
                response = processes.post([message(str(uuid.uuid4()))])
                fail_times.append(time.monotonic() - started)
                assert_unavailable(response)
                assert fail_times[-1] < FAIL_FAST_S
            alive(processes)

            own_postgres.start()
            started_at = time.monotonic()
            wait_until(lambda: health(processes) == SERVING, "health SERVING again", timeout=20)
            wait_until(
                lambda: processes.post([message(str(uuid.uuid4()))]).status_code == 200,
                "POST /message to succeed again",
                timeout=20,
            )
            recover_times.append(time.monotonic() - started_at)
            # every request the load sent during the outage had its answer soon too
            during = [a for a in load.answers if a.sent_at >= stopped_at and a.status != 200]
            assert during, "the load saw no outage"
        alive(processes)

    statuses = {a.status for a in load.answers}
    assert statuses <= {200, 503}, [a.text for a in load.answers if a.status not in (200, 503)]
    for answer in load.answers:
        if answer.status == 503:
            assert_unavailable(httpx.Response(503, text=answer.text))
            assert answer.seconds < FAIL_FAST_S, answer
    assert "Traceback" not in processes.server_logs()
    acknowledged = {a.client_id for a in load.answers if a.status == 200}
    engine = create_engine(make_url(own_postgres.url).set(drivername="postgresql+psycopg"))
    with engine.connect() as connection:
        stored = set(connection.execute(select(queued_messages.c.client_id)).scalars())
    engine.dispose()
    assert acknowledged <= stored  # a 200 before the outage still stands after it
    record(
        "outage",
        database="postgresql",
        outages=outages,
        requests=len(load.answers) + len(fail_times),
        acknowledged=len(acknowledged),
        unavailable=sum(a.status == 503 for a in load.answers) + len(fail_times),
        other_errors=sum(a.status not in (200, 503) for a in load.answers),
        max_seconds_to_fail=round(max(fail_times + [a.seconds for a in load.answers]), 3),
        max_seconds_to_recover=round(max(recover_times), 3),
    )


@pytest.mark.postgres
def test_readyz_is_a_json_503_while_postgres_is_down_and_healthz_stays_200(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    """The probes through Envoy: readiness follows the server's database health, liveness
    (Envoy's own answer) does not, so an orchestrator stops routing and restarts nothing."""
    processes = prepared(tmp_path, own_postgres.url)
    url = processes.http_url

    def readyz() -> httpx.Response:
        return httpx.get(f"{url}/readyz", timeout=10)

    with running(processes):
        assert readyz().json() == {"status": "ready"}
        own_postgres.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: readyz().status_code == 503, "GET /readyz 503", timeout=15)
        seconds_to_notice = time.monotonic() - stopped_at
        not_ready = readyz()
        assert_unavailable(not_ready)
        assert not_ready.headers["content-type"] == "application/json"
        assert not_ready.json()["details"][0]["reason"] == "DATABASE_UNAVAILABLE"
        healthz = httpx.get(f"{url}/healthz", timeout=10)
        assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
        alive(processes)

        own_postgres.start()
        started_at = time.monotonic()
        wait_until(lambda: readyz().status_code == 200, "GET /readyz 200 again", timeout=20)
        seconds_to_recover = time.monotonic() - started_at
    record(
        "outage-readyz",
        database="postgresql",
        seconds_to_notice=round(seconds_to_notice, 3),
        seconds_to_recover=round(seconds_to_recover, 3),
    )


@contextmanager
def sqlite_stack(tmp_path: Path) -> Iterator[tuple[Processes, Path]]:
    database = tmp_path / "mplus.db"
    processes = prepared(tmp_path, f"sqlite:///{database}", MPLUS_DB_LOCK_TIMEOUT_MS="1000")
    with running(processes):
        yield processes, database


def test_sqlite_locked_by_another_connection_answers_503_json_then_recovers(
    tmp_path: Path,
) -> None:
    with sqlite_stack(tmp_path) as (processes, database):
        assert processes.post([message(str(uuid.uuid4()))]).status_code == 200
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            response = processes.post([message(str(uuid.uuid4()))])
            seconds = time.monotonic() - started
            assert_unavailable(response)
            assert seconds < FAIL_FAST_S
            alive(processes)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert processes.post([message(str(uuid.uuid4()))]).status_code == 200
        assert "Traceback" not in processes.server_logs()
    record("outage-sqlite-locked", seconds_to_fail=round(seconds, 3))


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Not writable even by root: immutable where chattr works, mode 0444 besides."""
    mode = path.stat().st_mode
    path.chmod(0o444)
    immutable = os.geteuid() == 0 and _chattr("+i", path)
    if os.geteuid() == 0 and not immutable:
        path.chmod(mode)
        pytest.skip("root ignores file modes and chattr is not available here")
    try:
        yield
    finally:
        if immutable:
            _chattr("-i", path)
        path.chmod(mode)


def _chattr(flag: str, path: Path) -> bool:
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    return subprocess.run([chattr, flag, str(path)], capture_output=True).returncode == 0


def test_sqlite_read_only_file_answers_503_json_never_500(tmp_path: Path) -> None:
    database = tmp_path / "mplus.db"
    processes = prepared(tmp_path, f"sqlite:///{database}")
    with read_only(database), running(processes):
        started = time.monotonic()
        response = processes.post([message(str(uuid.uuid4()))])
        seconds = time.monotonic() - started
        assert_unavailable(response)
        assert seconds < FAIL_FAST_S
        alive(processes)
        assert "Traceback" not in processes.server_logs()
    record("outage-sqlite-read-only", seconds_to_fail=round(seconds, 3))


@pytest.mark.parametrize("command", [("serve",), ("accounts", "list")])
def test_a_database_down_at_startup_is_a_message_not_a_traceback(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, "postgresql://mplus:secret@127.0.0.1:1/mplus")
    cli.env["MPLUS_METRICS_PORT"] = "0"
    refused = cli.fails(*command)
    assert "cannot reach the database at postgresql" in refused.stderr
    assert "secret" not in refused.stderr
