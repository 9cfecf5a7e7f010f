"""The SMTP receiver: an aiosmtpd handler, session limits and the listener.

The server accepts mail only for the recipients in ``smtp.accept`` and never
relays. A message is stored and fsynced before the 250 reply, so a message
that got 250 survives a crash. RFC 5321 section 4.2.5 makes the 250 reply a
promise to deliver. When storing fails the client gets 451 and retries later.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from leadparse.server.config import SmtpSettings
from leadparse.server.store import IncomingMessage, Store

__all__ = [
    "LeadHandler",
    "RecipientPolicy",
    "SmtpServer",
    "has_bare_line_end",
    "has_smuggled_end_of_data",
    "new_request_id",
    "trace_headers",
]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Leadparse-Request-Id"

# A lone dot with a bare CR or LF on either side: the sequences SMTP
# smuggling uses to end DATA early on servers that accept them, so a second
# message hides inside the first. aiosmtpd 1.4.6 (its smtp_DATA reads lines
# ending in CRLF) ends DATA only on <CRLF>.<CRLF>, so such a sequence arrives
# as message content.
_DOT_LINE = re.compile(rb"(?:\A|\r\n|\r|\n)\.(?:\r\n|\r|\n)")
# aiosmtpd removes the first dot of every line that starts with one (RFC 5321
# section 4.5.2) before it calls the handler, so <CRLF>.<LF> arrives as
# <CRLF><LF>: a line that starts with a bare CR or LF.
_UNSTUFFED_DOT_LINE = re.compile(rb"(?:\A|\r\n)(?:\n|\r(?!\n))")
# RFC 5321 section 2.3.8: CR and LF must only occur together as CRLF.
_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_UNSAFE_TRACE_CHARS = re.compile(r"[\x00-\x20\x7f()<>;\\\"]")


def new_request_id() -> str:
    """Return a new unique id for one message (32 hex digits of a UUID4)."""
    return uuid.uuid4().hex


def has_smuggled_end_of_data(data: bytes) -> bool:
    """Return whether *data* contains a dot line with a bare CR or LF around it.

    *data* is the content as aiosmtpd hands it over, after dot-unstuffing.
    A dot line between two CRLFs is legitimate content: the client sent it
    dot-stuffed (RFC 5321 section 4.5.2), so it did not end the data. A line
    that starts with a bare CR or LF is rejected too, because that is what
    ``<CRLF>.<LF>`` and ``<CRLF>.<CR>`` look like after unstuffing.
    """
    if _UNSTUFFED_DOT_LINE.search(data):
        return True
    return any(match.group() != b"\r\n.\r\n" for match in _DOT_LINE.finditer(data))


def has_bare_line_end(data: bytes) -> bool:
    """Return whether *data* contains a CR or LF that is not part of a CRLF pair."""
    return _BARE_LINE_END.search(data) is not None


def _trace_token(value: str | None, fallback: str) -> str:
    # HELO names and addresses come from the client: characters that could
    # end a header line or a comment are replaced, and length is bounded.
    if not value:
        return fallback
    return _UNSAFE_TRACE_CHARS.sub("_", value)[:255]


def trace_headers(
    *,
    request_id: str,
    helo: str | None,
    peer_ip: str | None,
    hostname: str,
    protocol: str,
    rcpt_tos: Iterable[str],
    now: datetime,
) -> bytes:
    """Build the Received and request-id header lines prepended to each message.

    The Received field follows RFC 5321 section 4.4. The ``for`` clause is
    written only for a single recipient, so a message never shows the other
    recipients of its envelope.
    """
    recipients = list(rcpt_tos)
    received = (
        f"Received: from {_trace_token(helo, 'unknown')} "
        f"([{_trace_token(peer_ip, 'unknown')}])\r\n"
        f"\tby {_trace_token(hostname, 'localhost')} (leadparse) "
        f"with {protocol} id {request_id}"
    )
    if len(recipients) == 1:
        received += f"\r\n\tfor <{_trace_token(recipients[0], 'unknown')}>"
    received += f";\r\n\t{format_datetime(now)}\r\n"
    header = f"{REQUEST_ID_HEADER}: {request_id}\r\n"
    return (received + header).encode("utf-8", "surrogateescape")


class RecipientPolicy:
    """Decide which RCPT TO addresses the server accepts.

    Args:
        patterns: ``*@domain`` (catch-all) or ``local@domain`` entries, lower
            case, as :class:`~leadparse.server.config.SmtpSettings` stores them.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self._catch_all: set[str] = set()
        self._mailboxes: dict[str, set[str]] = {}
        for pattern in patterns:
            local, _, domain = pattern.rpartition("@")
            domain = _normalize_domain(domain)
            if local == "*":
                self._catch_all.add(domain)
            else:
                self._mailboxes.setdefault(domain, set()).add(local.casefold())

    @property
    def domains(self) -> list[str]:
        """Return every domain that has at least one accepted recipient."""
        return sorted(self._catch_all | set(self._mailboxes))

    def check(self, address: str) -> str | None:
        """Return ``None`` to accept *address*, else the reason to reject it.

        Reasons are ``"relay"`` (the domain is not served here) and
        ``"mailbox"`` (the domain is served but not this local part).
        Local parts compare case-insensitively and without a ``+tag``.
        """
        # RFC 5321 section 4.5.1: "postmaster" with no domain must be accepted.
        if address.casefold() == "postmaster":
            return None
        local, at, domain = address.rpartition("@")
        if not at or not local:
            return "relay"
        domain = _normalize_domain(domain)
        if domain in self._catch_all:
            return None
        mailboxes = self._mailboxes.get(domain)
        if mailboxes is None:
            return "relay"
        base = local.casefold().split("+", 1)[0]
        # RFC 5321 section 4.5.1: every served domain must accept postmaster.
        if base in mailboxes or base == "postmaster":
            return None
        return "mailbox"


def _normalize_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").casefold()
    if domain.startswith("[") or domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _has_invalid_utf8(address: str) -> bool:
    # aiosmtpd decodes command lines as UTF-8 with surrogateescape, so bytes
    # that are not UTF-8 arrive as lone surrogates. Such an address cannot be
    # stored or sent on, so the client must not get a 250 for it.
    return any("\udc80" <= char <= "\udcff" for char in address)


class MessageWriter:
    """Store messages from concurrent sessions in shared transactions.

    While one batch commits in the executor, new messages queue up. The next
    batch takes all of them, up to *max_batch*. One fsync then covers many
    messages, and the event loop makes one thread hop per batch.

    Args:
        store: where messages go.
        executor: thread for the blocking store call; the loop's default
            executor when ``None``.
        max_batch: messages per transaction at most.
    """

    def __init__(
        self, store: Store, executor: Executor | None = None, max_batch: int = 256
    ) -> None:
        self._store = store
        self._executor = executor
        self._max_batch = max_batch
        self._pending: list[tuple[IncomingMessage, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None

    async def put(self, message: IncomingMessage) -> int:
        """Store *message* durably and return its id; raise if storing failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((message, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush(), name="message-writer")
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            messages = [message for message, _future in batch]
            try:
                ids = await loop.run_in_executor(
                    self._executor, self._store.put_messages, messages
                )
            except Exception as exc:
                for _message, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            # A session that lost its connection cancelled its future; its
            # message is stored anyway, and the client's retry becomes a
            # duplicate through the idempotency key.
            for (_message, future), message_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(message_id)


class LeadHandler:
    """aiosmtpd handler: filters recipients, checks data, stores each message.

    Args:
        settings: the SMTP settings.
        store: where accepted messages go.
        io_executor: threads for the blocking store call; the loop's default
            executor when ``None``.
        on_stored: called after each message is stored, to wake the workers.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        store: Store,
        *,
        io_executor: Executor | None = None,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._writer = MessageWriter(store, io_executor)
        self._on_stored = on_stored
        self.recipients = RecipientPolicy(settings.accept)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Start a transaction and give it a new request id."""
        if _has_invalid_utf8(address):
            logger.info("rejected sender: reason=invalid_utf8_address")
            # RFC 5321 section 4.2.3: 553 for a mailbox name not allowed.
            return "553 5.1.7 Sender address is not valid UTF-8"
        envelope.request_id = new_request_id()  # type: ignore[attr-defined]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept a served recipient. Reply 550 to any other and 452 past the limit."""
        request_id = getattr(envelope, "request_id", "-")
        if _has_invalid_utf8(address):
            logger.info(
                "rejected recipient: request_id=%s reason=invalid_utf8_address",
                request_id,
            )
            return "553 5.1.3 Recipient address is not valid UTF-8"
        if len(envelope.rcpt_tos) >= self._settings.max_recipients:
            logger.info(
                "rejected recipient: request_id=%s reason=too_many_recipients",
                request_id,
            )
            # RFC 5321 section 4.5.3.1.10: 452 for too many recipients.
            return "452 4.5.3 Too many recipients"
        reason = self.recipients.check(address)
        if reason == "relay":
            logger.info("rejected recipient: request_id=%s reason=relay", request_id)
            return "550 5.7.1 Relay access denied: recipient domain is not served here"
        if reason == "mailbox":
            logger.info(
                "rejected recipient: request_id=%s reason=unknown_mailbox", request_id
            )
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Check the data, stamp trace headers and store the message durably."""
        request_id: str = getattr(envelope, "request_id", None) or new_request_id()
        data = envelope.original_content or b""
        if has_smuggled_end_of_data(data):
            logger.warning(
                "rejected message: request_id=%s reason=bare_line_end_at_dot_line",
                request_id,
            )
            return "550 5.5.2 Message rejected: bare CR or LF around a dot line"
        if self._settings.reject_bare_newlines and has_bare_line_end(data):
            logger.info(
                "rejected message: request_id=%s reason=bare_line_end", request_id
            )
            return "550 5.5.2 Message rejected: bare CR or LF (RFC 5321 section 2.3.8)"

        now = datetime.now(UTC)
        tls = session.ssl is not None
        protocol = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP"
        if not session.extended_smtp:
            protocol = "SMTP"
        if tls:
            protocol += "S"
        peer = session.peer
        peer_ip = peer[0] if isinstance(peer, tuple) else None
        raw = (
            trace_headers(
                request_id=request_id,
                helo=session.host_name,
                peer_ip=peer_ip,
                hostname=self._settings.hostname,
                protocol=protocol,
                rcpt_tos=envelope.rcpt_tos,
                now=now,
            )
            + data
        )
        message = IncomingMessage(
            request_id=request_id,
            received_at=now,
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            raw=raw,
        )
        try:
            await self._writer.put(message)
        except Exception as exc:
            logger.error(
                "storing message failed: request_id=%s error=%s: %s",
                request_id,
                type(exc).__name__,
                exc,
            )
            return "451 4.3.0 Local storage failure; try again later"
        if self._on_stored is not None:
            self._on_stored()
        logger.info(
            "accepted message: request_id=%s size=%d recipients=%d tls=%s",
            request_id,
            len(raw),
            len(envelope.rcpt_tos),
            tls,
        )
        return f"250 2.0.0 OK queued as {request_id}"


class _LimitedSMTP(SMTP):
    """aiosmtpd's SMTP protocol with a connection limit and session tracking."""

    def __init__(self, handler: LeadHandler, *, owner: SmtpServer, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._owner = owner
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # After STARTTLS aiosmtpd calls connection_made again for the TLS
        # transport; only the first call is a new connection.
        first = self.transport is None and self._original_transport is None
        if first and not self._owner._admit(self):
            self._refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 Too many connections; try again later\r\n")
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._owner._release(self)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction started with MAIL FROM and has no final reply yet."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_for_shutdown(self) -> None:
        """Send 421 (RFC 5321 section 3.8) and close the connection."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"421 4.3.2 Service shutting down\r\n")
        transport.close()


class SmtpServer:
    """The listening socket and its sessions.

    Args:
        settings: listener address, limits and TLS files.
        store: where accepted messages are stored.
        io_executor: threads for blocking store calls.
        on_stored: called after each message is stored.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        store: Store,
        *,
        io_executor: Executor | None = None,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.handler = LeadHandler(
            settings, store, io_executor=io_executor, on_stored=on_stored
        )
        self._tls_context = _tls_context(settings)
        self._sessions: set[_LimitedSMTP] = set()
        self._server: asyncio.Server | None = None
        # aiosmtpd 1.4 logs MAIL FROM and RCPT TO addresses at INFO level on
        # this logger. Addresses must not reach the logs, even when the host
        # application configured logging itself.
        mail_log = logging.getLogger("mail.log")
        if mail_log.getEffectiveLevel() < logging.WARNING:
            mail_log.setLevel(logging.WARNING)

    @property
    def port(self) -> int:
        """Return the bound TCP port (useful when the settings asked for port 0)."""
        assert self._server is not None, "the server is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active_sessions(self) -> int:
        """Return the number of open SMTP sessions."""
        return len(self._sessions)

    def _factory(self) -> _LimitedSMTP:
        return _LimitedSMTP(
            self.handler,
            owner=self,
            data_size_limit=self.settings.max_message_bytes,
            enable_SMTPUTF8=self.settings.smtputf8,
            decode_data=False,
            hostname=self.settings.hostname,
            ident="leadparse",
            tls_context=self._tls_context,
            require_starttls=self.settings.require_tls,
            timeout=self.settings.idle_timeout,
            loop=asyncio.get_running_loop(),
        )

    def _admit(self, session: _LimitedSMTP) -> bool:
        if len(self._sessions) >= self.settings.max_connections:
            logger.warning(
                "rejected connection: reason=too_many_connections limit=%d",
                self.settings.max_connections,
            )
            return False
        self._sessions.add(session)
        return True

    def _release(self, session: _LimitedSMTP) -> None:
        self._sessions.discard(session)

    async def start(self) -> None:
        """Bind the listening socket and start accepting sessions."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, host=self.settings.host, port=self.settings.port
        )
        logger.info(
            "smtp server started: host=%s port=%d tls=%s require_tls=%s domains=%s",
            self.settings.host,
            self.port,
            self._tls_context is not None,
            self.settings.require_tls,
            ",".join(self.handler.recipients.domains),
        )

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting, then close sessions once their transaction ends.

        Idle sessions get 421 at once. A session in the middle of a
        transaction may finish it for up to *drain_timeout* seconds. After
        that it is closed, and its client, which got no 250, retries later.
        """
        if self._server is None:
            return
        self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self._sessions:
            for session in list(self._sessions):
                if not session.in_transaction:
                    session.close_for_shutdown()
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        remaining = list(self._sessions)
        if remaining:
            logger.warning(
                "closed %d sessions still in a transaction after %.1f s",
                len(remaining),
                drain_timeout,
            )
            for session in remaining:
                if session.transport is not None:
                    session.transport.close()
        # Let connection_lost callbacks run before the loop goes away.
        await asyncio.sleep(0)
        logger.info("smtp server stopped")


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(
        settings.tls_cert, settings.tls_key if settings.tls_key else None
    )
    return context
