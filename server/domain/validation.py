"""The request rules, applied to each message after merging defaults; all violations at once."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from urllib.parse import urlsplit

from server.config import Limits
from server.domain.callbacks import allowed_networks, host_refusal
from server.domain.errors import InvalidRequest, Violation
from server.domain.model import MessageDraft, OutgoingMessage, SenderType

CHANNELS = ("sms", "rcs")
DEFAULT_CHANNELS = ("sms",)
SCHEDULE_THRESHOLD = timedelta(minutes=5)
"""`send_at` further ahead than this is scheduled; nearer, or past, is sent now."""
MAX_CALLBACK_CHARS = 2048

_PHONE = re.compile(r"\+?[1-9][0-9]{6,14}")  # E.164: no leading zero
_ALPHANUMERIC_SENDER = re.compile(r"(?=.*[A-Za-z])(?! )[A-Za-z0-9 \-_.&]{1,11}(?<! )")
_NUMERIC_SENDER = re.compile(r"[0-9]{3,15}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\s]")
_ISO_8601 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]"
    r"(?P<time>[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?)"
    r"(?P<zone>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)


class _Collector:
    """Gathers violations under one message's path prefix (`messages[index]`)."""

    def __init__(self, index: int, sink: list[Violation]) -> None:
        self.index = index
        self.sink = sink
        self.count = 0

    def add(self, field: str, description: str, reason: str) -> None:
        self.sink.append(Violation(f"messages[{self.index}].{field}", description, reason))
        self.count += 1

    def add_all(self, issues: tuple[Issue, ...]) -> None:
        for issue in issues:
            self.add(*issue)


Issue = tuple[str, str, str]
"""A violation before it has a message's path: field, description, reason."""


def validate_messages(
    messages: Sequence[MessageDraft],
    defaults: MessageDraft | None,
    limits: Limits,
    now: datetime,
) -> list[OutgoingMessage]:
    """Merges defaults under each message and checks every rule; raises InvalidRequest."""
    if not messages:
        raise InvalidRequest(
            [Violation("messages", "at least one message is required", "REQUIRED")]
        )
    if len(messages) > limits.max_messages:
        raise InvalidRequest(
            [
                Violation(
                    "messages",
                    f"at most {limits.max_messages} messages per request, got {len(messages)}",
                    "TOO_MANY_MESSAGES",
                )
            ]
        )
    violations: list[Violation] = []
    accepted: list[OutgoingMessage] = []
    first_index_of_id: dict[str, int] = {}
    for index, draft in enumerate(messages):
        issues = _Collector(index, violations)
        merged = draft.merged_over(defaults)
        message = _validate_one(merged, issues, limits, now)
        if merged.id is not None and _UUID.fullmatch(merged.id):
            first = first_index_of_id.setdefault(merged.id.lower(), index)
            if first != index:
                issues.add("id", f"repeats the id of messages[{first}]", "DUPLICATE_ID")
        if message is not None:
            accepted.append(message)
    if violations:
        raise InvalidRequest(violations)
    return accepted


def _validate_one(
    draft: MessageDraft, issues: _Collector, limits: Limits, now: datetime
) -> OutgoingMessage | None:
    to = _check_to(draft.to, issues)
    sender_type, sender_id = _check_sender(draft, issues)
    body = _check_body(draft.body, issues, limits)
    _check_optional(draft.callback, "callback", partial(_callback_problem, limits=limits), issues)
    channels = _check_channels(draft.channels, issues)
    _check_optional(draft.id, "id", _id_problem, issues)
    send_at_utc = _check_send_at(draft.send_at, issues, limits, now)
    if issues.count or to is None or sender_type is None or body is None:
        return None
    scheduled = send_at_utc is not None and send_at_utc - now > SCHEDULE_THRESHOLD
    return OutgoingMessage(
        to=to,
        sender_type=sender_type,
        sender_id=sender_id,
        body=body,
        callback=draft.callback,
        channels=channels,
        channels_given=draft.channels is not None,
        id=draft.id,
        send_at=draft.send_at,
        send_at_utc=send_at_utc,
        due_at=send_at_utc if scheduled and send_at_utc is not None else now,
        scheduled=scheduled,
    )


def normalise_phone_number(raw: str) -> str | None:
    """Digits only, or None when `raw` is not 7-15 digits with an optional '+' and spaces."""
    compact = raw.replace(" ", "")
    if not _PHONE.fullmatch(compact):
        return None
    return compact.removeprefix("+")


def _check_to(raw: str | None, issues: _Collector) -> str | None:
    if raw is None or not raw.strip():
        issues.add("to", "is required", "REQUIRED")
        return None
    number = normalise_phone_number(raw)
    if number is None:
        issues.add(
            "to",
            "must be a mobile number in international form: 7 to 15 digits, not starting "
            "with 0, with an optional leading '+'",
            "INVALID_PHONE_NUMBER",
        )
    return number


def _check_sender(draft: MessageDraft, issues: _Collector) -> tuple[SenderType | None, str | None]:
    sender = draft.sender
    if sender is None:
        issues.add("from", "is required", "REQUIRED")
        return None, None
    rules = _sender_rules_cached if len(sender.value) <= _CACHED_CHARS else _sender_rules
    sender_type, sender_id, found = rules(sender.type, sender.value)
    issues.add_all(found)
    return sender_type, sender_id


def _sender_rules(kind: str, value: str) -> tuple[SenderType | None, str | None, tuple[Issue, ...]]:
    """A sender's type, ID and issues."""
    if not kind:
        return None, None, (("from.type", 'is required: "custom" or "shared"', "REQUIRED"),)
    try:
        sender_type = SenderType(kind)
    except ValueError:
        return None, None, (("from.type", 'must be "custom" or "shared"', "INVALID_SENDER_TYPE"),)
    if sender_type is SenderType.SHARED:
        if value:
            return (
                sender_type,
                None,
                (
                    (
                        "from.value",
                        "must be empty for a shared sender: the service assigns one",
                        "VALUE_NOT_ALLOWED",
                    ),
                ),
            )
        return sender_type, None, ()
    if not value:
        return (
            sender_type,
            value,
            (("from.value", 'is required when from.type is "custom"', "REQUIRED"),),
        )
    if not (_ALPHANUMERIC_SENDER.fullmatch(value) or _NUMERIC_SENDER.fullmatch(value)):
        return (
            sender_type,
            value,
            (
                (
                    "from.value",
                    "must be an alphanumeric sender ID of 1 to 11 characters (letters, digits, "
                    "space, '-', '_', '.', '&'; at least one letter; no leading or trailing "
                    "space) or a number of 3 to 15 digits",
                    "INVALID_SENDER_ID",
                ),
            ),
        )
    return sender_type, value, ()


def _check_body(raw: str | None, issues: _Collector, limits: Limits) -> str | None:
    if raw is None or not raw.strip():
        issues.add("body", "is required and must not be blank", "REQUIRED")
        return None
    if _CONTROL.search(raw):
        issues.add(
            "body",
            "must not contain control characters other than tab, line feed and carriage return",
            "CONTROL_CHARACTER",
        )
    if len(raw) > limits.max_body_chars:
        issues.add(
            "body",
            f"must be at most {limits.max_body_chars} characters, got {len(raw)}",
            "BODY_TOO_LONG",
        )
    return raw


def _check_optional(
    raw: str | None, field: str, problem: Callable[[str], str | None], issues: _Collector
) -> None:
    if raw is None:
        return
    description = problem(raw)
    if description is not None:
        issues.add(field, description, f"INVALID_{field.upper()}")


def _callback_problem(raw: str, limits: Limits) -> str | None:
    if len(raw) > MAX_CALLBACK_CHARS:
        return f"must be at most {MAX_CALLBACK_CHARS} characters, got {len(raw)}"
    invalid = "must be an absolute http or https URL"
    try:
        parts = urlsplit(raw)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return invalid
    if parts.scheme not in ("http", "https") or not host or _URL_FORBIDDEN.search(raw):
        return invalid
    refusal = host_refusal(host, allowed_networks(limits.callback_allow_networks))
    return f"must not name a non-public address: {refusal}" if refusal else None


def _id_problem(raw: str) -> str | None:
    if not _UUID.fullmatch(raw):
        return "must be a UUID such as b2693dfe-0813-427a-bc2f-62b0e9292403"
    return None


def _check_channels(raw: tuple[str, ...] | None, issues: _Collector) -> tuple[str, ...]:
    if raw is None:
        return DEFAULT_CHANNELS
    small = len(raw) <= len(CHANNELS) and sum(map(len, raw)) <= _CACHED_CHARS
    issues.add_all((_channel_rules_cached if small else _channel_rules)(raw))
    return raw


def _channel_rules(raw: tuple[str, ...]) -> tuple[Issue, ...]:
    """A channel list's issues."""
    found: list[Issue] = []
    if not raw:
        found.append(("channels", "must name at least one channel when given", "EMPTY_CHANNELS"))
    seen: set[str] = set()
    for position, channel in enumerate(raw):
        if channel not in CHANNELS:
            found.append(
                (
                    f"channels[{position}]",
                    f"must be one of {', '.join(repr(c) for c in CHANNELS)}",
                    "UNKNOWN_CHANNEL",
                )
            )
        elif channel in seen:
            found.append((f"channels[{position}]", f"repeats {channel!r}", "DUPLICATE_CHANNEL"))
        seen.add(channel)
    return tuple(found)


_CACHED_CHARS = 32
"""Senders and channel lists up to this size have their rules' verdicts cached (a batch's
messages mostly share one); larger ones, never valid, are checked afresh and not kept."""
_sender_rules_cached = functools.lru_cache(maxsize=1024)(_sender_rules)
_channel_rules_cached = functools.lru_cache(maxsize=1024)(_channel_rules)


def parse_send_at(raw: str) -> datetime | None:
    """An ISO 8601 timestamp as a UTC instant; no zone means GMT. None when unparseable."""
    match = _ISO_8601.fullmatch(raw)
    if match is None:
        return None
    date, time, zone = match.group("date", "time", "zone")
    time = time.replace(",", ".")  # ISO 8601 allows either decimal sign
    if "." in time:  # Python keeps microseconds: trim nanosecond precision, never round up.
        whole, fraction = time.split(".")
        time = f"{whole}.{fraction[:6]}"
    if zone in (None, "Z", "z"):
        zone = "+00:00"
    elif len(zone) == 3:  # ±hh
        zone += ":00"
    try:
        return datetime.fromisoformat(f"{date}T{time}{zone}").astimezone(UTC)
    except (ValueError, OverflowError):  # no such date, or beyond year 1..9999 once in UTC
        return None


def _check_send_at(
    raw: str | None, issues: _Collector, limits: Limits, now: datetime
) -> datetime | None:
    if raw is None:
        return None
    instant = parse_send_at(raw)
    if instant is None:
        issues.add(
            "send_at",
            "must be an ISO 8601 timestamp such as 2026-01-01T09:00:00Z",
            "INVALID_TIMESTAMP",
        )
        return None
    latest = now + timedelta(days=limits.max_schedule_days)
    if instant > latest:
        issues.add(
            "send_at",
            f"must be at most {limits.max_schedule_days} days ahead "
            f"(no later than {latest.isoformat(timespec='seconds')})",
            "TOO_FAR_AHEAD",
        )
    return instant
