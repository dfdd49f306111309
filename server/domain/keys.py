"""API keys: random, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "mp_"


def generate_key() -> str:
    """A new key with 192 random bits, URL-safe so it travels in a query string unescaped."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    """SHA-256 of the key: a high-entropy secret needs no slow hash, and lookups stay indexed."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
