"""When `mplus up` restarts a child that exited, and when it gives up."""

from __future__ import annotations

import subprocess
import sys

from server.supervisor import CRASH_LOOP_S, MAX_RESTART_DELAY_S, RESTART_DELAY_S, Child


def exited_child(code: int, ran_for: float, has_run: bool = False) -> tuple[Child, float]:
    child = Child("worker 1", [], {}, has_run=has_run)
    child.process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    child.process.wait()
    child.started_at = 100.0
    return child, 100.0 + ran_for


def test_a_child_that_fails_as_it_first_starts_is_given_up() -> None:
    child, now = exited_child(code=1, ran_for=CRASH_LOOP_S / 2)
    assert child.restart_delay(now) is None


def test_a_child_stopped_cleanly_or_after_running_a_while_is_restarted() -> None:
    stopped, now = exited_child(code=0, ran_for=CRASH_LOOP_S / 2)  # a rolling restart
    assert stopped.restart_delay(now) == RESTART_DELAY_S
    crashed, now = exited_child(code=-9, ran_for=CRASH_LOOP_S * 2)
    assert crashed.restart_delay(now) == RESTART_DELAY_S


def test_one_that_has_run_keeps_being_restarted_with_backoff_while_it_cannot_start() -> None:
    """The database is down: each restart fails at once, until it comes back."""
    child, now = exited_child(code=1, ran_for=CRASH_LOOP_S / 2, has_run=True)
    delays = [child.restart_delay(now) for _ in range(8)]
    assert delays[:4] == [RESTART_DELAY_S * 2**n for n in range(4)]
    assert delays[-1] == MAX_RESTART_DELAY_S
    child.started_at = now - CRASH_LOOP_S * 2  # it ran again for a while, then exited
    assert child.restart_delay(now) == RESTART_DELAY_S
