"""`mplus up` and `mplus gateway`: gRPC workers, dispatchers and Envoy as child processes, a
child that dies restarted, and everything stopped in an order that loses no acknowledged
request."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from server import gateway
from server.config import Settings
from server.processes import stop_process

log = logging.getLogger(__name__)

CRASH_LOOP_S = 5.0
"""A child that fails this soon after its first start is not restarted: it cannot start (a
taken port, a database not migrated) and trying again would only hide that. One that has run
is always restarted (it may fail to start again while the database is down: with backoff)."""
RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
POLL_S = 0.2
_PR_SET_PDEATHSIG = 1
ACTIVE_REQUESTS_STAT = r"^http\.public\.downstream_rq_active$"
"""Requests in flight on the public listener (the admin listener's own are not counted)."""


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker_preexec() -> None:
    """SIGINT ignored until `mplus serve` installs its own handler (Python keeps an inherited
    SIG_IGN): a stop while it is still importing is then no KeyboardInterrupt traceback;
    `Supervisor.stop` repeats the signal until the worker hears it."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    is_gateway: bool = False
    has_run: bool = False
    """It once ran CRASH_LOOP_S or longer: it can start, so a later exit is worth a restart."""
    quick_exits: int = 0
    """Exits in a row within CRASH_LOOP_S of starting: the restart delay doubles with each."""

    def restart_delay(self, now: float) -> float | None:
        """Seconds to wait before starting it again after it exited, or None: give up."""
        assert self.process is not None and self.process.returncode is not None
        quick = now - self.started_at < CRASH_LOOP_S
        if quick and not self.has_run and self.process.returncode != 0:
            return None
        self.quick_exits = self.quick_exits + 1 if quick else 0
        backoff = 2.0 ** max(0, self.quick_exits - 1)
        return min(MAX_RESTART_DELAY_S, RESTART_DELAY_S * backoff)

    def start(self) -> None:
        # Its own process group: Ctrl-C reaches the supervisor only, which stops children
        # in order (Envoy first) instead of all at once.
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            process_group=0,
            preexec_fn=_die_with_parent if self.is_gateway else _worker_preexec,
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def exited(self) -> bool:
        if self.process is None:
            return False
        if self.process.poll() is not None:
            return True
        if time.monotonic() - self.started_at >= CRASH_LOOP_S:
            self.has_run = True
        return False


@dataclass
class Supervisor:
    settings: Settings
    workers: int
    dispatchers: int = 0
    run_gateway: bool = True
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        mplus = [sys.executable, "-m", "server.cli"]
        base = {**os.environ, "MPLUS_WORKERS": str(self.workers)}
        for index in range(self.workers):
            port = self.settings.worker_port(index)
            env = {**base, "MPLUS_GRPC_PORT": str(port), "MPLUS_WORKER_INDEX": str(index)}
            self.children.append(
                Child(f"worker {index + 1} (gRPC :{port})", [*mplus, "serve"], env)
            )
        for index in range(self.dispatchers):
            env = {**base, "MPLUS_DISPATCHER_INDEX": str(index)}
            self.children.append(Child(f"dispatcher {index + 1}", [*mplus, "dispatch"], env))
        if self.run_gateway:
            config = gateway.write_config(self.settings)
            self.children.append(
                Child("envoy", gateway.envoy_command(config), base, is_gateway=True)
            )

    def run(self) -> int:
        """Until SIGTERM or SIGINT (0), or until a child cannot start (1)."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        for child in self.children:
            child.start()
        failed = None
        while not self.stopping.wait(POLL_S):
            failed = self._restart_exited()
            if failed is not None:
                break
        self.stop()
        if failed is not None:
            assert failed.process is not None
            log.error(
                "%s exited with code %s as it started (its messages are above); "
                "everything is stopped",
                failed.name,
                failed.process.returncode,
            )
            return 1
        return 0

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.stopping.set()

    def _restart_exited(self) -> Child | None:
        """Restarts children that exited; returns one that failed as it started."""
        for child in self.children:
            if not child.exited():
                continue
            assert child.process is not None
            delay = child.restart_delay(time.monotonic())
            if delay is None:
                return child
            log.warning(
                "%s exited with %s; restarting it in %g s",
                child.name,
                child.process.returncode,
                delay,
            )
            if self.stopping.wait(delay):
                return None  # asked to stop meanwhile: start nothing new
            child.start()
        return None

    def stop(self) -> None:
        """Envoy first: it refuses new connections, closes idle ones and answers what is in
        flight; then the workers, side by side, each committing what it still has."""
        gateways = [c for c in self.children if c.is_gateway]
        workers = [c for c in self.children if not c.is_gateway]
        for child in gateways:
            if child.process is not None and child.process.poll() is None:
                drain_gateway(self.settings, timeout=self.settings.shutdown_grace_ms / 1000)
                stop_process(child.process)
        # SIGINT: no drain, Envoy is gone; in-flight calls still commit. Repeated each second
        # for a worker still starting, which ignores it until its handler is in place.
        deadline = time.monotonic() + self.settings.shutdown_grace_ms / 1000 + 5
        running = [c.process for c in workers if c.process is not None]
        while running and time.monotonic() < deadline:
            for process in running:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
            end = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < end and any(p.poll() is None for p in running):
                time.sleep(0.05)
            running = [p for p in running if p.poll() is None]
        for process in running:
            log.warning(
                "worker pid %d did not stop within its grace period; killing it", process.pid
            )
            process.kill()
            process.wait()


def drain_gateway(settings: Settings, timeout: float) -> None:
    """Envoy closes its listeners at once (new connections are refused) and, with the
    `immediate` drain strategy it runs with, each open connection after its current request;
    returns when no request is in flight or after `timeout` seconds."""
    admin = f"http://127.0.0.1:{settings.envoy_admin_port}"
    try:
        _admin_call(f"{admin}/drain_listeners", method="POST")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _active_requests(admin) > 0:
            time.sleep(0.05)
    except OSError as error:  # Envoy is already gone or not answering: nothing to drain
        log.warning("could not drain Envoy: %s", error)


def _active_requests(admin: str) -> int:
    query = urllib.parse.urlencode({"format": "json", "filter": ACTIVE_REQUESTS_STAT})
    stats = json.loads(_admin_call(f"{admin}/stats?{query}"))
    return sum(int(stat.get("value", 0)) for stat in stats.get("stats", []))


def _admin_call(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.read()
