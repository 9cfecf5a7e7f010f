"""Outbound acknowledgment mail to new leads, sent through an SMTP relay.

Off by default (``[acks] enabled = false``). When on, a background task reads
leads recorded after it started and sends each new ``lead`` a short reply:

* never to ``auto_reply``, ``bounce`` or ``bulk`` kinds, which are machine mail;
* never to a suppressed address (``leadparse suppress EMAIL``, ``acks.suppress``
  or an opt-out), and the store keeps SHA-256 hashes of addresses, not addresses;
* at most one per address within ``acks.window_seconds``;
* a lead whose text starts with unsubscribe or stop, or that is a
  List-Unsubscribe request, suppresses its sender and gets no reply;
* ``Auto-Submitted: auto-replied`` (RFC 3834 section 5) marks every reply as
  automatic, so well-behaved responders do not answer it in turn;
* DKIM-signed (RFC 6376) with dkimpy when a key is configured.

Every decision is recorded in the ``outbound_acks`` table, so each lead is
considered once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from typing import Any, TypeVar

from leadparse.server import metrics
from leadparse.server.config import AcksSettings, Settings
from leadparse.server.store import Store, StoredLead

__all__ = ["AckSender", "address_hash", "build_ack", "is_opt_out", "run"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_BATCH = 100

# Opt-out words at the start of the subject or of the new text of a reply, as
# people write them and as mailto: List-Unsubscribe links fill the subject.
_OPT_OUT = re.compile(
    r"^\W*(?:re\s*:\s*)*(?:stop|unsubscribe|opt[\s-]?out|remove\s+me)\b",
    re.IGNORECASE,
)
_DKIM_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"auto-submitted",
)


def address_hash(address: str) -> str:
    """Return the hex SHA-256 under which an address is suppressed or rate limited.

    The address is trimmed and case-folded first.
    NOTE: an unkeyed hash of a known address can be recomputed, so these
    hashes keep addresses out of plain sight, not secret from a guesser.
    """
    normalized = address.strip().casefold()
    return hashlib.sha256(b"leadparse-address-v1\n" + normalized.encode()).hexdigest()


def is_opt_out(payload: dict[str, Any]) -> bool:
    """Return whether a lead is an opt-out request.

    True for a List-Unsubscribe request recognised by the classifier, and for
    a subject or new message text that starts with stop, unsubscribe, opt out
    or remove me.
    """
    classification = payload.get("classification") or {}
    if "unsubscribe_request" in (classification.get("reasons") or []):
        return True
    subject = payload.get("subject") or ""
    text = payload.get("stripped_text") or payload.get("message_text") or ""
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    return bool(_OPT_OUT.match(subject) or _OPT_OUT.match(first_line))


def _recipient(payload: dict[str, Any]) -> str | None:
    for address in payload.get("reply_to") or []:
        if address.get("email"):
            return str(address["email"])
    sender = payload.get("from") or {}
    email = sender.get("email")
    return str(email) if email else None


def _valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and not any(
        char in address for char in "\r\n<>, "
    )


def build_ack(payload: dict[str, Any], recipient: str, settings: AcksSettings) -> bytes:
    """Return the acknowledgment message for one lead, with CRLF line ends.

    In-Reply-To and References follow RFC 5322 section 3.6.4: References is
    the lead's References followed by its Message-ID.
    """
    assert settings.from_address is not None
    message = EmailMessage(policy=SMTP)
    message["From"] = settings.from_address
    message["To"] = recipient
    subject = (payload.get("subject") or "").strip()
    prefix = settings.subject_prefix
    if not subject.lower().startswith(prefix.strip().lower()):
        subject = f"{prefix}{subject}".strip()
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = settings.from_address.rpartition("@")[2].strip(">") or None
    message["Message-ID"] = make_msgid(domain=domain)
    message_id = payload.get("message_id")
    if message_id:
        threading = payload.get("threading") or {}
        references = [*(threading.get("references") or []), message_id]
        message["In-Reply-To"] = f"<{message_id}>"
        message["References"] = " ".join(f"<{item}>" for item in references)
    message["Auto-Submitted"] = "auto-replied"
    message.set_content(settings.body)
    return message.as_bytes()


def _dkim_sign(data: bytes, settings: AcksSettings, private_key: bytes) -> bytes:
    import dkim

    assert settings.dkim_selector is not None
    assert settings.dkim_domain is not None
    header: bytes = dkim.sign(
        data,
        settings.dkim_selector.encode(),
        settings.dkim_domain.encode(),
        private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(_DKIM_HEADERS),
    )
    return header + data


class AckSender:
    """Send acknowledgments to new leads in a background task.

    Args:
        store: where leads, suppressions and acknowledgment records live.
        settings: the ``[acks]`` settings.
        executor: threads for blocking store calls; the loop's default when
            ``None``.
        now: clock for the rate limit window; ``datetime.now(UTC)`` by default.
    """

    def __init__(
        self,
        store: Store,
        settings: AcksSettings,
        *,
        executor: Executor | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._executor = executor
        self._now = now or (lambda: datetime.now(UTC))
        self._configured_suppressions = frozenset(
            address_hash(address) for address in settings.suppress
        )
        self._private_key: bytes | None = None
        if settings.dkim_private_key is not None:
            self._private_key = settings.dkim_private_key.read_bytes()
        self._watermark: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Find where to continue, then start the background task."""
        self._watermark = await self._io(self._initial_watermark)
        self._task = asyncio.create_task(self._loop(), name="outbound-acks")
        logger.info(
            "outbound acknowledgments on: relay port=%d window=%ds dkim=%s",
            self._settings.relay_port,
            self._settings.window_seconds,
            self._private_key is not None,
        )

    async def stop(self) -> None:
        """Stop the background task after the send in progress, if any."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    def _initial_watermark(self) -> int:
        # Continue after the newest lead with a record. On the first start
        # there is none, and leads stored before acknowledgments were turned
        # on get no reply.
        recorded = self._store.max_outbound_ack_lead_id()
        return recorded if recorded else self._store.max_lead_id()

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("outbound acknowledgment pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._settings.poll_interval)

    async def run_once(self) -> int:
        """Handle every lead recorded since the last pass; return how many."""
        if self._watermark is None:
            self._watermark = await self._io(self._initial_watermark)
        handled = 0
        while not self._stop.is_set():
            after = self._watermark
            leads = await self._io(self._leads_after, after)
            for lead in leads:
                await self.handle(lead)
                self._watermark = lead.id
                handled += 1
            if len(leads) < _BATCH:
                break
        return handled

    async def handle(self, lead: StoredLead) -> str:
        """Decide on one lead, send when due, record the outcome and return it.

        Outcomes: ``sent``, ``failed``, ``opt_out``, ``skipped_kind``,
        ``skipped_no_address``, ``skipped_suppressed``, ``skipped_rate_limited``.
        """
        outcome, recipient_hash, error = await self._decide_and_send(lead)
        await self._io(
            lambda: self._store.record_outbound_ack(
                lead.id, recipient_hash, state=outcome, error=error
            )
        )
        metrics.OUTBOUND_ACKS.inc(outcome=outcome)
        logger.info(
            "outbound acknowledgment: lead=%s outcome=%s", lead.public_id, outcome
        )
        return outcome

    async def _decide_and_send(self, lead: StoredLead) -> tuple[str, str, str | None]:
        payload = lead.payload
        sender = (payload.get("from") or {}).get("email")
        recipient = _recipient(payload)
        if is_opt_out(payload):
            # The opt-out suppresses the address that wrote it.
            for address in {sender, recipient}:
                if address:
                    await self._io(self._suppress_opt_out, address)
            return "opt_out", address_hash(sender or recipient or ""), None
        # auto_reply, bounce and bulk are machine mail and get no reply.
        if lead.kind != "lead":
            return "skipped_kind", address_hash(recipient or ""), None
        if recipient is None or not _valid_address(recipient):
            return "skipped_no_address", address_hash(recipient or ""), None
        hashed = address_hash(recipient)
        assert self._settings.from_address is not None
        if (
            hashed in self._configured_suppressions
            or hashed == address_hash(self._settings.from_address)
            or await self._io(self._store.is_suppressed, hashed)
        ):
            return "skipped_suppressed", hashed, None
        last = await self._io(
            lambda: self._store.last_outbound_ack(hashed, state="sent")
        )
        window = timedelta(seconds=self._settings.window_seconds)
        if last is not None and self._now() - last < window:
            return "skipped_rate_limited", hashed, None
        try:
            await self._send(payload, recipient)
        except Exception as exc:
            # The error text of a relay can quote the address, so only its
            # type is logged and stored.
            logger.warning(
                "outbound acknowledgment failed: lead=%s error=%s",
                lead.public_id,
                type(exc).__name__,
            )
            return "failed", hashed, type(exc).__name__
        return "sent", hashed, None

    def _leads_after(self, lead_id: int) -> list[StoredLead]:
        return self._store.leads_after(lead_id, limit=_BATCH)

    def _suppress_opt_out(self, address: str) -> None:
        self._store.add_suppression(address_hash(address), reason="opt_out")

    async def _send(self, payload: dict[str, Any], recipient: str) -> None:
        import aiosmtplib

        settings = self._settings
        assert settings.from_address is not None
        data = build_ack(payload, recipient, settings)
        if self._private_key is not None:
            data = _dkim_sign(data, settings, self._private_key)
        password = settings.password.get_secret_value() if settings.password else None
        await aiosmtplib.send(
            data,
            sender=settings.from_address,
            recipients=[recipient],
            hostname=settings.relay_host,
            port=settings.relay_port,
            username=settings.username,
            password=password,
            start_tls=settings.starttls,
            timeout=settings.timeout,
        )

    async def _io(self, func: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, *args)


async def run(settings: Settings, store: Store, stop: asyncio.Event) -> None:
    """Send acknowledgments until *stop* is set; return at once when disabled."""
    if not settings.acks.enabled:
        logger.info("outbound acknowledgments off (acks.enabled = false)")
        return
    sender = AckSender(store, settings.acks)
    await sender.start()
    try:
        await stop.wait()
    finally:
        await sender.stop()
