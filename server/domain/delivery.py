"""What happens to a queued message after it is accepted: its states and its receipt codes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum


class MessageStatus(StrEnum):
    """A queued message's life: queued → sending → sent → delivered | failed; or cancelled."""

    QUEUED = "queued"
    """Waiting for its `due_at` (at once, a schedule, or a retry's backoff)."""
    SENDING = "sending"
    """Claimed by a dispatcher, whose lease ends at `due_at`."""
    SENT = "sent"
    """With the carrier: accepted, its parts' receipts awaited until `due_at`, when it
    expires (the database value keeps its first name)."""
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """A scheduled batch cancelled before release: never sent, never reported."""

    @property
    def final(self) -> bool:
        return self in (MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.CANCELLED)


class AttemptOutcome(StrEnum):
    """What a channel driver answered to one try, as the attempts log records it."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNSUPPORTED = "unsupported"
    TRY_LATER = "try_later"
    ERROR = "error"
    """The driver raised (a bug or an unexpected failure): handled as TRY_LATER."""


@dataclass(frozen=True)
class ReceiptCode:
    """One delivery-receipt code: opaque string, as the vendor's `/dr-responses` lists them."""

    code: str
    description: str
    delivered: bool


DELIVERED = ReceiptCode("00", "Successful", True)
UNCONFIRMED = ReceiptCode("1", "Sent to the SME, but delivery could not be confirmed", False)
REPLACED = ReceiptCode("2", "Replaced at the SMSC", False)
HANDSET_UNREACHABLE = ReceiptCode("22", "No response from the SME (e.g. phone switched off)", False)
CHANNEL_UNSUPPORTED = ReceiptCode(
    "30", "The handset supports none of the message's channels", False
)
REJECTED_AS_SPAM = ReceiptCode("31", "The carrier rejected the content or sender as spam", False)
OPTED_OUT = ReceiptCode("32", "The user has opted out of business messages", False)
CARRIER_TIMEOUT = ReceiptCode("41", "The carrier did not answer in time, after every retry", False)
UNDELIVERABLE = ReceiptCode("42", "The message could not be handed to a provider", False)
EXPIRED = ReceiptCode("43", "The carrier sent no delivery receipt in time", False)

RECEIPT_CODES: tuple[ReceiptCode, ...] = (
    DELIVERED,
    UNCONFIRMED,
    REPLACED,
    HANDSET_UNREACHABLE,
    CHANNEL_UNSUPPORTED,
    REJECTED_AS_SPAM,
    OPTED_OUT,
    CARRIER_TIMEOUT,
    UNDELIVERABLE,
    EXPIRED,
)
"""Every code this service reports, in `/dr-responses` order; the first four are the vendor's."""

_BY_CODE = {receipt.code: receipt for receipt in RECEIPT_CODES}


MAX_CODE_LENGTH = 8
"""The longest receipt code the queue and the attempts log store."""


def known_receipt_code(code: str) -> ReceiptCode | None:
    """One of RECEIPT_CODES, or None for a code this service does not list."""
    return _BY_CODE.get(code)


def receipt_code(code: str) -> ReceiptCode:
    """The known code, or an undelivered one with a generic description (a carrier's own)."""
    return _BY_CODE.get(code) or ReceiptCode(code, "Not delivered (carrier code)", False)


GSM_7BIT = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_7BIT_EXTENDED = frozenset("^{}\\[~]|€\f")
"""Characters that take two septets (an escape and the character)."""


def units(body: str) -> int:
    """SMS parts the body takes: GSM-7 160 septets alone or 153 per part, else UCS-2 70 / 67
    (a character outside the basic plane takes two UTF-16 units)."""
    if all(c in GSM_7BIT or c in GSM_7BIT_EXTENDED for c in body):
        length = sum(2 if c in GSM_7BIT_EXTENDED else 1 for c in body)
        single, part = 160, 153
    else:
        length = sum(2 if ord(c) > 0xFFFF else 1 for c in body)
        single, part = 70, 67
    if length <= single:
        return 1
    return -(-length // part)


def receipt_webhook_body(
    destination: str, batch_uuid: str, message_uuid: str, receipt: ReceiptCode
) -> str:
    """The vendor's delivery-receipt webhook body, exactly: `destination` with a plus, then
    `delivered`, `batchuuid`, `messageuuid` and `receiptInfo` {`code`, `description`}. Built
    once, stored, and posted and signed byte for byte on every try."""
    return json.dumps(
        {
            "destination": f"+{destination}",
            "delivered": receipt.delivered,
            "batchuuid": batch_uuid,
            "messageuuid": message_uuid,
            "receiptInfo": {"code": receipt.code, "description": receipt.description},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
