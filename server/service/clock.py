"""The service's sense of time and chance, injectable so tests can pin them."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Environment:
    """Time, randomness and identifiers: the only nondeterminism the use cases have."""

    now: Callable[[], datetime] = utc_now
    rng: random.Random = field(default_factory=random.SystemRandom)
    new_uuid: Callable[[], str] = new_uuid
