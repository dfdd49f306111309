"""Operator use cases: the pool of shared sender IDs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from server.domain.errors import DomainError
from server.domain.validation import normalise_phone_number
from server.service.clock import utc_now
from server.storage.unit_of_work import UnitOfWork


class SenderError(DomainError):
    """A sender number that is not a valid phone number."""


def _normalised(numbers: Iterable[str]) -> list[str]:
    normalised: list[str] = []
    for raw in numbers:
        number = normalise_phone_number(raw)
        if number is None:
            raise SenderError(
                f"{raw!r} is not a phone number in international form "
                "(7 to 15 digits, not starting with 0)"
            )
        normalised.append(number)
    return sorted(set(normalised))


def add_senders(unit_of_work: Callable[[], UnitOfWork], numbers: Iterable[str]) -> int:
    """Adds numbers to the pool; returns how many were new."""
    senders = _normalised(numbers)
    with unit_of_work() as uow:
        added = uow.senders.add(senders, utc_now())
        uow.commit()
    return added


def remove_senders(unit_of_work: Callable[[], UnitOfWork], numbers: Iterable[str]) -> int:
    """Removes numbers from the pool; destinations pinned to them get a fresh pick next time."""
    senders = _normalised(numbers)
    with unit_of_work() as uow:
        removed = uow.senders.remove(senders)
        uow.commit()
    return removed


def list_senders(unit_of_work: Callable[[], UnitOfWork]) -> list[str]:
    with unit_of_work() as uow:
        return uow.senders.pool()
