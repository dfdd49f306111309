"""Webhook signatures: hex HMAC-SHA256, keyed with the account's secret, of `{timestamp}.{body}`."""

from __future__ import annotations

import hashlib
import hmac


def signed_input(timestamp: int | str, body: str | bytes) -> bytes:
    """What is signed: the `timestamp` header's digits, a full stop, then the raw body bytes."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return f"{timestamp}.".encode("ascii") + raw


def sign(secret: str, timestamp: int | str, body: str | bytes) -> str:
    """The `signature` header of a post made at `timestamp` (epoch seconds) with `body`."""
    digest = hmac.new(secret.encode("utf-8"), signed_input(timestamp, body), hashlib.sha256)
    return digest.hexdigest()


def verify(secret: str, timestamp: int | str, body: str | bytes, signature: str) -> bool:
    """True when `signature` is the one `secret` makes; compared in constant time."""
    given = signature.strip().lower()
    return given.isascii() and hmac.compare_digest(sign(secret, timestamp, body), given)
