"""The SMTP receiver against real clients on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiosmtplib
import pytest
from server_support import RunningServer, lead_message, wait_until_parsed

from leadparse.server.config import load_settings
from leadparse.server.smtp import (
    SmtpServer,
    has_bare_line_end,
    has_smuggled_end_of_data,
    trace_headers,
)
from leadparse.server.store import IncomingMessage, SQLiteStore

StartServer = Callable[..., RunningServer]


def _client(server: RunningServer) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test")
    client.ehlo()
    return client


def _queued_id(reply: bytes) -> str:
    # The 250 reply to DATA ends in "queued as <request id>".
    return reply.decode().rsplit(" ", 1)[-1]


def test_plain_message_stored_with_trace_headers(start_server: StartServer) -> None:
    server = start_server()
    body = lead_message(1)
    with _client(server) as client:
        client.mail("alice@example.org")
        client.rcpt("sales+adwords@leads.test")
        code, reply = client.data(body)
    assert code == 250
    request_id = _queued_id(reply)
    assert len(request_id) == 32

    store = server.open_store()
    wait_until_parsed(store, 1)
    [message_id] = store.message_ids(request_id=request_id)
    message = store.get_message(message_id)
    assert message.mail_from == "alice@example.org"
    assert message.rcpt_tos == ("sales+adwords@leads.test",)
    assert message.raw.endswith(body)
    head = message.raw[: -len(body)].decode()
    assert head.startswith("Received: from client.test ([127.0.0.1])\r\n")
    assert f"by mx.test (leadparse) with ESMTP id {request_id}" in head
    assert "\r\n\tfor <sales+adwords@leads.test>;\r\n" in head
    assert head.endswith(f"X-Leadparse-Request-Id: {request_id}\r\n")
    [lead] = list(store.iter_leads())
    assert lead["subject"] == "Quote request 1"
    assert lead["classification"]["kind"] == "lead"
    assert lead["channel"]["plus_tag"] == "adwords"
    store.close()


def test_8bitmime_body_kept_byte_for_byte(start_server: StartServer) -> None:
    server = start_server()
    body = (
        "From: Jörg Müller <joerg@example.de>\r\n"
        "To: sales@leads.test\r\n"
        "Subject: Angebot\r\n"
        "Message-ID: <8bit-1@example.de>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Grüße aus Köln, wir möchten ein Angebot.\r\n"
    ).encode()
    with _client(server) as client:
        assert client.has_extn("8bitmime")
        client.sendmail(
            "joerg@example.de",
            ["sales@leads.test"],
            body,
            mail_options=["BODY=8BITMIME"],
        )
    store = server.open_store()
    wait_until_parsed(store, 1)
    message = store.get_message(store.message_ids()[0])
    assert message.raw.endswith(body)
    [lead] = list(store.iter_leads())
    assert "Grüße aus Köln" in lead["body_text"]
    store.close()


def test_smtputf8_address_and_header_accepted(start_server: StartServer) -> None:
    server = start_server()
    body = (
        "From: Jürgen <jürgen@beispiel.de>\r\n"
        "To: vertrieb@leads.test\r\n"
        "Subject: Anfrage für 20 Plätze\r\n"
        "Message-ID: <utf8-1@beispiel.de>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Bitte um ein Angebot.\r\n"
    ).encode()
    with _client(server) as client:
        assert client.has_extn("smtputf8")
        refused = client.sendmail(
            "jürgen@beispiel.de",
            ["vertrieb@leads.test"],
            body,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    assert refused == {}
    store = server.open_store()
    wait_until_parsed(store, 1)
    message = store.get_message(store.message_ids()[0])
    assert message.mail_from == "jürgen@beispiel.de"
    assert b" with UTF8SMTP id " in message.raw
    [lead] = list(store.iter_leads())
    assert lead["subject"] == "Anfrage für 20 Plätze"
    store.close()


def test_size_limit_rejects_declared_and_actual(start_server: StartServer) -> None:
    server = start_server(**{"smtp.max_message_bytes": 10_000})
    with _client(server) as client:
        assert client.esmtp_features["size"] == "10000"
        code, reply = client.mail("alice@example.org", ["SIZE=20000"])
        assert code == 552
        # A client that does not declare SIZE is stopped after the data.
        assert client.mail("alice@example.org")[0] == 250
        assert client.rcpt("sales@leads.test")[0] == 250
        code, reply = client.data(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 20)
        assert code == 552
        assert reply == b"Error: Too much mail data"
    store = server.open_store()
    assert store.message_ids() == []
    store.close()


@pytest.mark.parametrize(
    "recipient",
    [
        "someone@foreign.example",
        "sales@leads.test.foreign.example",
        "sales@sub.leads.test",
        "sales@example.test.evil.example",
        "user%foreign.example@foreign.example",
    ],
)
def test_relay_attempt_gets_550(start_server: StartServer, recipient: str) -> None:
    server = start_server()
    with _client(server) as client:
        client.mail("spammer@example.net")
        code, reply = client.rcpt(recipient)
    assert code == 550
    assert reply.startswith(b"5.7.1 Relay access denied")


def test_listed_domain_accepts_only_listed_mailboxes(start_server: StartServer) -> None:
    server = start_server()
    with _client(server) as client:
        client.mail("alice@example.org")
        assert client.rcpt("Sales@Example.TEST")[0] == 250
        assert client.rcpt("sales+spring@example.test")[0] == 250
        assert client.rcpt("postmaster@example.test")[0] == 250
        code, reply = client.rcpt("info@example.test")
        assert code == 550
        assert reply.startswith(b"5.1.1")
        assert client.rcpt("anything@LEADS.test")[0] == 250
        assert client.rcpt("postmaster")[0] == 250
        assert client.rcpt("webmaster")[0] == 550


def test_recipient_limit_answers_452(start_server: StartServer) -> None:
    server = start_server(**{"smtp.max_recipients": 2})
    with _client(server) as client:
        client.mail("alice@example.org")
        assert client.rcpt("a@leads.test")[0] == 250
        assert client.rcpt("b@leads.test")[0] == 250
        code, reply = client.rcpt("c@leads.test")
    assert code == 452
    assert reply == b"4.5.3 Too many recipients"


def test_connection_limit_answers_421(start_server: StartServer) -> None:
    server = start_server(**{"smtp.max_connections": 2})
    first = _client(server)
    second = _client(server)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", server.port)
    assert refused.value.smtp_code == 421
    first.quit()
    # A freed slot admits the next client.
    third = _client(server)
    assert third.noop()[0] == 250
    third.quit()
    second.quit()


def test_idle_session_closed_after_timeout(start_server: StartServer) -> None:
    server = start_server(**{"smtp.idle_timeout": 0.3})
    client = _client(server)
    time.sleep(1.0)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("mx.test")]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_starttls_required_before_mail(
    start_server: StartServer, tmp_path: Path
) -> None:
    cert_path, key_path = _self_signed(tmp_path)
    server = start_server(
        **{
            "smtp.tls_cert": cert_path,
            "smtp.tls_key": key_path,
            "smtp.require_tls": True,
        }
    )
    with _client(server) as client:
        assert client.has_extn("starttls")
        code, reply = client.mail("alice@example.org")
        assert code == 530
        assert reply == b"Must issue a STARTTLS command first"
        context = ssl.create_default_context(cafile=str(cert_path))
        context.check_hostname = False
        assert client.starttls(context=context)[0] == 220
        client.ehlo()
        assert client.sock is not None
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in {"TLSv1.2", "TLSv1.3"}
        client.sendmail("alice@example.org", ["sales@leads.test"], lead_message(7))
    store = server.open_store()
    wait_until_parsed(store, 1)
    message = store.get_message(store.message_ids()[0])
    assert b" with ESMTPS id " in message.raw
    store.close()


def _raw_session(port: int, payload: bytes) -> list[str]:
    """Send *payload* on a raw socket and return every reply line until 221."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        received = b""
        sock.sendall(payload)
        while not received.endswith(b"221 Bye\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received.decode().split("\r\n")[:-1]


_ENVELOPE = (
    b"EHLO client.test\r\n"
    b"MAIL FROM:<alice@example.org>\r\n"
    b"RCPT TO:<sales@leads.test>\r\n"
    b"DATA\r\n"
)
_SMUGGLED = (
    b"MAIL FROM:<ceo@example.test>\r\n"
    b"RCPT TO:<sales@leads.test>\r\n"
    b"DATA\r\n"
    b"From: ceo@example.test\r\nSubject: smuggled\r\n\r\nwire money\r\n"
)


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"],
    ids=["lf-lf", "cr-cr", "crlf-lf", "lf-crlf", "cr-crlf", "crlf-cr"],
)
def test_smuggled_end_of_data_rejected(
    start_server: StartServer, fake_end: bytes
) -> None:
    server = start_server()
    payload = (
        _ENVELOPE
        + b"From: alice@example.org\r\nSubject: first\r\n\r\nhello"
        + fake_end
        + _SMUGGLED
        + b".\r\nQUIT\r\n"
    )
    replies = _raw_session(server.port, payload)
    codes = [line[:3] for line in replies if line[3:4] == " "]
    # One DATA, one verdict: the smuggled MAIL/RCPT/DATA stayed message content.
    assert codes == ["220", "250", "250", "250", "354", "550", "221"]
    assert "5.5.2" in replies[-2]
    store = server.open_store()
    assert store.message_ids() == []
    store.close()


def test_dot_stuffed_line_is_content(start_server: StartServer) -> None:
    server = start_server()
    payload = (
        _ENVELOPE
        + b"From: alice@example.org\r\nSubject: dots\r\n\r\nline\r\n..\r\nafter\r\n"
        + b".\r\nQUIT\r\n"
    )
    replies = _raw_session(server.port, payload)
    assert replies[-2].startswith("250 2.0.0 OK queued as ")
    store = server.open_store()
    message = store.get_message(store.message_ids()[0])
    assert message.raw.endswith(b"\r\n\r\nline\r\n.\r\nafter\r\n")
    store.close()


def test_bare_newline_rejected_when_configured(start_server: StartServer) -> None:
    server = start_server(**{"smtp.reject_bare_newlines": True})
    payload = _ENVELOPE + b"Subject: x\r\n\r\nbare\nline\r\n.\r\nQUIT\r\n"
    replies = _raw_session(server.port, payload)
    assert replies[-2].startswith("550 5.5.2 ")


def test_line_end_checks() -> None:
    assert has_smuggled_end_of_data(b".\nrest") is True
    assert has_smuggled_end_of_data(b"a\r\n.\r\nb") is False
    assert has_smuggled_end_of_data(b"a\r\n.x\nb") is False
    assert has_bare_line_end(b"a\r\nb\r\n") is False
    assert has_bare_line_end(b"a\nb") is True
    assert has_bare_line_end(b"a\rb") is True


def test_trace_headers_sanitize_client_text() -> None:
    now = dt.datetime(2024, 6, 4, 10, 0, tzinfo=dt.UTC)
    header = trace_headers(
        request_id="abc",
        helo="evil\r\nBcc: x;(y)",
        peer_ip="127.0.0.1",
        hostname="mx.test",
        protocol="ESMTP",
        rcpt_tos=["a@leads.test", "b@leads.test"],
        now=now,
    )
    assert header == (
        b"Received: from evil__Bcc:_x__y_ ([127.0.0.1])\r\n"
        b"\tby mx.test (leadparse) with ESMTP id abc;\r\n"
        b"\tTue, 04 Jun 2024 10:00:00 +0000\r\n"
        b"X-Leadparse-Request-Id: abc\r\n"
    )


async def _send_batch(port: int, client_index: int, count: int) -> list[str]:
    ids = []
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as client:
        for number in range(count):
            index = client_index * 1000 + number
            _errors, reply = await client.sendmail(
                "alice@example.org", ["sales@leads.test"], lead_message(index)
            )
            ids.append(reply.rsplit(" ", 1)[-1])
    return ids


def test_concurrent_clients_parsed_once(start_server: StartServer) -> None:
    server = start_server(**{"workers.processes": 2})

    async def run() -> list[str]:
        batches = await asyncio.gather(
            *(_send_batch(server.port, client, 20) for client in range(10))
        )
        return [request_id for batch in batches for request_id in batch]

    request_ids = asyncio.run(run())
    assert len(request_ids) == 200
    assert len(set(request_ids)) == 200

    store = server.open_store()
    wait_until_parsed(store, 200, timeout=45)
    stats = store.stats()
    assert stats.messages == 200
    assert stats.duplicates == 0
    assert stats.leads_by_kind == {"lead": 200}
    assert stats.jobs_by_state == {"done": 200}
    parses = store.audit_entries(action="parse")
    assert sorted(entry.request_id or "" for entry in parses) == sorted(request_ids)
    store.close()


def test_redelivery_recorded_as_duplicate(start_server: StartServer) -> None:
    server = start_server()
    body = lead_message(42)
    request_ids = []
    for _ in range(3):
        with _client(server) as client:
            client.mail("alice@example.org")
            client.rcpt("sales@leads.test")
            code, reply = client.data(body)
            assert code == 250
            request_ids.append(_queued_id(reply))
        # Sequential delivery makes the first copy the one parsed first.
        store = server.open_store()
        wait_until_parsed(store, len(request_ids))
        store.close()

    store = server.open_store()
    first, second, third = (store.message_ids(request_id=rid)[0] for rid in request_ids)
    assert store.get_message(first).duplicate_of is None
    assert store.get_message(second).duplicate_of == first
    assert store.get_message(third).duplicate_of == first
    stats = store.stats()
    assert stats.messages == 3
    assert stats.duplicates == 2
    assert stats.leads_by_kind == {"lead": 1}
    outcomes = [
        entry.detail["outcome"] for entry in store.audit_entries(action="parse")
    ]
    assert outcomes == ["lead", "duplicate", "duplicate"]
    store.close()


class _FailingStore(SQLiteStore):
    def put_messages(self, messages: Sequence[IncomingMessage]) -> list[int]:
        raise OSError(28, "No space left on device")


def test_storage_failure_answers_451(tmp_path: Path) -> None:
    settings = load_settings(
        env={},
        overrides={"smtp.port": 0, "smtp.accept": ["*@leads.test"]},
    )
    store = _FailingStore(tmp_path)
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        server = SmtpServer(settings.smtp, store)
        await server.start()
        holder["port"] = server.port
        stop = asyncio.Event()
        holder["stop"] = stop
        holder["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await server.stop(0)

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    assert ready.wait(10)
    try:
        with smtplib.SMTP("127.0.0.1", int(str(holder["port"]))) as client:
            client.ehlo()
            client.mail("alice@example.org")
            client.rcpt("sales@leads.test")
            code, reply = client.data(lead_message(1))
        assert code == 451
        assert reply == b"4.3.0 Local storage failure; try again later"
    finally:
        loop = holder["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        stop = holder["stop"]
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        store.close()


def test_logs_carry_request_id_not_addresses(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="leadparse")
    server = start_server()
    with _client(server) as client:
        client.mail("secret.sender@example.org")
        assert client.rcpt("nobody@foreign.example")[0] == 550
        client.rcpt("hidden.inbox@leads.test")
        code, reply = client.data(lead_message(3, sender="secret.sender@example.org"))
    assert code == 250
    request_id = _queued_id(reply)
    store = server.open_store()
    wait_until_parsed(store, 1)
    store.close()
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert f"accepted message: request_id={request_id}" in text
    assert f"parsed: request_id={request_id}" in text
    assert f"rejected recipient: request_id={request_id} reason=relay" in text
    assert "secret.sender" not in text
    assert "hidden.inbox" not in text
    assert "foreign.example" not in text
    assert "licences" not in text


def test_shutdown_lets_open_transaction_finish(start_server: StartServer) -> None:
    server = start_server(**{"smtp.drain_timeout": 10})
    busy = _client(server)
    idle = _client(server)
    busy.mail("alice@example.org")
    busy.rcpt("sales@leads.test")
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.3)
    # The idle session received a 421 saying the service is shutting down; smtplib reads
    # that unsolicited 421 as the reply to its next command.
    assert idle.noop() == (421, b"4.3.2 Service shutting down")
    code, reply = busy.data(lead_message(5))
    assert code == 250
    stopper.join(30)
    assert not stopper.is_alive()
    store = SQLiteStore(server.settings.storage.data_dir)
    assert store.message_ids(request_id=_queued_id(reply)) != []
    store.close()
    busy.close()
    idle.close()


def test_parse_failure_retried_then_failed(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leadparse")
    server = start_server(
        **{
            "workers.parser": "server_support:failing_parser",
            "workers.max_attempts": 2,
        }
    )
    with _client(server) as client:
        client.mail("alice@example.org")
        client.rcpt("sales@leads.test")
        code, reply = client.data(lead_message(9))
    assert code == 250
    request_id = _queued_id(reply)
    store = server.open_store()
    wait_until_parsed(store, 1)
    assert store.stats().jobs_by_state == {"failed": 1}
    assert store.stats().leads_by_kind == {}
    store.close()
    failures = [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith("parse failed:")
    ]
    assert failures == [
        f"parse failed: request_id={request_id} attempt=1 error=ValueError retry=True",
        f"parse failed: request_id={request_id} attempt=2 error=ValueError retry=False",
    ]
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert f"parse job failed permanently: request_id={request_id} attempts=2" in text
    assert "cannot parse" not in text


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (
            b"MAIL FROM:<\xff\xfe@example.test>\r\n",
            ["220", "250", "553"],
        ),
        (
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<jos\xe9@leads.test>\r\n",
            ["220", "250", "250", "553"],
        ),
    ],
    ids=["mail-from", "rcpt-to"],
)
def test_non_utf8_address_rejected_permanently(
    start_server: StartServer, commands: bytes, expected: list[str]
) -> None:
    server = start_server()

    replies = _raw_session(
        server.port, b"EHLO client.test\r\n" + commands + b"QUIT\r\n"
    )

    codes = [line[:3] for line in replies if line[3:4] == " "]
    assert codes == [*expected, "221"]
    store = server.open_store()
    assert store.message_ids() == []
    store.close()
