"""Webhook signatures: the one definition the sender, the README snippet and the tests share."""

from __future__ import annotations

from server.domain.signing import sign, signed_input, verify

SECRET = "4fbd2b4686434fafe9fb0160bc4e2e2cad16e447d5533d6fc3514167751c99e3"
BODY = '{"destination":"+447700900001","delivered":true,"receiptInfo":{"code":"00"}}'
KNOWN = "35cbd42dc52f4b8f69d8327f48594b0083eea5e355ee937f33d2e1a7c8440c24"


def test_the_signed_input_is_the_timestamp_a_full_stop_and_the_raw_body() -> None:
    assert signed_input(1767225600, BODY) == b"1767225600." + BODY.encode()
    assert signed_input("1767225600", "é") == b"1767225600.\xc3\xa9"


def test_a_signature_is_the_hex_hmac_sha256_of_that_input() -> None:
    assert sign(SECRET, 1767225600, BODY) == KNOWN
    assert sign(SECRET, "1767225600", BODY.encode()) == KNOWN, "text or bytes, the same"


def test_verify_accepts_the_signature_and_refuses_anything_changed() -> None:
    assert verify(SECRET, 1767225600, BODY, KNOWN)
    assert verify(SECRET, "1767225600", BODY.encode(), f" {KNOWN.upper()}\n")
    assert not verify("another secret", 1767225600, BODY, KNOWN)
    assert not verify(SECRET, 1767225601, BODY, KNOWN)
    assert not verify(SECRET, 1767225600, BODY + " ", KNOWN)
    assert not verify(SECRET, 1767225600, BODY, KNOWN[:-1])
    assert not verify(SECRET, 1767225600, BODY, "é" * 64), "non-ASCII is no signature"
