"""What `mplus up` hands each child: its index, from which it takes its ports."""

from __future__ import annotations

from server.config import Settings
from server.supervisor import Supervisor


def test_each_dispatcher_and_each_worker_is_told_its_index() -> None:
    supervisor = Supervisor(Settings(), workers=2, dispatchers=3, run_gateway=False)
    workers = [c.env for c in supervisor.children if c.command[-1] == "serve"]
    dispatchers = [c.env for c in supervisor.children if c.command[-1] == "dispatch"]
    assert [env["MPLUS_WORKER_INDEX"] for env in workers] == ["0", "1"]
    assert [env["MPLUS_DISPATCHER_INDEX"] for env in dispatchers] == ["0", "1", "2"]
    assert all("MPLUS_DISPATCHER_INDEX" not in env for env in workers)
