"""gRPC health that follows the database: NOT_SERVING while it does not answer, SERVING again
when it does, so Envoy and orchestrators see an outage instead of a stream of 503s."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealth:
    """A daemon thread that asks `database_answers` every `interval_s` and sets `services`
    to match. The servicer ignores it once shutdown has begun (its NOT_SERVING stands), and
    `stop` ends the thread."""

    def __init__(
        self,
        servicer: health.HealthServicer,
        services: Sequence[str],
        database_answers: Callable[[], bool],
        interval_s: float,
    ) -> None:
        self._servicer = servicer
        self._services = tuple(services)
        self._database_answers = database_answers
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-health", daemon=True)
        self._serving = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.check()

    def answers(self) -> bool:
        """The latest probe's verdict (True until the first): what readiness reports, with no
        query of its own."""
        return self._serving

    def check(self) -> None:
        """One probe; the status changes (and is logged) only when the answer does."""
        try:
            answers = self._database_answers()
        except Exception:  # a probe that breaks must not end the watcher
            log.exception("database health probe failed")
            answers = False
        if answers == self._serving or self._stopped.is_set():
            return
        self._serving = answers
        if answers:
            log.info("database answers again: SERVING")
        else:
            log.warning("database does not answer: NOT_SERVING until it does")
        for service in self._services:
            self._servicer.set(service, SERVING if answers else NOT_SERVING)
