"""Health follows the database's answers, and never undoes shutdown's NOT_SERVING."""

from __future__ import annotations

from grpc_health.v1 import health

from server.api.health import NOT_SERVING, SERVING, DatabaseHealth


def status(servicer: health.HealthServicer, service: str) -> int:
    with servicer._lock:  # the stock servicer keeps its statuses private
        return int(servicer._server_status[service])


def test_health_follows_the_database_and_logs_only_changes() -> None:
    servicer = health.HealthServicer()
    answers = [False, False, True]
    watcher = DatabaseHealth(servicer, ("", "svc"), lambda: answers.pop(0), interval_s=60)
    for service in ("", "svc"):
        servicer.set(service, SERVING)

    assert watcher.answers()  # until the first probe says otherwise
    watcher.check()
    assert (status(servicer, ""), status(servicer, "svc")) == (NOT_SERVING, NOT_SERVING)
    assert not watcher.answers()  # what readiness (GET /readyz) reports
    watcher.check()
    assert status(servicer, "svc") == NOT_SERVING
    watcher.check()
    assert (status(servicer, ""), status(servicer, "svc")) == (SERVING, SERVING)
    assert watcher.answers()


def test_a_probe_that_raises_counts_as_down() -> None:
    def broken() -> bool:
        raise RuntimeError("driver bug")

    servicer = health.HealthServicer()
    servicer.set("", SERVING)
    DatabaseHealth(servicer, ("",), broken, interval_s=60).check()
    assert status(servicer, "") == NOT_SERVING


def test_shutdown_keeps_not_serving_when_the_database_comes_back() -> None:
    servicer = health.HealthServicer()
    answers = [False, True]
    watcher = DatabaseHealth(servicer, ("",), lambda: answers.pop(0), interval_s=0.01)
    servicer.set("", SERVING)
    watcher.check()
    servicer.enter_graceful_shutdown()
    watcher.check()
    assert status(servicer, "") == NOT_SERVING
    watcher.start()
    watcher.stop()
