"""Outbound acknowledgments against a real aiosmtpd relay on loopback."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from api_support import free_port
from click.testing import CliRunner
from server_support import lead_message

from leadparse.cli import main
from leadparse.server.acks import AckSender, address_hash, is_opt_out, run
from leadparse.server.config import AcksSettings, load_settings
from leadparse.server.store import IncomingMessage, SQLiteStore
from leadparse.server.worker import WORKER_ACTOR, parse_message

dkim = pytest.importorskip("dkim", reason="DKIM signing needs dkimpy ('server' extra)")

FROM = "sales@leads.test"


class _Capture:
    """aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        return "250 OK"


@pytest.fixture
def relay() -> Iterator[tuple[_Capture, int]]:
    handler = _Capture()
    # aiosmtpd 1.4 connects to its own port to check that it started, so
    # port 0 cannot be used. A port that was free a moment ago is used instead.
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, bytes]:
    """Write an RSA key for DKIM; return its path and the DNS TXT record."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _settings(port: int, **overrides: Any) -> AcksSettings:
    values: dict[str, Any] = {
        "acks.enabled": True,
        "acks.from_address": FROM,
        "acks.relay_port": port,
        "acks.timeout": 5,
    }
    values.update({f"acks.{key}": value for key, value in overrides.items()})
    return load_settings(env={}, overrides=values).acks


def _add_lead(store: SQLiteStore, raw: bytes, request_id: str) -> None:
    """Store and parse one message through the worker's real code path."""
    incoming = IncomingMessage(
        request_id=request_id,
        received_at=datetime.now(UTC),
        mail_from="alice@example.org",
        rcpt_tos=("sales@leads.test",),
        raw=raw,
    )
    store.put_message(incoming)
    [job] = store.claim_jobs(1)
    message = store.get_message(job.message_id)
    result = parse_message(
        "leadparse:parse_lead",
        message.raw,
        message.mail_from,
        message.rcpt_tos,
        message.received_at,
    )
    store.complete_job(job.id, result, actor=WORKER_ACTOR)


def _raw(headers: list[str], body: str) -> bytes:
    base = ["To: sales@leads.test", "Date: Tue, 04 Jun 2024 10:00:00 +0000"]
    return ("\r\n".join(base + headers) + "\r\n\r\n" + body + "\r\n").encode()


async def _pass(sender: AckSender) -> int:
    return await sender.run_once()


def _outcomes(store: SQLiteStore) -> list[str]:
    rows = (
        store._reader()
        .execute("SELECT state FROM outbound_acks ORDER BY id")
        .fetchall()
    )
    return [row["state"] for row in rows]


def test_ack_headers_and_dkim_verify(
    relay: tuple[_Capture, int], store: SQLiteStore, dkim_key: tuple[Path, bytes]
) -> None:
    handler, port = relay
    key_path, record = dkim_key
    settings = _settings(
        port,
        dkim_domain="leads.test",
        dkim_selector="s1",
        dkim_private_key=str(key_path),
    )
    sender = AckSender(store, settings)
    assert asyncio.run(_pass(sender)) == 0
    reply_to = _raw(
        [
            "From: Alice <alice@example.org>",
            "Reply-To: Alice Office <office@example.org>",
            "Subject: Quote request 7",
            "Message-ID: <lead-7@example.org>",
            "References: <older@example.org>",
        ],
        "Hello, we would like a quote for 7 licences.",
    )
    _add_lead(store, reply_to, "r1")

    assert asyncio.run(_pass(sender)) == 1
    [(mail_from, rcpt_tos, data)] = handler.messages
    assert mail_from == FROM
    assert rcpt_tos == ["office@example.org"]
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["From"] == FROM
    assert parsed["To"] == "office@example.org"
    assert parsed["Subject"] == "Re: Quote request 7"
    assert parsed["In-Reply-To"] == "<lead-7@example.org>"
    assert parsed["References"] == "<older@example.org> <lead-7@example.org>"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["Message-ID"].endswith("@leads.test>")
    assert parsed["DKIM-Signature"] is not None
    assert "d=leads.test" in parsed["DKIM-Signature"]

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s1._domainkey.leads.test." else b""

    assert dkim.verify(data, dnsfunc=dnsfunc)
    tampered = data.replace(b"Re: Quote request 7", b"Re: Quote request 8")
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)
    assert _outcomes(store) == ["sent"]


def test_machine_kinds_get_no_ack(
    relay: tuple[_Capture, int], store: SQLiteStore
) -> None:
    handler, port = relay
    sender = AckSender(store, _settings(port))
    asyncio.run(_pass(sender))
    messages = {
        "auto": _raw(
            [
                "From: Carol <carol@example.org>",
                "Subject: Out of office",
                "Message-ID: <ooo-1@example.org>",
                "Auto-Submitted: auto-replied",
            ],
            "I am out of the office until Monday.",
        ),
        "bulk": _raw(
            [
                "From: News <news@example.org>",
                "Subject: Our newsletter",
                "Message-ID: <bulk-1@example.org>",
                "Precedence: bulk",
                "List-Unsubscribe: <mailto:unsub@example.org>",
                "List-Id: <news.example.org>",
            ],
            "Monthly news.",
        ),
        "bounce": _raw(
            [
                "From: Mail Delivery System <MAILER-DAEMON@example.org>",
                "Subject: Undelivered Mail Returned to Sender",
                "Message-ID: <bounce-1@example.org>",
            ],
            "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n\r\n<nobody@example.org>: host example.org said: 550 5.1.1 User unknown",
        ),
    }
    for name, raw in messages.items():
        _add_lead(store, raw, name)
    assert sorted(lead.kind for lead in store.leads_after(0, limit=10)) == [
        "auto_reply",
        "bounce",
        "bulk",
    ]

    assert asyncio.run(_pass(sender)) == 3
    assert handler.messages == []
    assert _outcomes(store) == ["skipped_kind"] * 3


def test_suppressed_addresses_get_no_ack(
    relay: tuple[_Capture, int], store: SQLiteStore, tmp_path: Path
) -> None:
    handler, port = relay
    result = CliRunner().invoke(
        main, ["suppress", "--data-dir", str(tmp_path / "data"), "Alice@Example.org"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == "suppressed\n"
    again = CliRunner().invoke(
        main, ["suppress", "--data-dir", str(tmp_path / "data"), "alice@example.org"]
    )
    assert again.output == "already suppressed\n"
    # Only the hash is stored, never the address.
    rows = (
        store._reader()
        .execute("SELECT address_hash, reason FROM suppressions")
        .fetchall()
    )
    assert [(row["address_hash"], row["reason"]) for row in rows] == [
        (address_hash("alice@example.org"), "manual")
    ]

    sender = AckSender(store, _settings(port, suppress="bob@example.org"))
    asyncio.run(_pass(sender))
    _add_lead(store, lead_message(1), "a1")
    _add_lead(store, lead_message(2, sender="bob@example.org"), "b1")
    _add_lead(store, lead_message(3, sender=FROM), "own")
    assert asyncio.run(_pass(sender)) == 3
    assert handler.messages == []
    assert _outcomes(store) == ["skipped_suppressed"] * 3


def test_rate_limit_one_ack_per_window(
    relay: tuple[_Capture, int], store: SQLiteStore
) -> None:
    handler, port = relay
    clock = [datetime.now(UTC)]
    sender = AckSender(
        store, _settings(port, window_seconds=3600), now=lambda: clock[0]
    )
    asyncio.run(_pass(sender))
    _add_lead(store, lead_message(1), "m1")
    _add_lead(store, lead_message(2), "m2")
    asyncio.run(_pass(sender))
    assert len(handler.messages) == 1
    assert _outcomes(store) == ["sent", "skipped_rate_limited"]

    clock[0] += timedelta(seconds=3601)
    _add_lead(store, lead_message(3), "m3")
    asyncio.run(_pass(sender))
    assert len(handler.messages) == 2
    assert _outcomes(store) == ["sent", "skipped_rate_limited", "sent"]


def test_opt_out_suppresses_sender(
    relay: tuple[_Capture, int], store: SQLiteStore
) -> None:
    handler, port = relay
    sender = AckSender(store, _settings(port))
    asyncio.run(_pass(sender))
    _add_lead(
        store,
        _raw(
            [
                "From: Eve <eve@example.org>",
                "Subject: Re: Your quote",
                "Message-ID: <stop-1@example.org>",
            ],
            "STOP\r\n\r\nOn Monday someone wrote:\r\n> hello",
        ),
        "stop",
    )
    _add_lead(
        store,
        _raw(
            [
                "From: Dan <dan@example.org>",
                "Subject: unsubscribe",
                "Message-ID: <unsub-1@example.org>",
            ],
            "",
        ),
        "unsub",
    )
    _add_lead(store, lead_message(9, sender="eve@example.org"), "later")
    asyncio.run(_pass(sender))
    assert handler.messages == []
    assert _outcomes(store) == ["opt_out", "opt_out", "skipped_suppressed"]
    assert store.is_suppressed(address_hash("eve@example.org"))
    assert store.is_suppressed(address_hash("dan@example.org"))


def test_opt_out_detection_cases() -> None:
    assert is_opt_out({"subject": "Unsubscribe me"})
    assert is_opt_out({"subject": "Re: STOP"})
    assert is_opt_out({"subject": "hi", "stripped_text": "\n  opt-out please"})
    assert is_opt_out({"classification": {"reasons": ["unsubscribe_request"]}})
    assert not is_opt_out(
        {"subject": "Quote", "stripped_text": "We cannot stop growing."}
    )
    assert not is_opt_out({"subject": "Stopwatch quote", "stripped_text": "Hello"})


def test_relay_down_records_failure(store: SQLiteStore) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    sender = AckSender(store, _settings(closed))
    asyncio.run(_pass(sender))
    _add_lead(store, lead_message(1), "down")
    asyncio.run(_pass(sender))
    rows = store._reader().execute("SELECT state, error FROM outbound_acks").fetchall()
    assert [(row["state"], row["error"]) for row in rows] == [
        ("failed", "SMTPConnectError")
    ]


def test_existing_leads_not_acked_on_first_start(
    relay: tuple[_Capture, int], store: SQLiteStore
) -> None:
    handler, port = relay
    _add_lead(store, lead_message(1), "old")
    sender = AckSender(store, _settings(port))
    assert asyncio.run(_pass(sender)) == 0
    _add_lead(store, lead_message(2, sender="zoe@example.org"), "new")
    assert asyncio.run(_pass(sender)) == 1
    assert [rcpt for _from, rcpt, _data in handler.messages] == [["zoe@example.org"]]


def test_run_returns_when_disabled(store: SQLiteStore) -> None:
    settings = load_settings(env={})
    assert settings.acks.enabled is False
    asyncio.run(asyncio.wait_for(run(settings, store, asyncio.Event()), 2))


def test_settings_reject_half_dkim_and_missing_from() -> None:
    from leadparse.server.config import ConfigError

    with pytest.raises(ConfigError, match="from_address is not set"):
        load_settings(env={}, overrides={"acks.enabled": True})
    with pytest.raises(
        ConfigError, match="dkim_domain, dkim_selector and dkim_private_key"
    ):
        load_settings(env={}, overrides={"acks.dkim_domain": "leads.test"})
