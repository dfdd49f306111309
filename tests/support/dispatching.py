"""Real `mplus dispatch` processes a reliability test may kill, a queue filled as AddMessages
fills it, and the database's account of what the dispatchers did."""

from __future__ import annotations

import random
import signal
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, func, make_url, select

from harness.waiting import wait_until
from server.config import Settings
from server.domain.model import MessageDraft, SenderDraft
from server.processes import stop_process
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.storage.database import create_database_engine
from server.storage.tables import delivery_attempts, queued_messages, webhook_deliveries
from server.storage.unit_of_work import UnitOfWork
from tests.support.operator import MPLUS, Cli

CHANNELS = ("rcs", "sms")
MAX_ATTEMPTS = 3
Try = tuple[str, int, str, str | None]
"""One row of delivery_attempts as compared here: channel, attempt, outcome, code."""

EXPECTED: dict[str, tuple[str, str, list[Try]]] = {
    # ending → (final status, receipt code, every try it takes), by README "Delivery"
    "10": ("delivered", "00", [("rcs", 1, "accepted", None)]),
    "22": ("failed", "22", [("rcs", 1, "accepted", None)]),
    "51": ("delivered", "00", [("rcs", 1, "unsupported", None), ("sms", 1, "accepted", None)]),
    "52": ("failed", "30", [("rcs", 1, "unsupported", None), ("sms", 1, "unsupported", None)]),
    "53": (
        "delivered",
        "00",
        [
            ("rcs", 1, "try_later", None),
            ("rcs", 2, "try_later", None),
            ("rcs", 3, "accepted", None),
        ],
    ),
    "54": ("failed", "41", [("rcs", n, "try_later", None) for n in range(1, MAX_ATTEMPTS + 1)]),
    "55": ("failed", "31", [("rcs", 1, "rejected", "31")]),
    "56": ("failed", "32", [("rcs", 1, "rejected", "32")]),
}
"""What each sandbox ending must come to with channels rcs, sms: exactly these tries, in this
order. A try recorded twice would be a message sent by two claims. With a receipt delay an
accepted try records no code: the receipt comes later."""

FAST_DISPATCH = {
    "MPLUS_DISPATCH_INTERVAL_MS": "50",
    "MPLUS_DISPATCH_LEASE_MS": "1000",
    "MPLUS_DISPATCH_BATCH": "20",
    "MPLUS_DISPATCH_RETRY_MS": "100",
    "MPLUS_DISPATCH_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "MPLUS_SANDBOX_RECEIPT_DELAY_MS": "200",
    "MPLUS_WEBHOOK_TIMEOUT_MS": "1000",
    "MPLUS_WEBHOOK_BACKOFF_MS": "100",
    "MPLUS_WEBHOOK_BACKOFF_CAP_MS": "500",
    "MPLUS_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8",
}
"""A lease of a second, so that a killed dispatcher's messages are taken over soon; claims of
20, so that one claim's sends fit well inside it; fast retries; loopback callbacks allowed."""


def reader(database_url: str) -> Engine:
    """An engine for the test's own reads. On SQLite a plain one: its reads take no lock
    (WAL), where the service's engine begins every transaction with the write lock, for which
    it would wait on a dispatcher frozen holding it."""
    if make_url(database_url).get_backend_name() == "sqlite":
        return create_engine(database_url)
    return create_database_engine(database_url, pool_size=2)


def destinations(count: int, endings: Sequence[str], rng: random.Random) -> list[str]:
    """`count` destinations, each ending in one of `endings` (chosen at random), all different."""
    return [f"4477{n:06d}{rng.choice(endings)}" for n in range(count)]


def queue(
    engine: Engine, settings: Settings, key: str, to: Sequence[str], callback: str | None
) -> list[str]:
    """Queues a message to each of `to` as AddMessages does (1000 a transaction); their uuids."""
    add = AddMessages(lambda: UnitOfWork(engine), settings.limits)
    defaults = MessageDraft(
        sender=SenderDraft("custom", "Acme"), body="hello", channels=CHANNELS, callback=callback
    )
    uuids: list[str] = []
    for start in range(0, len(to), 1000):
        drafts = [MessageDraft(to=d) for d in to[start : start + 1000]]
        uuids += [m.message_uuid for m in add(AddMessagesCommand(key, drafts, defaults))]
    return uuids


@dataclass
class Dispatchers:
    """`mplus dispatch` processes, one per slot, each a child the test may SIGKILL."""

    cli: Cli
    running: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: int = 0
    kills: int = 0

    def start(self, slot: int) -> None:
        """Returns once the new process dispatches (its signal handlers are in place)."""
        self.starts += 1
        log = self.cli.state_dir / f"dispatch-{self.starts}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [*MPLUS, "dispatch"],
                # Its own metrics port: make_cli keeps four from MPLUS_DISPATCH_METRICS_PORT.
                env={**self.cli.env, "MPLUS_DISPATCHER_INDEX": str(slot)},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.running[slot] = process

        def dispatching() -> bool:
            assert process.poll() is None, f"mplus dispatch exited: {self.logs()}"
            return b"dispatching with the" in log.read_bytes()

        wait_until(dispatching, "mplus dispatch to start", timeout=30)

    def kill(self, slot: int) -> None:
        """SIGKILL: no goodbye; what it held stays leased until the lease runs out."""
        process = self.running[slot]
        assert process.poll() is None, f"dispatcher {slot} exited: {self.logs()}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.kills += 1

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP (or SIGCONT) to every one: stopped, none claims, posts or records."""
        for process in self.running.values():
            process.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop(self) -> list[int]:
        """SIGTERM to each (thawed first): the exit codes."""
        self.freeze(False)
        return [stop_process(process, timeout=30) for process in self.running.values()]

    def logs(self) -> str:
        logs = sorted(self.cli.state_dir.glob("dispatch-*.log"))
        return "\n".join(log.read_text(errors="replace") for log in logs)


@dataclass(frozen=True)
class Outcome:
    """One message as the database has it once the dispatchers are done."""

    status: str
    code: str | None
    finished_at: datetime | None
    tries: list[Try]
    accepted_at: list[datetime]
    webhooks: list[str]
    """The status of each webhook_deliveries row of the message."""


def outcomes(engine: Engine, uuids: Sequence[str]) -> dict[str, Outcome]:
    """Every message of `uuids`, with its tries (in the order recorded) and receipt rows."""
    wanted = set(uuids)
    tries: dict[str, list[Any]] = defaultdict(list)
    webhooks: dict[str, list[str]] = defaultdict(list)
    with engine.connect() as connection:
        for row in connection.execute(select(delivery_attempts).order_by(delivery_attempts.c.id)):
            tries[row.message_uuid].append(row)
        for row in connection.execute(select(webhook_deliveries)):
            webhooks[row.message_uuid].append(row.status)
        messages = connection.execute(select(queued_messages)).all()
    return {
        row.message_uuid: Outcome(
            row.status,
            row.receipt_code,
            row.finished_at,
            [(t.channel, t.attempt, t.outcome, t.code) for t in tries[row.message_uuid]],
            [t.at for t in tries[row.message_uuid] if t.outcome == "accepted"],
            webhooks[row.message_uuid],
        )
        for row in messages
        if row.message_uuid in wanted
    }


def finished(engine: Engine) -> int:
    """Messages delivered or failed."""
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).where(queued_messages.c.status.in_(["delivered", "failed"]))
        ).scalar_one()


def receipts_delivered(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).where(webhook_deliveries.c.status == "delivered")
        ).scalar_one()


def receipts_leased(engine: Engine, lease: timedelta, within: timedelta) -> set[str]:
    """The messages whose receipt a webhook sender claimed in the last `within` and has not
    recorded yet: a sender at work on it now, or one killed holding it (a claim ends in
    `lease`)."""
    claimed_since = datetime.now(UTC) - within
    with engine.connect() as connection:
        return set(
            connection.execute(
                select(webhook_deliveries.c.message_uuid).where(
                    webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.lease_owner.is_not(None),
                    webhook_deliveries.c.due_at > claimed_since + lease,
                )
            ).scalars()
        )


def wrong(outcome: Outcome, ending: str, receipts_later: bool = True) -> list[str]:
    """What is wrong with a message that ends in `ending`, by EXPECTED: nothing, if sound.
    Without a receipt delay (`receipts_later` False) the sandbox answers with the receipt, so
    an accepted try records its code."""
    status, code, tries = EXPECTED[ending]
    if not receipts_later:
        tries = [(c, n, o, code if o == "accepted" else rc) for c, n, o, rc in tries]
    problems = []
    if (outcome.status, outcome.code) != (status, code):
        problems.append(f"ended {outcome.status} {outcome.code}, not {status} {code}")
    if outcome.tries != tries:
        problems.append(f"tries {outcome.tries}, not {tries}")
    if outcome.finished_at is not None and any(
        at > outcome.finished_at for at in outcome.accepted_at
    ):
        problems.append("accepted after it was final")
    return problems
