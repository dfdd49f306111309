"""`mplus dispatch`: the dispatcher and the receipt webhook sender, each in a loop, until told
to stop. Both take their work from the database under leases, so any number of these processes
may run against one database, and one killed at any moment loses nothing."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from sqlalchemy.exc import DBAPIError

from server import bootstrap
from server.config import Settings
from server.delivery.metrics import BACKLOG_REFRESH_S, DeliveryMetrics
from server.errors import CannotListen
from server.json_logs import FIELDS
from server.metrics import MetricsListener, serve_metrics
from server.storage.errors import StorageUnavailable

log = logging.getLogger("mplus.dispatch")

MAX_OUTAGE_WAIT_S = 5.0
"""The longest pause between two tries while the database is down."""


@dataclass
class WorkLoop:
    """Calls `work` (one round: returns how much it did) until `stop` is set; an idle round
    waits `idle_s`, a failed one waits longer each time up to MAX_OUTAGE_WAIT_S. Neither an
    outage nor a bug ends the loop: what was claimed and not finished is claimed again once
    its lease runs out."""

    name: str
    work: Callable[[], int]
    stop: threading.Event
    idle_s: float

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                done = self.work()
            except (StorageUnavailable, DBAPIError) as error:
                failures += 1
                log.warning(
                    "%s: database unavailable (%s); trying again",
                    self.name,
                    error.__class__.__name__,
                )
            except Exception:
                failures += 1
                log.exception("%s: unexpected error; trying again", self.name)
            else:
                failures = 0
                if done:
                    continue
            self.stop.wait(self._pause(failures))

    def _pause(self, failures: int) -> float:
        if not failures:
            return self.idle_s
        return min(MAX_OUTAGE_WAIT_S, self.idle_s * 2.0**failures)


def run_dispatcher(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT; the sends and posts in flight then finish (each bounded by
    its driver's or webhook's timeout) and are recorded before it returns. Its metrics are
    served on `delivery.process_metrics_port` (0: none) of MPLUS_GRPC_HOST."""
    delivery = settings.delivery
    stop = threading.Event()
    parts = bootstrap.for_dispatcher(settings, stopping=stop.is_set)
    listener = _metrics_listener(parts.metrics, settings)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping after the work in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    idle_s = delivery.poll_interval_ms / 1000
    loops = [
        WorkLoop("dispatcher", parts.dispatcher.run_once, stop, idle_s),
        WorkLoop("webhooks", parts.webhooks.run_once, stop, idle_s),
        *(WorkLoop(name, work, stop, idle_s) for name, work in parts.inbound.items()),
    ]
    if listener is not None:
        loops.append(
            WorkLoop(
                "backlog",
                lambda: parts.metrics.read_backlog(parts.unit_of_work, parts.environment.now()),
                stop,
                BACKLOG_REFRESH_S,
            )
        )
    threads = [threading.Thread(target=loop.run, name=loop.name) for loop in loops]
    for thread in threads:
        thread.start()
    log.info(
        "dispatching with the %s driver",
        delivery.driver,
        extra={
            FIELDS: {
                "driver": delivery.driver,
                "environment": delivery.environment,
                "metrics_port": delivery.process_metrics_port,
            }
        },
    )
    for thread in threads:
        thread.join()
    if listener is not None:
        listener.stop()
    parts.engine.dispose()
    log.info("dispatcher stopped")


def _metrics_listener(metrics: DeliveryMetrics, settings: Settings) -> MetricsListener | None:
    port = settings.delivery.process_metrics_port
    if not port:
        return None
    try:
        return serve_metrics(metrics, settings.grpc_host, port)
    except OSError as error:
        raise CannotListen(
            f"cannot serve the dispatcher's metrics on port {port} of {settings.grpc_host}: "
            f"{error.strerror} (MPLUS_DISPATCH_METRICS_PORT, MPLUS_DISPATCHER_INDEX; 0 turns "
            "them off)"
        ) from None
