"""Storage failures in the service's terms; SQLAlchemy's exceptions stop at the unit of work."""

from __future__ import annotations


class ConflictingWrite(Exception):
    """A concurrent transaction won a race (a unique value, a deadlock); running again is safe."""


class StorageUnavailable(Exception):
    """The database cannot be reached or did not answer in time; the request's outcome is
    unknown only if the failure hit the commit itself."""


class DeadlineExceeded(StorageUnavailable):
    """The caller's deadline (gRPC) passed before the database work was done: it was stopped
    there, since nobody waits for the answer any more."""


class DatabaseNotAnswering(StorageUnavailable):
    """The database did not answer the server's latest health probe: the server is not ready."""
