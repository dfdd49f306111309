"""Properties of the domain rules over generated inputs: merge, validation, normalisation,
fingerprints, and sticky shared senders against a real SQLite unit of work.

Examples are derandomized so that CI sees the same cases every run; `MPLUS_SOAK=1` runs many
more of them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from server.config import Limits
from server.domain.errors import InvalidRequest
from server.domain.model import MessageDraft, OutgoingMessage, SenderDraft
from server.domain.validation import validate_messages
from server.service import accounts, senders
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.service.clock import Environment
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.tables import sender_pins
from server.storage.unit_of_work import UnitOfWork
from tests.support.figures import scaled

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits()
PROPERTIES = settings(
    deadline=None,  # the shared 2-core machine makes timings noise
    derandomize=True,  # the same examples in every CI run
    database=None,  # nothing written beside the sources
    max_examples=scaled(150, 3000),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
VIOLATION_FIELD = re.compile(
    r"messages(\[(?P<index>\d+)\]\.(to|from|from\.type|from\.value|body|callback|id|send_at"
    r"|channels|channels\[\d+\]))?"
)

# Anything a string field may hold: control characters, surrogates, huge strings included.
any_text = st.text(st.characters(exclude_categories=()), max_size=40) | st.sampled_from(
    ["", " ", "\x00", "\ud800", "+", "0", "x" * 2000, "1" * 16]
)
optional_text = st.none() | any_text


@st.composite
def any_draft(draw: st.DrawFn) -> MessageDraft:
    """A message or defaults with every field arbitrary or absent."""
    sender = draw(st.none() | st.builds(SenderDraft, any_text | st.just("custom"), any_text))
    channels = draw(st.none() | st.lists(any_text | st.sampled_from(["sms", "rcs"])).map(tuple))
    return MessageDraft(
        to=draw(optional_text),
        sender=sender,
        body=draw(optional_text),
        callback=draw(optional_text),
        channels=channels,
        id=draw(optional_text | st.uuids().map(str)),
        send_at=draw(optional_text),
    )


@st.composite
def phone_number(draw: st.DrawFn) -> str:
    """A valid `to` as a caller may write it: optional '+', spaces anywhere after it."""
    number = draw(st.sampled_from("123456789")) + draw(
        st.text("0123456789", min_size=6, max_size=14)
    )
    spaced = "".join(
        c + (" " if draw(st.booleans()) and draw(st.booleans()) else "") for c in number
    )
    return ("+" if draw(st.booleans()) else "") + spaced


@st.composite
def valid_sender(draw: st.DrawFn) -> SenderDraft:
    kind = draw(st.sampled_from(["alphanumeric", "numeric", "shared"]))
    if kind == "shared":
        return SenderDraft("shared", "")
    if kind == "numeric":
        return SenderDraft("custom", draw(st.text("0123456789", min_size=3, max_size=15)))
    inner = draw(st.text("ABCxyz019 -_.&", max_size=9))
    return SenderDraft("custom", "A" + inner + draw(st.sampled_from("Zz9.")))


body_text = st.text(
    st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from("\t\n\r"),
    min_size=1,
    max_size=200,
).filter(lambda s: bool(s.strip()))


@st.composite
def send_at(draw: st.DrawFn) -> str:
    """An ISO 8601 instant from a year back to 179 days ahead, in the forms the rules take."""
    offset = draw(st.integers(-365 * 86400, 179 * 86400))
    instant = NOW + timedelta(seconds=offset)
    form = draw(st.sampled_from(["Z", "none", "+02:00", "-0530", "+01"]))
    if form in ("Z", "none"):
        return instant.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if form == "Z" else "")
    hours, minutes = int(form[1:3]), int(form[-2:]) if len(form) > 3 else 0
    delta = timedelta(hours=hours, minutes=minutes) * (1 if form[0] == "+" else -1)
    return (instant + delta).strftime("%Y-%m-%dT%H:%M:%S") + form


@st.composite
def valid_message(draw: st.DrawFn) -> MessageDraft:
    """A message every rule accepts, its id (when given) in random case."""
    message_id = draw(st.none() | st.uuids().map(str))
    if message_id is not None and draw(st.booleans()):
        message_id = message_id.upper()
    return MessageDraft(
        to=draw(phone_number()),
        sender=draw(valid_sender()),
        body=draw(body_text),
        callback=draw(
            st.none()
            | st.from_regex(r"https?://[a-z]{1,10}\.example/[a-z0-9/]{0,20}", fullmatch=True)
        ),
        channels=draw(
            st.none()
            | st.permutations(["sms", "rcs"]).flatmap(
                lambda p: st.integers(1, 2).map(lambda n: tuple(p[:n]))
            )
        ),
        id=message_id,
        send_at=draw(st.none() | send_at()),
    )


MERGEABLE = ("to", "sender", "body", "callback", "channels", "send_at")
"""Fields that defaults may carry for a whole valid batch (a shared id would repeat)."""


@st.composite
def batch_with_defaults(
    draw: st.DrawFn,
) -> tuple[list[MessageDraft], MessageDraft | None, list[MessageDraft]]:
    """Valid messages with some fields moved whole into the defaults, the rest of the defaults
    junk that each message must win over; and the same batch written out without defaults."""
    messages = draw(st.lists(valid_message(), min_size=1, max_size=5))
    moved = draw(st.sets(st.sampled_from(MERGEABLE)))
    template = messages[0]
    # Junk only where every valid message sets its own: `to`, `from`, `body`.
    junk = MessageDraft(to="0", sender=SenderDraft("fax", "?"), body="\x00")
    defaults = replace(junk, **{name: getattr(template, name) for name in moved})
    stripped = [
        replace(m, **dict.fromkeys(moved)) if i == 0 or draw(st.booleans()) else m
        for i, m in enumerate(messages)
    ]
    written_out = [
        replace(m, **{n: getattr(template, n) for n in moved if getattr(m, n) is None})
        for m in stripped
    ]
    return stripped, defaults, written_out


def redraft(message: OutgoingMessage) -> MessageDraft:
    """An accepted message written back as a request, in its normalised form."""
    return MessageDraft(
        to=message.to,
        sender=SenderDraft(message.sender_type.value, message.sender_id or ""),
        body=message.body,
        callback=message.callback,
        channels=message.channels if message.channels_given else None,
        id=message.id,
        send_at=message.send_at,
    )


@PROPERTIES
@given(any_draft(), st.none() | any_draft())
def test_a_field_the_message_sets_wins_and_defaults_fill_the_rest(
    message: MessageDraft, defaults: MessageDraft | None
) -> None:
    merged = message.merged_over(defaults)
    for name in (f.name for f in fields(MessageDraft)):
        own = getattr(message, name)
        fallback = getattr(defaults, name) if defaults is not None else None
        # `from` and `channels` are taken whole: the very object, never a field-wise blend.
        assert getattr(merged, name) is (own if own is not None else fallback)


@PROPERTIES
@given(st.lists(any_draft(), max_size=4), st.none() | any_draft())
def test_validation_raises_only_invalid_request_naming_message_fields(
    messages: list[MessageDraft], defaults: MessageDraft | None
) -> None:
    try:
        accepted = validate_messages(messages, defaults, LIMITS, NOW)
    except InvalidRequest as error:
        assert error.violations
        for violation in error.violations:
            match = VIOLATION_FIELD.fullmatch(violation.field)
            assert match, violation.field
            index = match.group("index")
            assert index is None or int(index) < len(messages)
            assert violation.reason and violation.reason.isupper()
    else:
        assert len(accepted) == len(messages)
        assert all(m.to.isdigit() for m in accepted)


@PROPERTIES
@given(batch_with_defaults())
def test_valid_messages_are_accepted_and_normalising_twice_changes_nothing(
    batch: tuple[list[MessageDraft], MessageDraft | None, list[MessageDraft]],
) -> None:
    messages, defaults, written_out = batch
    accepted = validate_messages(messages, defaults, LIMITS, NOW)
    assert len(accepted) == len(messages)
    assert validate_messages(written_out, None, LIMITS, NOW) == accepted
    for message, result in zip(messages, accepted, strict=True):
        merged = message.merged_over(defaults)
        assert result.to.isdigit() and result.to == (merged.to or "").replace(" ", "").lstrip("+")
        assert result.body == merged.body and result.id == merged.id
    again = validate_messages([redraft(m) for m in accepted], None, LIMITS, NOW)
    assert again == accepted


@PROPERTIES
@given(valid_message(), st.integers(0, 3600))
def test_a_fingerprint_depends_on_content_not_on_spelling_or_arrival(
    message: MessageDraft, later_s: int
) -> None:
    (first,) = validate_messages([message], None, LIMITS, NOW)
    assert re.fullmatch(r"[0-9a-f]{64}", first.fingerprint())
    # The same message respelt (normalised number, id case) and resent later: same content.
    respelt = replace(message, to=first.to, id=message.id.lower() if message.id else None)
    (retry,) = validate_messages([respelt], None, LIMITS, NOW + timedelta(seconds=later_s))
    assert retry.fingerprint() == first.fingerprint()
    (changed,) = validate_messages([replace(message, body=f"{message.body}!")], None, LIMITS, NOW)
    assert changed.fingerprint() != first.fingerprint()


STICKY_POOL = ("447700900301", "447700900302", "447700900303", "447700900304")
DESTINATIONS = tuple(f"4420000000{i:02d}" for i in range(6))


class StickyWorld:
    """One SQLite database for every example, and every sender any request was answered with:
    the property holds across examples, not only within one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.unit_of_work = lambda: UnitOfWork(engine)
        senders.add_senders(self.unit_of_work, STICKY_POOL)
        self.keys = [accounts.create_account(self.unit_of_work, f"a{i}").key for i in range(2)]
        self.service = AddMessages(
            self.unit_of_work, LIMITS, Environment(now=lambda: NOW, rng=random.Random(3))
        )
        self.assigned: dict[tuple[int, str], str] = {}


@pytest.fixture(scope="module")
def sticky_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StickyWorld]:
    path: Path = tmp_path_factory.mktemp("sticky") / "mplus.db"
    engine = create_database_engine(f"sqlite:///{path}")
    upgrade(engine)
    yield StickyWorld(engine)
    engine.dispose()


request_plan = st.tuples(
    st.integers(0, 1),  # account
    st.lists(st.sampled_from(DESTINATIONS), min_size=1, max_size=6),
    st.booleans(),  # dry run
)


@PROPERTIES
@given(st.lists(request_plan, min_size=1, max_size=8))
def test_a_shared_sender_is_sticky_per_account_and_destination(
    sticky_world: StickyWorld, plan: list[tuple[int, list[str], bool]]
) -> None:
    world = sticky_world
    for account, destinations, dry_run in plan:
        drafts = [
            MessageDraft(to=d, sender=SenderDraft("shared", ""), body="hi") for d in destinations
        ]
        answer = world.service(AddMessagesCommand(world.keys[account], drafts, dry_run=dry_run))
        for destination, accepted in zip(destinations, answer, strict=True):
            assert accepted.sender in STICKY_POOL
            known = world.assigned.get((account, destination))
            if known is not None:
                assert accepted.sender == known, "a pinned destination moved"
            elif not dry_run:  # a dry run may show a pick it never pins
                world.assigned[(account, destination)] = accepted.sender
        # Within one answer, one destination always has one sender.
        per_destination: dict[str, set[str]] = {}
        for destination, accepted in zip(destinations, answer, strict=True):
            per_destination.setdefault(destination, set()).add(accepted.sender)
        assert all(len(s) == 1 for s in per_destination.values())
    with world.engine.connect() as connection:
        pins = connection.execute(select(func.count()).select_from(sender_pins)).scalar_one()
    assert pins == len(world.assigned)
