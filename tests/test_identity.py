from __future__ import annotations

from leadparse import parse_lead

BASE = (
    b"From: Ann <ann@example.org>\r\n"
    b"To: sales@example.com\r\n"
    b"Subject: Quote please\r\n"
    b"Date: Tue, 05 Mar 2024 09:14:22 +0100\r\n"
    b"Message-ID: <q1@example.org>\r\n"
    b"\r\n"
    b"Please send a quote for 40 desks.\r\n"
)


def key(raw: bytes) -> str:
    return parse_lead(raw).idempotency_key


def test_key_is_hex_sha256() -> None:
    value = key(BASE)

    assert len(value) == 64
    assert int(value, 16) >= 0


def test_key_ignores_new_trace_headers() -> None:
    redelivered = (
        b"Received: from mx2.example.net by mx.example.com; Tue, 5 Mar 2024 09:20:00 +0000\r\n"
        b"Return-Path: <ann@example.org>\r\n"
        b"Delivered-To: sales@example.com\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; b=abc\r\n"
        b"X-Spam-Score: 0.1\r\n" + BASE
    )

    assert key(redelivered) == key(BASE)


def test_key_ignores_line_ending_changes() -> None:
    assert key(BASE.replace(b"\r\n", b"\n")) == key(BASE)


def test_key_ignores_header_refolding() -> None:
    refolded = BASE.replace(b"Subject: Quote please", b"Subject: Quote\r\n please")

    assert key(refolded) == key(BASE)


def test_key_deterministic_without_message_id() -> None:
    without = BASE.replace(b"Message-ID: <q1@example.org>\r\n", b"")

    assert key(without) == key(without)
    assert key(without) != key(BASE)


def test_key_differs_for_new_content_under_reused_id() -> None:
    other = BASE.replace(b"40 desks", b"80 desks")

    assert key(other) != key(BASE)


def test_key_differs_for_other_subject_same_body() -> None:
    other = BASE.replace(b"Quote please", b"Another quote")

    assert key(other) != key(BASE)
