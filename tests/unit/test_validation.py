"""The add-message rules (issue 2, "Rules"), checked on the domain layer with a fixed clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.config import Limits
from server.domain.errors import InvalidRequest, Violation
from server.domain.model import MessageDraft, OutgoingMessage, SenderDraft, SenderType
from server.domain.validation import normalise_phone_number, parse_send_at, validate_messages

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
"""The acceptance time of every request here; the real clock is never read."""

ACME = SenderDraft("custom", "Acme")
SHARED = SenderDraft("shared", "")
UUID_A = "b2693dfe-0813-427a-bc2f-62b0e9292403"
UUID_B = "0f4c6a2e-5d7b-4c1e-9a3f-2b8d7e6c5a41"


def draft(**fields: Any) -> MessageDraft:
    """A valid message; keyword arguments replace its fields (None means "not given")."""
    base: dict[str, Any] = {"to": "447700900123", "sender": ACME, "body": "Hello"}
    return MessageDraft(**(base | fields))


def accept(
    *messages: MessageDraft,
    defaults: MessageDraft | None = None,
    limits: Limits | None = None,
    now: datetime = NOW,
) -> list[OutgoingMessage]:
    return validate_messages(list(messages), defaults, limits or Limits(), now)


def accept_one(message: MessageDraft, **kwargs: Any) -> OutgoingMessage:
    [accepted] = accept(message, **kwargs)
    return accepted


def rejection(
    *messages: MessageDraft, defaults: MessageDraft | None = None, limits: Limits | None = None
) -> Sequence[Violation]:
    with pytest.raises(InvalidRequest) as caught:
        accept(*messages, defaults=defaults, limits=limits)
    return caught.value.violations


def reasons(*messages: MessageDraft, **kwargs: Any) -> list[tuple[str, str]]:
    """(field path, reason code) of every violation, in reported order."""
    return [(v.field, v.reason) for v in rejection(*messages, **kwargs)]


def at(**delta: float) -> str:
    """`NOW` shifted by a timedelta, spelled as an ISO 8601 UTC timestamp with 'Z'."""
    return (NOW + timedelta(**delta)).isoformat().replace("+00:00", "Z")


# --- defaults ------------------------------------------------------------------------------


def test_a_field_the_message_sets_wins_over_the_default() -> None:
    defaults = MessageDraft(body="From defaults", callback="https://defaults.example/dr")
    message = accept_one(
        draft(body="Own body", callback="https://own.example/dr"), defaults=defaults
    )
    assert message.body == "Own body"
    assert message.callback == "https://own.example/dr"


def test_every_field_a_message_omits_comes_from_the_defaults() -> None:
    defaults = MessageDraft(
        to="+44 7700 900999",
        sender=SenderDraft("custom", "Defaults"),
        body="Default body",
        callback="https://defaults.example/dr",
        channels=("rcs", "sms"),
        id=UUID_A,
        send_at="2026-03-02T09:00:00Z",
    )
    message = accept_one(MessageDraft(), defaults=defaults)
    assert message.to == "447700900999"
    assert (message.sender_type, message.sender_id) == (SenderType.CUSTOM, "Defaults")
    assert message.body == "Default body"
    assert message.callback == "https://defaults.example/dr"
    assert message.channels == ("rcs", "sms")
    assert message.channels_given is True
    assert message.id == UUID_A
    assert message.send_at == "2026-03-02T09:00:00Z"


def test_the_spec_example_puts_the_default_sender_on_messages_without_their_own() -> None:
    defaults = MessageDraft(sender=SenderDraft("custom", "mplus-test"))
    messages = accept(
        MessageDraft(to="441111111111", body="This is the first test message!"),
        MessageDraft(to="442222222222", body="This is the second test message!"),
        MessageDraft(
            sender=SenderDraft("custom", "specific"),
            to="44333333333333",
            body="This is the third test message!",
        ),
        defaults=defaults,
    )
    assert [m.sender_id for m in messages] == ["mplus-test", "mplus-test", "specific"]
    assert [m.to for m in messages] == ["441111111111", "442222222222", "44333333333333"]


def test_a_shared_from_on_the_message_replaces_a_custom_default_whole() -> None:
    defaults = MessageDraft(sender=SenderDraft("custom", "Acme"))
    message = accept_one(draft(sender=SHARED), defaults=defaults)
    assert (message.sender_type, message.sender_id) == (SenderType.SHARED, None)


def test_a_custom_from_on_the_message_replaces_a_shared_default_whole() -> None:
    message = accept_one(
        draft(sender=SenderDraft("custom", "Own")), defaults=MessageDraft(sender=SHARED)
    )
    assert (message.sender_type, message.sender_id) == (SenderType.CUSTOM, "Own")


def test_from_is_never_mixed_field_by_field_with_the_default() -> None:
    """A custom `from` without a value does not borrow the default's value."""
    defaults = MessageDraft(sender=SenderDraft("custom", "Acme"))
    assert reasons(draft(sender=SenderDraft("custom", "")), defaults=defaults) == [
        ("messages[0].from.value", "REQUIRED")
    ]


def test_channels_on_the_message_replace_the_default_list_whole() -> None:
    message = accept_one(draft(channels=("sms",)), defaults=MessageDraft(channels=("rcs", "sms")))
    assert message.channels == ("sms",)


def test_the_rules_apply_to_the_merged_message_so_a_bad_default_is_reported_per_message() -> None:
    defaults = MessageDraft(callback="ftp://example.com/dr")
    assert reasons(
        draft(), draft(callback="https://ok.example/dr"), draft(), defaults=defaults
    ) == [
        ("messages[0].callback", "INVALID_CALLBACK"),
        ("messages[2].callback", "INVALID_CALLBACK"),
    ]


def test_no_defaults_leaves_each_message_as_submitted() -> None:
    message = draft(callback="https://example.com/dr")
    assert message.merged_over(None) is message
    accepted = accept_one(message, defaults=None)
    assert (accepted.to, accepted.sender_id, accepted.body) == ("447700900123", "Acme", "Hello")
    assert accepted.callback == "https://example.com/dr"


def test_empty_defaults_change_nothing() -> None:
    message = draft(channels=("rcs",), id=UUID_A)
    assert message.merged_over(MessageDraft()) == message


def test_a_required_field_missing_on_both_sides_is_still_required() -> None:
    defaults = MessageDraft(callback="https://example.com/dr")
    assert reasons(MessageDraft(to="447700900123"), defaults=defaults) == [
        ("messages[0].from", "REQUIRED"),
        ("messages[0].body", "REQUIRED"),
    ]


# --- messages ------------------------------------------------------------------------------


def test_a_request_without_messages_is_rejected_on_the_messages_field() -> None:
    assert reasons() == [("messages", "REQUIRED")]


def test_up_to_the_configured_maximum_of_messages_is_accepted() -> None:
    assert len(accept(draft(), draft(), draft(), limits=Limits(max_messages=3))) == 3


def test_one_message_over_the_configured_maximum_is_rejected() -> None:
    [violation] = rejection(draft(), draft(), draft(), draft(), limits=Limits(max_messages=3))
    assert (violation.field, violation.reason) == ("messages", "TOO_MANY_MESSAGES")
    assert "3" in violation.description
    assert "4" in violation.description


def test_the_documented_default_allows_1000_messages_and_no_more() -> None:
    assert len(accept(*[draft()] * 1000)) == 1000
    assert reasons(*[draft()] * 1001) == [("messages", "TOO_MANY_MESSAGES")]


def test_messages_are_returned_in_input_order() -> None:
    bodies = ["first", "second", "third"]
    assert [m.body for m in accept(*(draft(body=b) for b in bodies))] == bodies


# --- to ------------------------------------------------------------------------------------


@pytest.mark.parametrize("to", [None, "", "   "])
def test_to_is_required(to: str | None) -> None:
    assert reasons(draft(to=to)) == [("messages[0].to", "REQUIRED")]


@pytest.mark.parametrize(
    ("to", "normalised"),
    [
        ("447700900123", "447700900123"),
        ("+447700900123", "447700900123"),
        ("+44 7700 900123", "447700900123"),
        (" 44 7700 900 123 ", "447700900123"),
        ("1234567", "1234567"),
        ("+1234567", "1234567"),
        ("123456789012345", "123456789012345"),
        ("+123 456 789 012 345", "123456789012345"),
    ],
)
def test_to_is_accepted_and_normalised_to_digits_only(to: str, normalised: str) -> None:
    assert normalise_phone_number(to) == normalised
    assert accept_one(draft(to=to)).to == normalised


@pytest.mark.parametrize(
    "to",
    [
        "123456",  # 6 digits
        "+123456",
        "1234567890123456",  # 16 digits
        "+1234 5678 9012 3456",
        "44770090012a",
        "+44 7700 900 ABC",
        "+44-7700-900123",
        "(44) 7700900123",
        "++447700900123",
        "44+7700900123",
        "447700900123+",
        "+",
        "0441111111111",  # E.164 numbers never start with 0
        "+0 7700 900123",
    ],
)
def test_to_that_is_not_7_to_15_digits_is_rejected(to: str) -> None:
    assert normalise_phone_number(to) is None
    [violation] = rejection(draft(to=to))
    assert (violation.field, violation.reason) == ("messages[0].to", "INVALID_PHONE_NUMBER")


# --- from ----------------------------------------------------------------------------------


def test_from_is_required() -> None:
    assert reasons(draft(sender=None)) == [("messages[0].from", "REQUIRED")]


def test_from_type_is_required() -> None:
    assert reasons(draft(sender=SenderDraft("", "Acme"))) == [("messages[0].from.type", "REQUIRED")]


@pytest.mark.parametrize("sender_type", ["Custom", "SHARED", "dedicated", "numeric", " custom"])
def test_from_type_other_than_custom_or_shared_is_rejected(sender_type: str) -> None:
    assert reasons(draft(sender=SenderDraft(sender_type, "Acme"))) == [
        ("messages[0].from.type", "INVALID_SENDER_TYPE")
    ]


def test_a_custom_sender_needs_a_value() -> None:
    assert reasons(draft(sender=SenderDraft("custom", ""))) == [
        ("messages[0].from.value", "REQUIRED")
    ]


@pytest.mark.parametrize(
    "value",
    [
        "A",
        "Acme",
        "sender-id",
        "mplus-test",
        "ACME Ltd",
        "Shop2024",
        "1a",
        "A&B_c.d-e f",  # 11 characters, every allowed punctuation mark
        "ABCDEFGHIJK",  # 11 letters
        "12345678 9A",
    ],
)
def test_an_alphanumeric_sender_of_1_to_11_characters_is_accepted(value: str) -> None:
    message = accept_one(draft(sender=SenderDraft("custom", value)))
    assert (message.sender_type, message.sender_id) == (SenderType.CUSTOM, value)


@pytest.mark.parametrize(
    "value",
    ["123", "447700900123", "123456789012", "123456789012345"],
)
def test_a_numeric_sender_of_3_to_15_digits_is_accepted(value: str) -> None:
    assert accept_one(draft(sender=SenderDraft("custom", value))).sender_id == value


@pytest.mark.parametrize(
    "value",
    [
        "ABCDEFGHIJKL",  # 12 characters
        "Acme Limited",  # 12 characters
        "sender-id-12",
        "Acme!",
        "Acme@Ltd",
        "Acme/Ltd",
        "Café",
        "- _.&",  # punctuation only: no letter
        "   ",
        "12",  # numeric, too short
        "1234567890123456",  # numeric, 16 digits
        "+447700900123",
        "123 456",  # digits and a space, no letter
        " Acme",  # leading space
        "Acme ",  # trailing space
        "a          ",
    ],
)
def test_a_custom_sender_value_outside_both_formats_is_rejected(value: str) -> None:
    assert reasons(draft(sender=SenderDraft("custom", value))) == [
        ("messages[0].from.value", "INVALID_SENDER_ID")
    ]


def test_a_shared_sender_must_not_carry_a_value() -> None:
    assert reasons(draft(sender=SenderDraft("shared", "Acme"))) == [
        ("messages[0].from.value", "VALUE_NOT_ALLOWED")
    ]


def test_a_shared_sender_without_a_value_is_accepted_with_no_sender_id_yet() -> None:
    message = accept_one(draft(sender=SHARED))
    assert message.sender_type is SenderType.SHARED
    assert message.sender_id is None


# --- body ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, "", " ", "   ", "\n\t \r\n"])
def test_body_is_required_and_must_not_be_blank(body: str | None) -> None:
    assert reasons(draft(body=body)) == [("messages[0].body", "REQUIRED")]


def test_body_is_kept_exactly_as_submitted() -> None:
    assert accept_one(draft(body="  Hi there\n")).body == "  Hi there\n"


@pytest.mark.parametrize(
    "body", ["x" * 10, "é" * 10, "😀" * 10, "日本語のメッセージ。", "x" * 9 + "😀"]
)
def test_body_at_the_character_limit_is_accepted_counting_characters(body: str) -> None:
    assert len(body) == 10
    assert accept_one(draft(body=body), limits=Limits(max_body_chars=10)).body == body


@pytest.mark.parametrize("body", ["x" * 11, "é" * 11, "😀" * 11])
def test_body_one_character_over_the_limit_is_rejected(body: str) -> None:
    [violation] = rejection(draft(body=body), limits=Limits(max_body_chars=10))
    assert (violation.field, violation.reason) == ("messages[0].body", "BODY_TOO_LONG")
    assert "10" in violation.description
    assert "11" in violation.description


def test_the_documented_default_body_limit_is_1600_characters() -> None:
    assert accept_one(draft(body="x" * 1600)).body == "x" * 1600
    assert reasons(draft(body="x" * 1601)) == [("messages[0].body", "BODY_TOO_LONG")]


# --- callback ------------------------------------------------------------------------------

LONGEST_CALLBACK = "https://example.com/" + "a" * (2048 - len("https://example.com/"))


@pytest.mark.parametrize(
    "callback",
    [
        "http://example.com",
        "https://my-callback.com/delivery-receipt",
        "https://my-website.com/dr?id=first_message",
        "https://example.com:8443/hooks/dr#fragment",
        "https://user:secret@example.com/dr",
        "http://93.184.216.34:9000/dr",
        "http://[2606:4700::6810:85e5]:9000/dr",
        "HTTPS://EXAMPLE.COM/DR",
        LONGEST_CALLBACK,
    ],
)
def test_an_absolute_http_or_https_callback_is_accepted(callback: str) -> None:
    assert accept_one(draft(callback=callback)).callback == callback


@pytest.mark.parametrize(
    "callback",
    [
        "",
        "ftp://example.com/dr",
        "mailto:dr@example.com",
        "/delivery-receipt",
        "delivery-receipt",
        "my-website.com/delivery-receipt",
        "//example.com/dr",
        "https://",
        "https:///dr",
        "https://exa mple.com/dr",
        "https://example.com/delivery receipt",
        " https://example.com/dr",
        "https://example.com/dr\n",
        "https://example.com:99999/dr",
        LONGEST_CALLBACK + "a",
    ],
)
def test_a_callback_that_is_not_an_absolute_http_url_is_rejected(callback: str) -> None:
    assert reasons(draft(callback=callback)) == [("messages[0].callback", "INVALID_CALLBACK")]


@pytest.mark.parametrize(
    "callback",
    [
        "http://127.0.0.1:9000/dr",
        "http://[::1]:9000/dr",
        "http://localhost:9000/dr",
        "http://LOCALHOST./dr",
        "http://10.1.2.3/dr",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/dr",
        "http://[fe80::1]/dr",
        "http://0.0.0.0/dr",
    ],
)
def test_a_callback_naming_a_non_public_address_is_rejected_unless_allowed(callback: str) -> None:
    [violation] = rejection(draft(callback=callback))
    assert (violation.field, violation.reason) == ("messages[0].callback", "INVALID_CALLBACK")
    assert violation.description.startswith("must not name a non-public address: ")
    assert "MPLUS_CALLBACK_ALLOW_NETWORKS" in violation.description
    everything = Limits(callback_allow_networks=("0.0.0.0/0", "::/0"))
    assert accept_one(draft(callback=callback), limits=everything).callback == callback


def test_the_loopback_allowance_admits_loopback_callbacks_only() -> None:
    loopback = Limits(callback_allow_networks=("127.0.0.0/8", "::1/128"))
    for callback in ("http://127.0.0.1:9000/dr", "http://[::1]:9000/dr", "http://localhost/dr"):
        assert accept_one(draft(callback=callback), limits=loopback).callback == callback
    assert reasons(draft(callback="http://10.0.0.1/dr"), limits=loopback) == [
        ("messages[0].callback", "INVALID_CALLBACK")
    ]


@pytest.mark.parametrize("callback", ["http://[::1/dr", "https://[not-an-ip]/dr"])
def test_a_callback_with_a_malformed_bracketed_host_is_a_violation_not_a_crash(
    callback: str,
) -> None:
    assert reasons(draft(callback=callback)) == [("messages[0].callback", "INVALID_CALLBACK")]


# --- channels ------------------------------------------------------------------------------


def test_channels_default_to_sms_when_not_given() -> None:
    message = accept_one(draft(channels=None))
    assert message.channels == ("sms",)
    assert message.channels_given is False


@pytest.mark.parametrize("channels", [("sms",), ("rcs",), ("rcs", "sms"), ("sms", "rcs")])
def test_given_channels_are_kept_in_priority_order(channels: tuple[str, ...]) -> None:
    message = accept_one(draft(channels=channels))
    assert message.channels == channels
    assert message.channels_given is True


@pytest.mark.parametrize(
    ("channels", "field"),
    [
        (("mms",), "messages[0].channels[0]"),
        (("SMS",), "messages[0].channels[0]"),
        (("sms", "whatsapp"), "messages[0].channels[1]"),
        (("rcs", "sms", ""), "messages[0].channels[2]"),
    ],
)
def test_an_unknown_channel_is_rejected_at_its_position(
    channels: tuple[str, ...], field: str
) -> None:
    assert reasons(draft(channels=channels)) == [(field, "UNKNOWN_CHANNEL")]


@pytest.mark.parametrize(
    ("channels", "field"),
    [
        (("sms", "sms"), "messages[0].channels[1]"),
        (("rcs", "sms", "rcs"), "messages[0].channels[2]"),
    ],
)
def test_a_repeated_channel_is_rejected_at_the_repeat(
    channels: tuple[str, ...], field: str
) -> None:
    assert reasons(draft(channels=channels)) == [(field, "DUPLICATE_CHANNEL")]


# --- id ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_id", [UUID_A, UUID_A.upper(), "B2693dfe-0813-427A-bc2f-62B0e9292403"]
)
def test_a_uuid_id_is_accepted_in_any_case_and_echoed_as_submitted(client_id: str) -> None:
    message = accept_one(draft(id=client_id))
    assert message.id == client_id
    assert message.client_id == UUID_A


@pytest.mark.parametrize(
    "client_id",
    [
        "",
        "not-a-uuid",
        "12345",
        "b2693dfe0813427abc2f62b0e9292403",  # no hyphens
        "{b2693dfe-0813-427a-bc2f-62b0e9292403}",
        "urn:uuid:b2693dfe-0813-427a-bc2f-62b0e9292403",
        "b2693dfe-0813-427a-bc2f-62b0e929240",  # one digit short
        "b2693dfe-0813-427a-bc2f-62b0e92924031",  # one digit long
        "g2693dfe-0813-427a-bc2f-62b0e9292403",
        " b2693dfe-0813-427a-bc2f-62b0e9292403",
    ],
)
def test_an_id_that_is_not_a_uuid_is_rejected(client_id: str) -> None:
    assert reasons(draft(id=client_id)) == [("messages[0].id", "INVALID_ID")]


def test_distinct_ids_in_one_request_are_accepted() -> None:
    assert [m.id for m in accept(draft(id=UUID_A), draft(id=UUID_B), draft())] == [
        UUID_A,
        UUID_B,
        None,
    ]


def test_a_repeated_id_is_reported_on_the_later_message_naming_the_first() -> None:
    [violation] = rejection(draft(id=UUID_A), draft(id=UUID_B), draft(id=UUID_A.upper()))
    assert (violation.field, violation.reason) == ("messages[2].id", "DUPLICATE_ID")
    assert "messages[0]" in violation.description


def test_every_repeat_of_an_id_names_its_first_use() -> None:
    violations = rejection(draft(id=UUID_A), draft(id=UUID_A), draft(id=UUID_A))
    assert [(v.field, v.reason) for v in violations] == [
        ("messages[1].id", "DUPLICATE_ID"),
        ("messages[2].id", "DUPLICATE_ID"),
    ]
    assert all("messages[0]" in v.description for v in violations)


def test_an_id_in_the_defaults_shared_by_two_messages_is_a_repeat() -> None:
    assert reasons(draft(), draft(), defaults=MessageDraft(id=UUID_A)) == [
        ("messages[1].id", "DUPLICATE_ID")
    ]


def test_a_repeated_id_is_reported_even_when_the_first_message_has_other_violations() -> None:
    """Every violation at once: fixing the body must not reveal a second, hidden error."""
    violations = rejection(draft(id=UUID_A, body=" "), draft(id=UUID_A))
    assert [(v.field, v.reason) for v in violations] == [
        ("messages[0].body", "REQUIRED"),
        ("messages[1].id", "DUPLICATE_ID"),
    ]
    assert "messages[0]" in violations[1].description


def test_a_repeated_id_is_reported_alongside_the_later_messages_other_violations() -> None:
    assert reasons(draft(id=UUID_A), draft(id=UUID_A, to="12")) == [
        ("messages[1].to", "INVALID_PHONE_NUMBER"),
        ("messages[1].id", "DUPLICATE_ID"),
    ]


# --- send_at -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "instant"),
    [
        ("2026-03-01T12:30:00Z", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30Z", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:15Z", datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)),
        ("2026-03-01T12:30:15.5Z", datetime(2026, 3, 1, 12, 30, 15, 500000, tzinfo=UTC)),
        ("2026-03-01T12:30:15.123Z", datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)),
        ("2026-03-01T12:30:15.123456Z", datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)),
        ("2026-03-01T12:30:15.123456789Z", datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)),
        # nanoseconds are cut, never rounded up into the next second
        ("2026-03-01T12:30:15.999999999Z", datetime(2026, 3, 1, 12, 30, 15, 999999, tzinfo=UTC)),
        ("2026-03-01T12:30:00+00:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T13:30:00+01:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T13:30:00+0100", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T13:30+01:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T13:30:00.250+0100", datetime(2026, 3, 1, 12, 30, 0, 250000, tzinfo=UTC)),
        ("2026-03-01T13:30:00-01", datetime(2026, 3, 1, 14, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:15,5Z", datetime(2026, 3, 1, 12, 30, 15, 500000, tzinfo=UTC)),
        ("2026-03-01t12:30:15z", datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)),
        ("2026-03-01T13:30+01", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T07:00:00-05:30", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-02T01:30:00+13:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),  # no zone: GMT
        ("2026-03-01T12:30", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:15.5", datetime(2026, 3, 1, 12, 30, 15, 500000, tzinfo=UTC)),
    ],
)
def test_send_at_is_read_as_an_iso_8601_instant_in_utc(raw: str, instant: datetime) -> None:
    parsed = parse_send_at(raw)
    assert parsed == instant
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)
    assert accept_one(draft(send_at=raw)).send_at_utc == instant


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "tomorrow",
        "now",
        "1772368200",
        "2026-03-01",
        "12:30:00",
        "2026-03-01 12:30:00Z",
        "2026/03/01T12:30:00Z",
        "01-03-2026T12:30:00Z",
        "2026-3-1T12:30:00Z",
        "2026-03-01T12Z",
        "2026-03-01T12:30:00.Z",
        "2026-03-01T12:30:00.1234567890Z",  # ten fraction digits
        "2026-03-01T12:30:00ZZ",
        "2026-03-01T12:30:00+1:00",
        "2026-03-01T12:30:00 +01:00",
        "2026-13-01T12:30:00Z",
        "2026-02-30T12:30:00Z",
        "2026-03-01T25:00:00Z",
        "2026-03-01T12:60:00Z",
        "2026-03-01T12:30:61Z",
        "2026-03-01T12:30:00+25:00",
        "Sun, 01 Mar 2026 12:30:00 GMT",
    ],
)
def test_send_at_that_is_not_iso_8601_is_rejected(raw: str) -> None:
    assert parse_send_at(raw) is None
    assert reasons(draft(send_at=raw)) == [("messages[0].send_at", "INVALID_TIMESTAMP")]


@pytest.mark.parametrize(
    "raw",
    [
        at(minutes=5, seconds=1),
        at(minutes=5, microseconds=1),
        at(hours=1),
        "2026-03-01T13:05:01+01:00",
        "2026-03-01T12:10:00",  # no zone: GMT, 10 minutes ahead
    ],
)
def test_send_at_more_than_5_minutes_ahead_is_scheduled_for_that_instant(raw: str) -> None:
    message = accept_one(draft(send_at=raw))
    assert message.scheduled is True
    assert message.due_at == parse_send_at(raw)
    assert message.due_at == message.send_at_utc


@pytest.mark.parametrize(
    "raw",
    [
        at(minutes=5),  # exactly 5 minutes: not "more than"
        "2026-03-01T13:05:00+01:00",  # the same instant with an offset
        "2026-03-01T12:05",
        at(minutes=4, seconds=59),
        at(seconds=0),
        at(minutes=-1),
        "2025-01-01T00:00:00Z",
        "2026-01-01T09:00:00Z",  # the spec's example, past by now
    ],
)
def test_send_at_5_minutes_ahead_or_less_or_past_is_sent_now(raw: str) -> None:
    message = accept_one(draft(send_at=raw))
    assert message.scheduled is False
    assert message.due_at == NOW
    assert message.send_at_utc == parse_send_at(raw)


def test_a_message_without_send_at_is_sent_now() -> None:
    message = accept_one(draft())
    assert (message.scheduled, message.due_at) == (False, NOW)
    assert message.send_at is None
    assert message.send_at_utc is None


@pytest.mark.parametrize("raw", [at(days=180), at(days=179, hours=23, minutes=59, seconds=59)])
def test_send_at_up_to_180_days_ahead_is_scheduled(raw: str) -> None:
    message = accept_one(draft(send_at=raw))
    assert message.scheduled is True
    assert message.due_at == parse_send_at(raw)


@pytest.mark.parametrize(
    "raw", [at(days=180, seconds=1), at(days=180, microseconds=1), at(days=400)]
)
def test_send_at_more_than_180_days_ahead_is_rejected(raw: str) -> None:
    [violation] = rejection(draft(send_at=raw))
    assert (violation.field, violation.reason) == ("messages[0].send_at", "TOO_FAR_AHEAD")
    assert "180" in violation.description


def test_the_scheduling_horizon_is_configurable() -> None:
    limits = Limits(max_schedule_days=1)
    assert accept_one(draft(send_at=at(days=1)), limits=limits).scheduled is True
    assert reasons(draft(send_at=at(days=1, seconds=1)), limits=limits) == [
        ("messages[0].send_at", "TOO_FAR_AHEAD")
    ]


@pytest.mark.parametrize(
    "raw", ["2026-03-01T13:30:00.000+0100", "2026-03-01T12:30Z", "2026-03-01T12:30:00.123456789"]
)
def test_send_at_is_echoed_exactly_as_submitted(raw: str) -> None:
    assert accept_one(draft(send_at=raw)).send_at == raw


# --- all violations at once ----------------------------------------------------------------


def test_every_violation_in_every_message_is_reported_at_once_in_order() -> None:
    violations = rejection(
        draft(),
        draft(to="12345", sender=SenderDraft("custom", "Far too long sender")),
        draft(),
        draft(body="  ", channels=("fax",), send_at="soon"),
        draft(sender=SenderDraft("shared", "Acme"), callback="ftp://x", id="nope"),
    )
    assert [(v.field, v.reason) for v in violations] == [
        ("messages[1].to", "INVALID_PHONE_NUMBER"),
        ("messages[1].from.value", "INVALID_SENDER_ID"),
        ("messages[3].body", "REQUIRED"),
        ("messages[3].channels[0]", "UNKNOWN_CHANNEL"),
        ("messages[3].send_at", "INVALID_TIMESTAMP"),
        ("messages[4].from.value", "VALUE_NOT_ALLOWED"),
        ("messages[4].callback", "INVALID_CALLBACK"),
        ("messages[4].id", "INVALID_ID"),
    ]
    assert all(v.description for v in violations)


def test_one_message_breaking_every_rule_reports_each_field() -> None:
    broken = MessageDraft(
        to="phone",
        sender=SenderDraft("custom", "!!!"),
        body="",
        callback="relative/path",
        channels=("sms", "sms", "pager"),
        id="123",
        send_at="2026-03-01",
    )
    assert reasons(broken) == [
        ("messages[0].to", "INVALID_PHONE_NUMBER"),
        ("messages[0].from.value", "INVALID_SENDER_ID"),
        ("messages[0].body", "REQUIRED"),
        ("messages[0].callback", "INVALID_CALLBACK"),
        ("messages[0].channels[1]", "DUPLICATE_CHANNEL"),
        ("messages[0].channels[2]", "UNKNOWN_CHANNEL"),
        ("messages[0].id", "INVALID_ID"),
        ("messages[0].send_at", "INVALID_TIMESTAMP"),
    ]


def test_the_error_message_counts_the_violations() -> None:
    with pytest.raises(InvalidRequest, match=r"\(3 violations\)"):
        accept(draft(to=None), draft(body=None), draft(sender=None))


# --- fingerprint ---------------------------------------------------------------------------


def test_the_same_content_spelled_differently_has_the_same_fingerprint() -> None:
    spellings = [
        draft(to="447700900123", send_at="2026-03-01T12:30:00Z"),
        draft(to="+447700900123", send_at="2026-03-01T12:30Z"),
        draft(to="+44 7700 900123", send_at="2026-03-01T13:30:00+01:00"),
        draft(to=" 44 7700 900 123", send_at="2026-03-01T13:30:00.000+0100"),
        draft(to="447700900123", send_at="2026-03-01T12:30:00"),
    ]
    fingerprints = {m.fingerprint() for m in accept(*spellings)}
    assert len(fingerprints) == 1


def test_content_given_through_defaults_fingerprints_like_content_given_inline() -> None:
    inline = accept_one(draft(callback="https://example.com/dr"))
    via_defaults = accept_one(draft(), defaults=MessageDraft(callback="https://example.com/dr"))
    assert inline.fingerprint() == via_defaults.fingerprint()


@pytest.mark.parametrize(
    "changed",
    [
        {"body": "Hello!"},
        {"body": "hello"},
        {"to": "447700900124"},
        {"sender": SenderDraft("custom", "Other")},
        {"sender": SHARED},
        {"callback": "https://example.com/dr"},
        {"channels": ("rcs", "sms")},
        {"send_at": "2026-03-01T12:30:00Z"},
    ],
)
def test_different_content_has_a_different_fingerprint(changed: dict[str, Any]) -> None:
    original, other = accept(draft(), draft(**changed))
    assert original.fingerprint() != other.fingerprint()


def test_two_send_at_instants_have_different_fingerprints() -> None:
    first, second = accept(draft(send_at=at(hours=1)), draft(send_at=at(hours=1, seconds=1)))
    assert first.fingerprint() != second.fingerprint()


@pytest.mark.parametrize("send_at", [None, "2026-01-01T09:00:00Z", at(minutes=3)])
def test_an_unscheduled_message_retried_later_keeps_its_fingerprint(send_at: str | None) -> None:
    first = accept_one(draft(send_at=send_at), now=NOW)
    retry = accept_one(draft(send_at=send_at), now=NOW + timedelta(minutes=2))
    assert first.due_at != retry.due_at
    assert first.fingerprint() == retry.fingerprint()


def test_the_stored_fingerprint_format_does_not_drift() -> None:
    """Fingerprints are persisted: a change here turns every retry of a stored id into a
    conflict, so it needs a migration that recomputes them. The value pins the format."""
    message = accept_one(
        draft(
            to="+44 7700 900123",
            sender=SenderDraft("custom", "Acme"),
            body="Hello",
            callback="https://example.com/dr",
            channels=("rcs", "sms"),
            send_at="2026-03-02T09:00:00Z",
        )
    )
    assert message.fingerprint() == (
        "716ffff7e1ac75aaf879d6e6563fb98e7921fedca7adc185a1bbba31d684695a"
    )
