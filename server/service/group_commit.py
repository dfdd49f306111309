"""Group commit: concurrent requests share one transaction and its one commit (one fsync),
and each hears its outcome only once that commit is done.

Each request stays all or nothing and isolated. The group first runs its requests one after
another with no savepoint: a request refused before it wrote anything (an unknown key, bad
input, a reused id) fails alone at no cost to the others. Should one fail after it wrote (a
conflicting id, a database error, its caller gone between its insert and its end), the
transaction is rolled back and the group runs again, each request in a savepoint of its own,
so that its error undoes only its own writes and reaches only its own caller. A success is
returned only after the group's COMMIT returned: acknowledged means durably stored, as without
grouping. A failed COMMIT (or a broken connection) fails every request whose work had
succeeded, with that error.

The first waiting request becomes the leader: it takes every request queued so far (up to
`max_group`), runs them one after another on one connection, commits, and hands each its
result; requests that arrive meanwhile wait for the writer and form the next group. So a lone
request commits at once (in a transaction of its own, no savepoint), and under load the
commits per second stay few while the requests per commit grow: on SQLite, whose writers take
turns anyway, that turns many fsyncs into one, and on PostgreSQL many round trips (BEGIN, the
key, COMMIT) into one. A request whose caller has gone by the time its group would commit is
rolled back with the group, which then runs again without it.

It belongs in the service layer, not in storage/: it decides which use cases share a
transaction and which caller hears which outcome (a refusal fails alone, a caller gone is
Abandoned), in terms of units of work, while the SQL it needs (savepoints) stays in UnitOfWork.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from server.domain.errors import Abandoned, DomainError
from server.storage.unit_of_work import UnitOfWork

T = TypeVar("T")


class _Job(Generic[T]):
    """One request's work, and then its outcome."""

    def __init__(self, work: Callable[[UnitOfWork], T], abandoned: Callable[[], bool]) -> None:
        self.work = work
        self.abandoned = abandoned
        self.finished = False
        self.kept = False
        """Its savepoint was released: its writes are part of the group's transaction."""
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self, uow: UnitOfWork, in_savepoint: bool) -> bool:
        """In a savepoint of its own, whose rollback undoes its writes and no one else's; or
        in `uow.part()`, without one. False when, without one, it failed in a way that may
        have left writes or a broken transaction (it wrote, or the error is not a refusal of
        the request): the group must then be rolled back and run in savepoints."""
        self.kept, self.result, self.error = False, None, None
        writes = uow.writes()
        try:
            with uow.savepoint() if in_savepoint else uow.part():
                self.result = self.work(uow)
                self.kept = uow.released
        except Exception as error:
            self.error = error
            return in_savepoint or (isinstance(error, DomainError) and uow.writes() == writes)
        # Writes it did not commit would stay in the transaction: a savepoint undoes them.
        return in_savepoint or self.kept or uow.writes() == writes

    def run_alone(self, uow: UnitOfWork) -> None:
        """As the group's only request: the transaction is its own (no savepoint), its work
        commits it, and its errors leave through the unit of work, which translates them."""
        self.kept, self.result, self.error = False, None, None
        self.result = self.work(uow)

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Runs units of work for many threads in shared transactions (see the module's doc)."""

    def __init__(self, unit_of_work: Callable[[], UnitOfWork], max_group: int = 64) -> None:
        self._unit_of_work = unit_of_work
        self._max_group = max_group
        self._writer = threading.Lock()
        """Held by the leader while its group runs and commits."""
        self._queued: deque[_Job[object]] = deque()
        self._queue_lock = threading.Lock()

    def run(
        self, work: Callable[[UnitOfWork], T], abandoned: Callable[[], bool] = lambda: False
    ) -> T:
        """`work` gets a unit of work that is a savepoint of the group's transaction: its
        `commit()` keeps the writes (released savepoint), leaving without it rolls them back.
        Returns what `work` returned once the group committed, or raises `work`'s own error,
        or the group's if the transaction failed. A request that `abandoned()` says has gone
        when its group is about to commit is rolled back and answered Abandoned."""
        job: _Job[T] = _Job(work, abandoned)
        with self._queue_lock:
            self._queued.append(job)  # type: ignore[arg-type]
        with self._writer:
            if not job.finished:  # no earlier leader took it
                self._lead()
        return job.outcome()

    def waiting(self) -> int:
        """Requests queued for the next group."""
        with self._queue_lock:
            return len(self._queued)

    def _lead(self) -> None:
        with self._queue_lock:
            group = [self._queued.popleft() for _ in range(min(len(self._queued), self._max_group))]
        in_savepoints = False
        try:
            while group:
                group, in_savepoints = self._commit(group, in_savepoints)
        finally:
            for job in group:  # only on an unexpected error: nobody is left waiting
                if job.error is None:
                    job.error = RuntimeError("group commit failed")
                job.finished = True

    def _commit(
        self, group: list[_Job[object]], in_savepoints: bool
    ) -> tuple[list[_Job[object]], bool]:
        """Runs and commits the group; returns the jobs to run again in a new transaction,
        and whether in savepoints. None, unless a caller went away before the commit (its
        writes must not be kept), or a request failed after it wrote without a savepoint."""
        try:
            with self._unit_of_work() as uow:
                if len(group) == 1:
                    group[0].run_alone(uow)
                    return self._finish(group), in_savepoints
                if not all(job.run(uow, in_savepoints) for job in group):
                    return group, True  # rolled back on exit, then run in savepoints
                gone = [job for job in group if job.kept and job.abandoned()]
                if gone:
                    for job in gone:
                        job.kept, job.result = False, None
                        job.error = Abandoned()
                        job.finished = True
                    return [job for job in group if job not in gone], in_savepoints
                if any(job.kept for job in group):
                    uow.commit()
        except Exception as error:
            for job in group:
                if job.error is None:
                    job.result, job.error = None, error
        return self._finish(group), in_savepoints

    @staticmethod
    def _finish(group: list[_Job[object]]) -> list[_Job[object]]:
        for job in group:
            job.finished = True
        return []
