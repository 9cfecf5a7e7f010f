"""Tests for delivery-status and plain-text bounce parsing."""

from __future__ import annotations

import email.policy
from email.parser import BytesParser

import pytest

from leadparse._bounce import bounce_type, message_text, read_bounce


def _read(raw: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    message = BytesParser(policy=email.policy.compat32).parsebytes(raw)
    bounce = read_bounce(message, message_text(message)).bounce
    return bounce.type, bounce.status, bounce.recipient, bounce.original_message_id


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        ("5.1.1", "550 5.1.1 user unknown", "hard"),
        ("5.2.2", "552 5.2.2 mailbox full", "soft"),
        ("5.1.1", "550 5.1.1 <x@example.org>: mailbox is full", "soft"),
        ("4.4.7", "message expired", "soft"),
        ("4.1.1", "450 4.1.1 user unknown", "soft"),
        ("5.7.1", "550 5.7.1 rejected as spam", "soft"),
        ("5.1.8", "501 5.1.8 Sender address rejected", "soft"),
        (
            "5.2.1",
            "550 5.2.1 The email account that you tried to reach is disabled",
            "soft",
        ),
        ("5.2.1", "550 5.2.1 <x@example.org>... User Unknown", "hard"),
        ("5.0.0", "550 Unknown user x@example.org", "hard"),
        ("5.0.0", "550 Host or domain name not found", "hard"),
        ("5.1.1", "550 5.1.1 sent to too many recipients this hour", "soft"),
        (None, "connection timed out", "soft"),
    ],
)
def test_bounce_type_table(status: str | None, text: str, expected: str) -> None:
    assert bounce_type(status, text) == expected


def test_bounce_qmail_plain_text() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.jp\n"
        b"To: sales@example.net\n"
        b"Subject: failure notice\n\n"
        b"Hi. This is the qmail-send program at mx.example.jp.\n"
        b"I'm afraid I wasn't able to deliver your message to the following"
        b" addresses.\n\n"
        b"<Nobody@Example.ORG>:\n"
        b"remote host said: 550 Unknown user nobody@example.org\n\n"
        b"--- Below this line is a copy of the message.\n\n"
        b"Message-ID: <q-1@example.net>\n"
        b"From: sales@example.net\n"
    )
    assert _read(raw) == ("hard", "5.1.1", "nobody@example.org", "q-1@example.net")


def test_bounce_exim_plain_text_soft() -> None:
    raw = (
        b"From: Mail Delivery System <Mailer-Daemon@mx.example.com>\n"
        b"To: sales@example.net\n"
        b"Subject: Mail delivery failed: returning message to sender\n\n"
        b"This message was created automatically by mail delivery software.\n\n"
        b"A message that you sent could not be delivered to one or more of its\n"
        b"recipients. This is a permanent error. The following address(es) failed:\n\n"
        b"  full.box@example.com\n"
        b"    host mx.example.com [192.0.2.1]\n"
        b"    SMTP error from remote mail server after RCPT TO:<full.box@example.com>:\n"
        b"    552 5.2.2 Mailbox full\n\n"
        b"------ This is a copy of the message, including all the headers. ------\n"
        b"Message-Id: <e-2@example.net>\n"
    )
    assert _read(raw) == ("soft", "5.2.2", "full.box@example.com", "e-2@example.net")


def test_bounce_exchange_no_status_is_hard() -> None:
    raw = (
        b"From: System Administrator <postmaster@example.jp>\n"
        b"To: sales@example.net\n"
        b"Subject: Undeliverable: Offer\n\n"
        b"Your message\n\n  To:      kaito@example.jp\n  Subject: Offer\n\n"
        b"did not reach the following recipient(s):\n\n"
        b"kaito@example.jp on Thu, 29 Apr 2010 00:00:00 -0000\n"
        b"    The recipient name is not recognized\n"
    )
    bounce_kind, status, recipient, message_id = _read(raw)
    assert bounce_kind == "hard"
    assert status is None
    assert recipient == "kaito@example.jp"
    assert message_id is None


def test_bounce_version_numbers_are_not_status() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\n"
        b"To: sales@example.net\n"
        b"Subject: Returned mail\n\n"
        b"Postfix 2.5.1 on 10.5.1.1 could not deliver: 550 no such user here\n"
    )
    bounce_kind, status, _, _ = _read(raw)
    assert status == "5.1.1"
    assert bounce_kind == "hard"


def test_bounce_long_text_is_bounded() -> None:
    filler = b"x" * 200_000
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\nTo: a@example.net\nSubject: x\n\n"
        + filler
        + b"\n550 5.1.1 late status\n"
    )
    message = BytesParser(policy=email.policy.compat32).parsebytes(raw)
    text = message_text(message)
    assert len(text) == 64 * 1024
    assert read_bounce(message, text).bounce.status is None


_CLASS_ONLY_DSN = b"""From: MAILER-DAEMON@mx.example.net
To: sales@shop.example.com
Subject: Delivery status notification: error
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

An error has occurred while attempting to deliver a message for
the following list of recipients:

other@example.org: 452 4.2.2 <other@example.org>: Mailbox full
gone@example.org: 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; gone@example.org
Action: failed
Status: 5.0.0

--b--
"""


def test_bounce_class_only_dsn_status_from_text() -> None:
    bounce_kind, status, recipient, _message_id = _read(_CLASS_ONLY_DSN)
    assert status == "5.1.1"
    assert bounce_kind == "hard"
    assert recipient == "gone@example.org"


def test_bounce_class_only_dsn_other_class_ignored() -> None:
    raw = _CLASS_ONLY_DSN.replace(b"550 5.1.1", b"450 4.1.1")
    _kind, status, recipient, _message_id = _read(raw)
    assert status == "5.0.0"
    assert recipient == "gone@example.org"


def test_bounce_dsn_with_detail_keeps_status() -> None:
    raw = _CLASS_ONLY_DSN.replace(b"Status: 5.0.0", b"Status: 5.2.1")
    _kind, status, _recipient, _message_id = _read(raw)
    assert status == "5.2.1"
