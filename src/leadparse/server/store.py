"""Storage of raw messages, parse jobs, leads, the idempotency ledger and the audit log.

:class:`Store` is the interface callers use; :class:`SQLiteStore` implements it
on one SQLite database in WAL mode. Methods are blocking and thread-safe, so
asyncio code calls them through an executor. A PostgreSQL backend can
implement the same methods: every operation is one transaction and the
interface exchanges plain data classes, never cursors or rows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from hashlib import sha256
from pathlib import Path
from typing import Any

from leadparse.server.crypto import RawCipher

__all__ = [
    "DATABASE_NAME",
    "DEFAULT_LEASE_TIMEOUT",
    "AckResult",
    "AuditEntry",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryRecord",
    "DeliveryState",
    "EndpointState",
    "IncomingMessage",
    "Job",
    "JobState",
    "NewDelivery",
    "Outcome",
    "ParseResult",
    "SQLiteStore",
    "SchemaError",
    "Stats",
    "Store",
    "StoredLead",
    "StoredMessage",
    "public_lead_id",
]

logger = logging.getLogger(__name__)

DATABASE_NAME = "leadparse.sqlite3"

DEFAULT_LEASE_TIMEOUT = 300.0
"""Seconds after which a running job's claim expires and the job is claimed again."""


class SchemaError(RuntimeError):
    """The database schema is newer than this version of leadparse supports."""


class JobState(StrEnum):
    """Life cycle of a parse job."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Outcome(StrEnum):
    """Effect of recording a parse result."""

    LEAD = "lead"
    """A new lead was stored under a new idempotency key."""
    DUPLICATE = "duplicate"
    """The key was already taken; the message is marked a duplicate of the first."""
    UPDATED = "updated"
    """A reparse replaced the message's existing lead."""
    SKIPPED = "skipped"
    """Nothing changed: the job was no longer running or the message is a duplicate."""


@dataclass(frozen=True)
class IncomingMessage:
    """A message accepted by the SMTP server, to be stored before the 250 reply."""

    request_id: str
    received_at: datetime
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    raw: bytes
    """The message as stored: the received data with the server's trace headers."""


@dataclass(frozen=True)
class StoredMessage:
    """A stored message with its decrypted raw MIME."""

    id: int
    request_id: str
    received_at: datetime
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    raw: bytes
    duplicate_of: int | None


@dataclass(frozen=True)
class Job:
    """A claimed parse job."""

    id: int
    message_id: int
    request_id: str
    attempts: int
    """Attempts including the current one."""


@dataclass(frozen=True)
class ParseResult:
    """Parse output in the form the store records."""

    payload: dict[str, Any]
    """``Lead.model_dump(mode="json")``."""
    idempotency_key: str
    kind: str
    parser_version: str
    sender_email: str | None = None
    contact_email: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    message_id: int | None
    request_id: str | None
    parser_version: str | None
    reason: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Stats:
    """Counts of leads by kind, jobs by state, and messages."""

    messages: int
    duplicates: int
    leads_by_kind: dict[str, int] = field(default_factory=dict)
    jobs_by_state: dict[str, int] = field(default_factory=dict)


# --- polling ---


def public_lead_id(idempotency_key: str) -> str:
    """Return the public id of a lead: ``msg_`` and 32 hex digits of its key.

    Webhook deliveries send the same value as their webhook id, so a consumer
    that receives one lead both ways can tell it is the same lead.
    """
    return "msg_" + idempotency_key[:32]


@dataclass(frozen=True)
class StoredLead:
    """A stored lead with its public id and acknowledgment state."""

    id: int
    """Row id; the order in which leads were first recorded."""
    public_id: str
    message_id: int
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    acked_at: datetime | None


@dataclass(frozen=True)
class AckResult:
    """Outcome of acknowledging public lead ids, each id in one list."""

    acknowledged: list[str]
    """Ids acknowledged by this call."""
    already_acknowledged: list[str]
    unknown: list[str]
    """Ids that name no stored lead (never existed, or deleted since)."""


def _polling_unsupported(store: object) -> NotImplementedError:
    return NotImplementedError(
        f"{type(store).__name__} does not implement the polling methods; "
        "use SQLiteStore for the API and outbound acknowledgments"
    )


# --- end polling ---


# --- deliveries ---


class DeliveryState(StrEnum):
    """Life cycle of a webhook delivery."""

    PENDING = "pending"
    """Waiting for ``next_attempt_at``, for an earlier lead of its thread, or
    for its endpoint to be enabled again."""
    SENDING = "sending"
    """Claimed by a delivery worker until ``next_attempt_at`` (the lease)."""
    DELIVERED = "delivered"
    DEAD = "dead"
    """Every attempt of the retry schedule failed; replay returns it to pending."""


@dataclass(frozen=True)
class NewDelivery:
    """A webhook delivery to create with a lead, for one endpoint."""

    endpoint: str
    webhook_id: str
    thread_key: str | None
    """The lead's ``threading.thread_id``; deliveries of one thread to one
    endpoint are sent in message order."""


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery with the lead payload to send."""

    id: int
    lead_id: int
    endpoint: str
    webhook_id: str
    thread_key: str | None
    attempts: int
    """Attempts made before this claim."""
    request_id: str
    """Request id of the message the lead came from."""
    payload: bytes
    """The lead JSON exactly as stored, UTF-8 encoded."""


@dataclass(frozen=True)
class DeliveryRecord:
    """The state of one delivery, for listings and the dead-letter commands."""

    id: int
    lead_id: int
    endpoint: str
    webhook_id: str
    thread_key: str | None
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class DeliveryAttempt:
    """One HTTP attempt of a delivery."""

    delivery_id: int
    at: datetime
    status: int | None
    """HTTP status, ``None`` when no response arrived."""
    error: str | None
    duration_ms: int | None


@dataclass(frozen=True)
class EndpointState:
    """A webhook endpoint that was disabled, with when and why."""

    endpoint: str
    disabled_at: datetime
    disabled_reason: str | None


# --- end deliveries ---


class Store(ABC):
    """Durable storage used by the SMTP server, the workers and the CLI."""

    @abstractmethod
    def put_messages(self, messages: Sequence[IncomingMessage]) -> list[int]:
        """Store messages, each with a pending parse job, in one transaction.

        Returns the message ids in input order. The data is on stable
        storage when this returns, so the caller may reply 250 to each.
        Any failure raises and stores none of them, and the caller replies 451.
        """

    def put_message(self, message: IncomingMessage) -> int:
        """Store one message and its parse job; see :meth:`put_messages`."""
        return self.put_messages([message])[0]

    def schema_version(self) -> int:
        """Return the highest schema migration applied to the database."""
        raise NotImplementedError

    @abstractmethod
    def claim_jobs(self, limit: int) -> list[Job]:
        """Mark up to *limit* pending jobs running, oldest first, and return them."""

    @abstractmethod
    def requeue_running(self) -> int:
        """Return running jobs to pending, after a restart; return how many."""

    @abstractmethod
    def get_message(self, message_id: int) -> StoredMessage:
        """Return one message with its decrypted raw MIME.

        Raises:
            KeyError: no message has this id.
            leadparse.server.crypto.DecryptionError: its key is not configured.
        """

    @abstractmethod
    def complete_job(
        self,
        job_id: int,
        result: ParseResult,
        *,
        actor: str,
        deliveries: Sequence[NewDelivery] = (),
    ) -> Outcome:
        """Record a parse result and mark the job done, in one transaction.

        A result whose idempotency key already belongs to another message
        marks this message a duplicate of that one and stores no lead. When
        the outcome is a new lead, *deliveries* are created in the same
        transaction, due at once, so no recorded lead misses its webhooks.
        """

    @abstractmethod
    def fail_job(self, job_id: int, error: str, *, retry: bool) -> None:
        """Return a running job to pending (*retry*) or mark it failed."""

    @abstractmethod
    def record_reparse(
        self, message_id: int, result: ParseResult, *, actor: str, reason: str
    ) -> Outcome:
        """Replace the lead of a message with a fresh parse and audit who and why."""

    @abstractmethod
    def message_ids(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
    ) -> list[int]:
        """Return ids of messages received in ``[since, until)``, or by request id."""

    @abstractmethod
    def iter_leads(
        self, *, kind: str | None = None, since: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield lead payloads in the order their messages arrived."""

    @abstractmethod
    def stats(self) -> Stats:
        """Count messages, duplicates, leads by kind and jobs by state."""

    @abstractmethod
    def purge(self, before: datetime, *, actor: str) -> int:
        """Delete messages received before *before* with their jobs and leads."""

    @abstractmethod
    def forget(self, email: str, *, actor: str) -> int:
        """Delete every message and lead of one address; return the messages deleted.

        A message matches when the address is its MAIL FROM, its From address
        or the contact email extracted from it, compared case-insensitively.
        """

    @abstractmethod
    def add_audit(
        self,
        action: str,
        *,
        actor: str,
        message_id: int | None = None,
        request_id: str | None = None,
        parser_version: str | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry to the audit log."""

    @abstractmethod
    def audit_entries(self, *, action: str | None = None) -> list[AuditEntry]:
        """Return audit log entries in order, optionally of one action."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; further calls are invalid."""

    # --- polling ---
    # Not abstract, so a backend without polling support still loads; the
    # API and outbound acknowledgments need these methods.

    def unacked_leads(self, *, after_id: int, limit: int) -> list[StoredLead]:
        """Return up to *limit* unacknowledged leads with row id above *after_id*.

        Leads come in row id order, which is the order their first parse was
        recorded.
        """
        raise _polling_unsupported(self)

    def ack_leads(self, public_ids: Sequence[str], *, token_name: str) -> AckResult:
        """Acknowledge leads by public id, in one transaction; repeats are no-ops."""
        raise _polling_unsupported(self)

    def get_lead(self, public_id: str) -> StoredLead | None:
        """Return the lead with this public id, or ``None``."""
        raise _polling_unsupported(self)

    def count_unacked_leads(self) -> int:
        """Count leads not yet acknowledged."""
        raise _polling_unsupported(self)

    def leads_after(self, lead_id: int, *, limit: int) -> list[StoredLead]:
        """Return up to *limit* leads with row id above *lead_id*, acked or not."""
        raise _polling_unsupported(self)

    def max_lead_id(self) -> int:
        """Return the highest lead row id, 0 when there are none."""
        raise _polling_unsupported(self)

    def add_suppression(self, address_hash: str, *, reason: str) -> bool:
        """Record that an address hash gets no outbound mail; False if it had one."""
        raise _polling_unsupported(self)

    def is_suppressed(self, address_hash: str) -> bool:
        """Return whether an address hash is suppressed."""
        raise _polling_unsupported(self)

    def record_outbound_ack(
        self,
        lead_id: int | None,
        recipient_hash: str,
        *,
        state: str,
        error: str | None = None,
    ) -> None:
        """Append one outbound acknowledgment decision (sent, failed or skipped)."""
        raise _polling_unsupported(self)

    def last_outbound_ack(self, recipient_hash: str, *, state: str) -> datetime | None:
        """Return when the newest record of *state* for a recipient was made."""
        raise _polling_unsupported(self)

    def max_outbound_ack_lead_id(self) -> int:
        """Return the highest lead row id with an outbound record, 0 when none."""
        raise _polling_unsupported(self)

    # --- end polling ---

    # --- deliveries ---

    @abstractmethod
    def create_deliveries(
        self, message_id: int, deliveries: Sequence[NewDelivery], *, at: datetime
    ) -> int:
        """Create deliveries of the lead of one message, due at *at*.

        A delivery that already exists for the lead and endpoint is left as it
        is. Returns how many were created; 0 when the message has no lead.
        """

    @abstractmethod
    def claim_deliveries(
        self,
        endpoint: str,
        *,
        now: datetime,
        limit: int,
        lease_seconds: float,
        exclude: Sequence[int] = (),
    ) -> list[Delivery]:
        """Mark up to *limit* due deliveries of one endpoint sending and return them.

        A delivery is due when it is pending with ``next_attempt_at <= now``,
        or sending with an expired lease (its worker died). Deliveries of a
        disabled endpoint are never due. A delivery waits while an earlier
        message of its thread has a pending or sending delivery to the same
        endpoint. The claim sets ``next_attempt_at`` to now plus
        *lease_seconds*. Deliveries come in message order.
        """

    @abstractmethod
    def next_delivery_due(self, endpoints: Sequence[str]) -> datetime | None:
        """Return the earliest time a pending delivery of *endpoints* becomes due.

        Deliveries held back by an earlier delivery of their thread, and
        deliveries of disabled endpoints, are left out.
        """

    @abstractmethod
    def record_attempt(
        self,
        delivery_ids: Sequence[int],
        *,
        at: datetime,
        state: DeliveryState,
        status: int | None = None,
        error: str | None = None,
        duration_ms: int | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Record one HTTP attempt for each delivery and move it to *state*.

        Each attempt counts and is appended to the attempt history.
        *next_attempt_at* is required with ``PENDING``.
        """

    @abstractmethod
    def disable_endpoint(self, endpoint: str, *, reason: str, at: datetime) -> None:
        """Stop claims for an endpoint until :meth:`enable_endpoint`."""

    @abstractmethod
    def enable_endpoint(self, endpoint: str) -> bool:
        """Allow claims for an endpoint again; return whether it was disabled."""

    @abstractmethod
    def disabled_endpoints(self) -> list[EndpointState]:
        """Return the disabled endpoints, by name."""

    @abstractmethod
    def list_deliveries(
        self,
        *,
        state: DeliveryState | None = None,
        endpoint: str | None = None,
        lead_id: int | None = None,
        limit: int | None = None,
    ) -> list[DeliveryRecord]:
        """Return deliveries in id order, optionally filtered."""

    def dead_letters(self, *, endpoint: str | None = None) -> list[DeliveryRecord]:
        """Return the dead-lettered deliveries in id order."""
        return self.list_deliveries(state=DeliveryState.DEAD, endpoint=endpoint)

    @abstractmethod
    def delivery_attempts(self, delivery_id: int) -> list[DeliveryAttempt]:
        """Return the attempts of one delivery in order."""

    @abstractmethod
    def replay_deliveries(
        self, delivery_ids: Sequence[int] | None, *, at: datetime, actor: str
    ) -> list[int]:
        """Return deliveries to pending, due at *at*, with the attempt count reset.

        ``None`` replays every dead delivery. Listed ids may also name
        delivered ones, which are sent again. The webhook id stays the same,
        so receivers deduplicate the replay. Returns the ids replayed, and
        the audit log records the replay.
        """

    @abstractmethod
    def delivery_counts(self) -> dict[str, dict[str, int]]:
        """Count deliveries by endpoint and state."""

    # --- end deliveries ---


# Numbered schema migrations; each runs once, in order, in one transaction.
# Append new versions; never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL UNIQUE,
            received_at TEXT NOT NULL,
            mail_from TEXT,
            rcpt_tos TEXT NOT NULL,
            raw BLOB NOT NULL,
            raw_size INTEGER NOT NULL,
            raw_sha256 TEXT NOT NULL,
            key_id TEXT,
            duplicate_of INTEGER REFERENCES messages(id) ON DELETE SET NULL
        )""",
        "CREATE INDEX messages_received_at ON messages(received_at)",
        "CREATE INDEX messages_mail_from ON messages(mail_from)",
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX jobs_state ON jobs(state, id)",
        "CREATE INDEX jobs_message ON jobs(message_id)",
        """CREATE TABLE leads (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL UNIQUE
                REFERENCES messages(id) ON DELETE CASCADE,
            idempotency_key TEXT NOT NULL,
            kind TEXT NOT NULL,
            sender_email TEXT,
            contact_email TEXT,
            parser_version TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX leads_kind ON leads(kind)",
        "CREATE INDEX leads_sender ON leads(sender_email)",
        "CREATE INDEX leads_contact ON leads(contact_email)",
        """CREATE TABLE idempotency (
            key TEXT PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            first_seen TEXT NOT NULL
        )""",
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            message_id INTEGER,
            request_id TEXT,
            parser_version TEXT,
            reason TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_action ON audit_log(action, id)",
    ),
    # 2: webhook deliveries, one row per lead and endpoint, with every attempt.
    (
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            lead_id INTEGER NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
            endpoint TEXT NOT NULL,
            webhook_id TEXT NOT NULL,
            thread_key TEXT,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_status INTEGER,
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            delivered_at TEXT,
            UNIQUE (lead_id, endpoint)
        )""",
        "CREATE INDEX deliveries_due ON deliveries(state, next_attempt_at)",
        "CREATE INDEX deliveries_thread ON deliveries(endpoint, thread_key, id)",
        """CREATE TABLE delivery_attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL
                REFERENCES deliveries(id) ON DELETE CASCADE,
            at TEXT NOT NULL,
            status INTEGER,
            error TEXT,
            duration_ms INTEGER
        )""",
        "CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id)",
        """CREATE TABLE endpoint_state (
            endpoint TEXT PRIMARY KEY,
            disabled_at TEXT,
            disabled_reason TEXT
        )""",
    ),
    # 3: polling acknowledgments and outbound acknowledgment mail.
    (
        """CREATE TABLE lead_acks (
            lead_id INTEGER PRIMARY KEY REFERENCES leads(id) ON DELETE CASCADE,
            acked_at TEXT NOT NULL,
            token_name TEXT
        )""",
        """CREATE TABLE outbound_acks (
            id INTEGER PRIMARY KEY,
            lead_id INTEGER REFERENCES leads(id) ON DELETE SET NULL,
            recipient_hash TEXT NOT NULL,
            state TEXT NOT NULL,
            error TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX outbound_acks_recipient ON outbound_acks(recipient_hash, id)",
        """CREATE TABLE suppressions (
            address_hash TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
    ),
    # 4: claim leases. A running job whose claim is older than the lease
    # timeout is claimed again, so the job of a worker that died is taken over.
    (
        "ALTER TABLE jobs ADD COLUMN claimed_at TEXT",
        "ALTER TABLE jobs ADD COLUMN claimed_by TEXT",
        "CREATE INDEX jobs_lease ON jobs(state, claimed_at)",
    ),
    # 5: lookup of leads by public id, a prefix of the idempotency key.
    ("CREATE INDEX leads_idempotency_key ON leads(idempotency_key)",),
)


def _timestamp(moment: datetime) -> str:
    # One fixed format in UTC, so text order is time order in SQL comparisons.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _now() -> str:
    return _timestamp(datetime.now(UTC))


@dataclass(eq=False)
class _PendingWrite:
    message: IncomingMessage
    done: threading.Event = field(default_factory=threading.Event)
    message_id: int | None = None
    error: BaseException | None = None


class SQLiteStore(Store):
    """A :class:`Store` in one SQLite file in WAL mode.

    Commits use ``synchronous=FULL``, so each commit fsyncs the write-ahead log
    before returning. Concurrent :meth:`put_message` calls share commits (group
    commit): while one thread commits, others queue their rows, and the next
    thread to take the write lock commits them all with one fsync.

    Args:
        data_dir: folder of the database file; created when missing.
        cipher: encrypts raw MIME of new rows and decrypts stored rows; when
            ``None`` new rows are stored in clear.
        lease_timeout: seconds after which a running job counts as abandoned
            and :meth:`claim_jobs` claims it again.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        cipher: RawCipher | None = None,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    ) -> None:
        self.lease_timeout = lease_timeout
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DATABASE_NAME
        self._cipher = cipher
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: list[_PendingWrite] = []
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    # -- connections and schema -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=30000")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        return connection

    def schema_version(self) -> int:
        """Return the highest migration applied to the database."""
        row = self._writer.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version"
        ).fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        with self._write_lock:
            self._writer.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = self.schema_version()
            if current > len(MIGRATIONS):
                raise SchemaError(
                    f"database {self.path} has schema version {current}, but this "
                    f"leadparse supports up to {len(MIGRATIONS)}; upgrade leadparse"
                )
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    for statement in statements:
                        self._writer.execute(statement)
                    self._writer.execute(
                        "INSERT INTO schema_version (version, applied_at) "
                        "VALUES (?, ?)",
                        (version, _now()),
                    )
                except BaseException:
                    self._writer.execute("ROLLBACK")
                    raise
                self._writer.execute("COMMIT")
                logger.info("applied schema migration %d to %s", version, self.path)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._writer, self._write_lock)

    # -- messages and jobs ------------------------------------------------------

    def put_message(self, message: IncomingMessage) -> int:
        pending = _PendingWrite(message)
        with self._pending_lock:
            self._pending.append(pending)
        with self._write_lock:
            if not pending.done.is_set():
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit_batch(batch)
        if pending.error is not None:
            raise pending.error
        assert pending.message_id is not None
        return pending.message_id

    def put_messages(self, messages: Sequence[IncomingMessage]) -> list[int]:
        if not messages:
            return []
        rows = [self._message_row(message) for message in messages]
        with self._transaction() as connection:
            return self._insert_messages(connection, rows)

    def _commit_batch(self, batch: Sequence[_PendingWrite]) -> None:
        # Called with the write lock held. Every row in the batch shares one
        # transaction and so one fsync; a failure fails the whole batch.
        connection = self._writer
        try:
            rows = [self._message_row(item.message) for item in batch]
            connection.execute("BEGIN IMMEDIATE")
            try:
                ids = self._insert_messages(connection, rows)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            for item, message_id in zip(batch, ids, strict=True):
                item.message_id = message_id
        except Exception as exc:
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                item.done.set()

    def _insert_messages(
        self, connection: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]
    ) -> list[int]:
        now = _now()
        ids: list[int] = []
        for row in rows:
            cursor = connection.execute(
                "INSERT INTO messages (request_id, received_at, mail_from, "
                "rcpt_tos, raw, raw_size, raw_sha256, key_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            assert cursor.lastrowid is not None
            ids.append(cursor.lastrowid)
            connection.execute(
                "INSERT INTO jobs (message_id, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?)",
                (cursor.lastrowid, JobState.PENDING, now, now),
            )
        return ids

    def _message_row(self, message: IncomingMessage) -> tuple[Any, ...]:
        raw = message.raw
        key_id: str | None = None
        if self._cipher is not None and self._cipher.current_key_id is not None:
            key_id, raw = self._cipher.encrypt(raw, message.request_id.encode())
        return (
            message.request_id,
            _timestamp(message.received_at),
            message.mail_from.casefold() if message.mail_from else message.mail_from,
            json.dumps(list(message.rcpt_tos)),
            raw,
            len(message.raw),
            sha256(message.raw).hexdigest(),
            key_id,
        )

    def claim_jobs(self, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        now_moment = datetime.now(UTC)
        expired = _timestamp(now_moment - timedelta(seconds=self.lease_timeout))
        with self._transaction() as connection:
            # Jobs claimed before migration 4 have no claimed_at, so their
            # last update is used in its place.
            rows = connection.execute(
                "SELECT jobs.id, jobs.message_id, jobs.attempts, messages.request_id "
                "FROM jobs JOIN messages ON messages.id = jobs.message_id "
                "WHERE jobs.state = ? OR (jobs.state = ? AND "
                "COALESCE(jobs.claimed_at, jobs.updated_at) < ?) "
                "ORDER BY jobs.id LIMIT ?",
                (JobState.PENDING, JobState.RUNNING, expired, limit),
            ).fetchall()
            now = _timestamp(now_moment)
            connection.executemany(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ?, "
                "claimed_at = ? WHERE id = ?",
                [(JobState.RUNNING, now, now, row["id"]) for row in rows],
            )
        return [
            Job(
                id=row["id"],
                message_id=row["message_id"],
                request_id=row["request_id"],
                attempts=row["attempts"] + 1,
            )
            for row in rows
        ]

    def requeue_running(self) -> int:
        with self._transaction() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET state = ?, updated_at = ? WHERE state = ?",
                (JobState.PENDING, _now(), JobState.RUNNING),
            )
            return cursor.rowcount

    def get_message(self, message_id: int) -> StoredMessage:
        row = (
            self._reader()
            .execute("SELECT * FROM messages WHERE id = ?", (message_id,))
            .fetchone()
        )
        if row is None:
            raise KeyError(f"no message with id {message_id}")
        raw = bytes(row["raw"])
        if row["key_id"] is not None:
            if self._cipher is None:
                from leadparse.server.crypto import DecryptionError

                raise DecryptionError(
                    f"message {message_id} is encrypted with key {row['key_id']!r} "
                    "but no encryption keys are configured"
                )
            raw = self._cipher.decrypt(row["key_id"], raw, row["request_id"].encode())
        return StoredMessage(
            id=row["id"],
            request_id=row["request_id"],
            received_at=datetime.fromisoformat(row["received_at"]),
            mail_from=row["mail_from"],
            rcpt_tos=tuple(json.loads(row["rcpt_tos"])),
            raw=raw,
            duplicate_of=row["duplicate_of"],
        )

    def complete_job(
        self,
        job_id: int,
        result: ParseResult,
        *,
        actor: str,
        deliveries: Sequence[NewDelivery] = (),
    ) -> Outcome:
        with self._transaction() as connection:
            job = connection.execute(
                "SELECT jobs.message_id, jobs.state, messages.request_id FROM jobs "
                "JOIN messages ON messages.id = jobs.message_id WHERE jobs.id = ?",
                (job_id,),
            ).fetchone()
            if job is None or job["state"] != JobState.RUNNING:
                return Outcome.SKIPPED
            message_id = job["message_id"]
            outcome = self._record_first_parse(connection, message_id, result)
            if outcome is Outcome.LEAD and deliveries:
                self._insert_deliveries(
                    connection, message_id, deliveries, datetime.now(UTC)
                )
            connection.execute(
                "UPDATE jobs SET state = ?, error = NULL, updated_at = ? WHERE id = ?",
                (JobState.DONE, _now(), job_id),
            )
            self._insert_audit(
                connection,
                "parse",
                actor=actor,
                message_id=message_id,
                request_id=job["request_id"],
                parser_version=result.parser_version,
                reason=None,
                detail={"outcome": str(outcome), "kind": result.kind},
            )
            return outcome

    def _record_first_parse(
        self, connection: sqlite3.Connection, message_id: int, result: ParseResult
    ) -> Outcome:
        key = result.idempotency_key
        if key:
            first = connection.execute(
                "SELECT message_id FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
            if first is not None and first["message_id"] != message_id:
                connection.execute(
                    "UPDATE messages SET duplicate_of = ? WHERE id = ?",
                    (first["message_id"], message_id),
                )
                return Outcome.DUPLICATE
            connection.execute(
                "INSERT OR IGNORE INTO idempotency (key, message_id, first_seen) "
                "VALUES (?, ?, ?)",
                (key, message_id, _now()),
            )
        self._upsert_lead(connection, message_id, result)
        return Outcome.LEAD

    def _upsert_lead(
        self, connection: sqlite3.Connection, message_id: int, result: ParseResult
    ) -> None:
        now = _now()
        connection.execute(
            "INSERT INTO leads (message_id, idempotency_key, kind, sender_email, "
            "contact_email, parser_version, payload, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (message_id) DO UPDATE SET "
            "idempotency_key = excluded.idempotency_key, kind = excluded.kind, "
            "sender_email = excluded.sender_email, "
            "contact_email = excluded.contact_email, "
            "parser_version = excluded.parser_version, payload = excluded.payload, "
            "updated_at = excluded.updated_at",
            (
                message_id,
                result.idempotency_key,
                result.kind,
                result.sender_email.casefold() if result.sender_email else None,
                result.contact_email.casefold() if result.contact_email else None,
                result.parser_version,
                json.dumps(result.payload, ensure_ascii=False, sort_keys=True),
                now,
                now,
            ),
        )

    def fail_job(self, job_id: int, error: str, *, retry: bool) -> None:
        state = JobState.PENDING if retry else JobState.FAILED
        with self._transaction() as connection:
            connection.execute(
                "UPDATE jobs SET state = ?, error = ?, updated_at = ? "
                "WHERE id = ? AND state = ?",
                (state, error[:2000], _now(), job_id, JobState.RUNNING),
            )

    def record_reparse(
        self, message_id: int, result: ParseResult, *, actor: str, reason: str
    ) -> Outcome:
        with self._transaction() as connection:
            message = connection.execute(
                "SELECT request_id, duplicate_of FROM messages WHERE id = ?",
                (message_id,),
            ).fetchone()
            if message is None:
                raise KeyError(f"no message with id {message_id}")
            if message["duplicate_of"] is not None:
                return Outcome.SKIPPED
            previous = connection.execute(
                "SELECT idempotency_key, parser_version FROM leads "
                "WHERE message_id = ?",
                (message_id,),
            ).fetchone()
            if previous is None:
                # Never parsed successfully (its job failed): this is its first
                # result, so the idempotency ledger decides as for a new message.
                outcome = self._record_first_parse(connection, message_id, result)
            else:
                if previous["idempotency_key"] != result.idempotency_key:
                    # NOTE: a new parser version may derive another key. The
                    # ledger follows the current key. When another message
                    # already has it, both leads are kept and the audit
                    # entry records the collision.
                    connection.execute(
                        "DELETE FROM idempotency WHERE message_id = ? AND key = ?",
                        (message_id, previous["idempotency_key"]),
                    )
                    if result.idempotency_key:
                        connection.execute(
                            "INSERT OR IGNORE INTO idempotency "
                            "(key, message_id, first_seen) VALUES (?, ?, ?)",
                            (result.idempotency_key, message_id, _now()),
                        )
                self._upsert_lead(connection, message_id, result)
                outcome = Outcome.UPDATED
            connection.execute(
                "UPDATE jobs SET state = ?, error = NULL, updated_at = ? "
                "WHERE message_id = ? AND state = ?",
                (JobState.DONE, _now(), message_id, JobState.FAILED),
            )
            self._insert_audit(
                connection,
                "reparse",
                actor=actor,
                message_id=message_id,
                request_id=message["request_id"],
                parser_version=result.parser_version,
                reason=reason,
                detail={
                    "outcome": str(outcome),
                    "previous_parser_version": (
                        previous["parser_version"] if previous is not None else None
                    ),
                    "key_changed": previous is not None
                    and previous["idempotency_key"] != result.idempotency_key,
                },
            )
            return outcome

    # -- queries ------------------------------------------------------------------

    def message_ids(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
    ) -> list[int]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(_timestamp(since))
        if until is not None:
            clauses.append("received_at < ?")
            params.append(_timestamp(until))
        if request_id is not None:
            clauses.append("request_id = ?")
            params.append(request_id)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = (
            self._reader()
            .execute(f"SELECT id FROM messages{where} ORDER BY id", params)
            .fetchall()
        )
        return [row["id"] for row in rows]

    def iter_leads(
        self, *, kind: str | None = None, since: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if kind is not None:
            clauses.append("leads.kind = ?")
            params.append(kind)
        if since is not None:
            clauses.append("messages.received_at >= ?")
            params.append(_timestamp(since))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        cursor = self._reader().execute(
            "SELECT leads.payload FROM leads "
            f"JOIN messages ON messages.id = leads.message_id{where} "
            "ORDER BY messages.id",
            params,
        )
        for row in cursor:
            payload: dict[str, Any] = json.loads(row["payload"])
            yield payload

    def stats(self) -> Stats:
        connection = self._reader()
        messages, duplicates = connection.execute(
            "SELECT COUNT(*), COUNT(duplicate_of) FROM messages"
        ).fetchone()
        kinds = connection.execute(
            "SELECT kind, COUNT(*) AS n FROM leads GROUP BY kind ORDER BY kind"
        ).fetchall()
        states = connection.execute(
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state ORDER BY state"
        ).fetchall()
        return Stats(
            messages=messages,
            duplicates=duplicates,
            leads_by_kind={row["kind"]: row["n"] for row in kinds},
            jobs_by_state={row["state"]: row["n"] for row in states},
        )

    # -- deletion -----------------------------------------------------------------

    def purge(self, before: datetime, *, actor: str) -> int:
        with self._transaction() as connection:
            cursor = connection.execute(
                "DELETE FROM messages WHERE received_at < ?", (_timestamp(before),)
            )
            count = cursor.rowcount
            self._insert_audit(
                connection,
                "purge",
                actor=actor,
                detail={"before": _timestamp(before), "messages": count},
            )
        return count

    def forget(self, email: str, *, actor: str) -> int:
        address = email.strip().casefold()
        with self._transaction() as connection:
            # Duplicates have no lead row of their own, so they are found
            # through the message they duplicate.
            connection.execute(
                "CREATE TEMP TABLE IF NOT EXISTS forget_ids (id INTEGER PRIMARY KEY)"
            )
            connection.execute("DELETE FROM forget_ids")
            connection.execute(
                "INSERT OR IGNORE INTO forget_ids SELECT id FROM messages "
                "WHERE mail_from = ? OR id IN (SELECT message_id FROM leads "
                "WHERE sender_email = ? OR contact_email = ?)",
                (address, address, address),
            )
            connection.execute(
                "INSERT OR IGNORE INTO forget_ids SELECT id FROM messages "
                "WHERE duplicate_of IN (SELECT id FROM forget_ids)"
            )
            cursor = connection.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM forget_ids)"
            )
            count = cursor.rowcount
            connection.execute("DELETE FROM forget_ids")
            # The audit entry records that a deletion happened, never the address.
            self._insert_audit(
                connection, "forget", actor=actor, detail={"messages": count}
            )
        return count

    # -- audit log ----------------------------------------------------------------

    def add_audit(
        self,
        action: str,
        *,
        actor: str,
        message_id: int | None = None,
        request_id: str | None = None,
        parser_version: str | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        with self._transaction() as connection:
            self._insert_audit(
                connection,
                action,
                actor=actor,
                message_id=message_id,
                request_id=request_id,
                parser_version=parser_version,
                reason=reason,
                detail=detail,
            )

    def _insert_audit(
        self,
        connection: sqlite3.Connection,
        action: str,
        *,
        actor: str,
        message_id: int | None = None,
        request_id: str | None = None,
        parser_version: str | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        connection.execute(
            "INSERT INTO audit_log (at, actor, action, message_id, request_id, "
            "parser_version, reason, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _now(),
                actor,
                action,
                message_id,
                request_id,
                parser_version,
                reason,
                json.dumps(detail or {}, sort_keys=True),
            ),
        )

    def audit_entries(self, *, action: str | None = None) -> list[AuditEntry]:
        where, params = ("WHERE action = ?", (action,)) if action else ("", ())
        rows = (
            self._reader()
            .execute(f"SELECT * FROM audit_log {where} ORDER BY id", params)
            .fetchall()
        )
        return [
            AuditEntry(
                id=row["id"],
                at=datetime.fromisoformat(row["at"]),
                actor=row["actor"],
                action=row["action"],
                message_id=row["message_id"],
                request_id=row["request_id"],
                parser_version=row["parser_version"],
                reason=row["reason"],
                detail=json.loads(row["detail"]),
            )
            for row in rows
        ]

    # --- polling ---

    _LEAD_COLUMNS = (
        "leads.id, leads.message_id, leads.idempotency_key, leads.kind, "
        "leads.payload, leads.created_at, leads.updated_at, lead_acks.acked_at"
    )

    @staticmethod
    def _stored_lead(row: sqlite3.Row) -> StoredLead:
        acked_at = row["acked_at"]
        return StoredLead(
            id=row["id"],
            public_id=public_lead_id(row["idempotency_key"]),
            message_id=row["message_id"],
            kind=row["kind"],
            payload=json.loads(row["payload"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            acked_at=datetime.fromisoformat(acked_at) if acked_at else None,
        )

    def unacked_leads(self, *, after_id: int, limit: int) -> list[StoredLead]:
        # NOTE: lead ids are SQLite rowids without AUTOINCREMENT, so after the
        # newest lead is deleted (forget, purge) its id can be given again. A
        # client that acknowledges what it read and restarts without a cursor
        # sees such a lead; one that keeps an old cursor can skip it.
        rows = (
            self._reader()
            .execute(
                f"SELECT {self._LEAD_COLUMNS} FROM leads "
                "LEFT JOIN lead_acks ON lead_acks.lead_id = leads.id "
                "WHERE leads.id > ? AND lead_acks.lead_id IS NULL "
                "ORDER BY leads.id LIMIT ?",
                (after_id, limit),
            )
            .fetchall()
        )
        return [self._stored_lead(row) for row in rows]

    def leads_after(self, lead_id: int, *, limit: int) -> list[StoredLead]:
        rows = (
            self._reader()
            .execute(
                f"SELECT {self._LEAD_COLUMNS} FROM leads "
                "LEFT JOIN lead_acks ON lead_acks.lead_id = leads.id "
                "WHERE leads.id > ? ORDER BY leads.id LIMIT ?",
                (lead_id, limit),
            )
            .fetchall()
        )
        return [self._stored_lead(row) for row in rows]

    @staticmethod
    def _key_prefix(public_id: str) -> str | None:
        prefix = public_id.removeprefix("msg_")
        if (
            not public_id.startswith("msg_")
            or len(prefix) != 32
            or any(char not in "0123456789abcdef" for char in prefix)
        ):
            return None
        return prefix

    def _lead_row(
        self, connection: sqlite3.Connection, public_id: str
    ) -> sqlite3.Row | None:
        prefix = self._key_prefix(public_id)
        if prefix is None:
            return None
        # Keys are lower-case hex, so every key starting with the prefix sorts
        # between it and the prefix followed by "g"; the range uses the index.
        row: sqlite3.Row | None = connection.execute(
            f"SELECT {self._LEAD_COLUMNS} FROM leads "
            "LEFT JOIN lead_acks ON lead_acks.lead_id = leads.id "
            "WHERE leads.idempotency_key >= ? AND leads.idempotency_key < ? "
            "ORDER BY leads.id LIMIT 1",
            (prefix, prefix + "g"),
        ).fetchone()
        return row

    def get_lead(self, public_id: str) -> StoredLead | None:
        row = self._lead_row(self._reader(), public_id)
        return self._stored_lead(row) if row is not None else None

    def ack_leads(self, public_ids: Sequence[str], *, token_name: str) -> AckResult:
        acknowledged: list[str] = []
        already: list[str] = []
        unknown: list[str] = []
        now = _now()
        with self._transaction() as connection:
            for public_id in dict.fromkeys(public_ids):
                row = self._lead_row(connection, public_id)
                if row is None:
                    unknown.append(public_id)
                    continue
                cursor = connection.execute(
                    "INSERT OR IGNORE INTO lead_acks (lead_id, acked_at, token_name) "
                    "VALUES (?, ?, ?)",
                    (row["id"], now, token_name),
                )
                if cursor.rowcount:
                    acknowledged.append(public_id)
                else:
                    already.append(public_id)
        return AckResult(acknowledged, already, unknown)

    def count_unacked_leads(self) -> int:
        row = (
            self._reader()
            .execute(
                "SELECT COUNT(*) FROM leads WHERE id NOT IN "
                "(SELECT lead_id FROM lead_acks)"
            )
            .fetchone()
        )
        return int(row[0])

    def max_lead_id(self) -> int:
        row = self._reader().execute("SELECT COALESCE(MAX(id), 0) FROM leads")
        return int(row.fetchone()[0])

    def add_suppression(self, address_hash: str, *, reason: str) -> bool:
        with self._transaction() as connection:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO suppressions (address_hash, reason, created_at) "
                "VALUES (?, ?, ?)",
                (address_hash, reason, _now()),
            )
            return bool(cursor.rowcount)

    def is_suppressed(self, address_hash: str) -> bool:
        row = (
            self._reader()
            .execute(
                "SELECT 1 FROM suppressions WHERE address_hash = ?", (address_hash,)
            )
            .fetchone()
        )
        return row is not None

    def record_outbound_ack(
        self,
        lead_id: int | None,
        recipient_hash: str,
        *,
        state: str,
        error: str | None = None,
    ) -> None:
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO outbound_acks (lead_id, recipient_hash, state, error, "
                "created_at) VALUES (?, ?, ?, ?, ?)",
                (
                    lead_id,
                    recipient_hash,
                    state,
                    error[:2000] if error else None,
                    _now(),
                ),
            )

    def last_outbound_ack(self, recipient_hash: str, *, state: str) -> datetime | None:
        row = (
            self._reader()
            .execute(
                "SELECT created_at FROM outbound_acks "
                "WHERE recipient_hash = ? AND state = ? ORDER BY id DESC LIMIT 1",
                (recipient_hash, state),
            )
            .fetchone()
        )
        return datetime.fromisoformat(row["created_at"]) if row else None

    def max_outbound_ack_lead_id(self) -> int:
        row = self._reader().execute(
            "SELECT COALESCE(MAX(lead_id), 0) FROM outbound_acks"
        )
        return int(row.fetchone()[0])

    # --- end polling ---

    # --- deliveries ---

    # A delivery waits while an earlier message of its thread has an
    # unfinished delivery to the same endpoint. Dead deliveries do not hold
    # the thread back, so one rejected lead cannot block its thread forever.
    _THREAD_FREE = (
        "(d.thread_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries earlier "
        "JOIN leads earlier_lead ON earlier_lead.id = earlier.lead_id "
        "WHERE earlier.endpoint = d.endpoint AND earlier.thread_key = d.thread_key "
        "AND earlier.state IN ('pending', 'sending') "
        "AND earlier_lead.message_id < l.message_id))"
    )
    _ENDPOINT_ENABLED = (
        "NOT EXISTS (SELECT 1 FROM endpoint_state e "
        "WHERE e.endpoint = d.endpoint AND e.disabled_at IS NOT NULL)"
    )

    def create_deliveries(
        self, message_id: int, deliveries: Sequence[NewDelivery], *, at: datetime
    ) -> int:
        if not deliveries:
            return 0
        with self._transaction() as connection:
            return self._insert_deliveries(connection, message_id, deliveries, at)

    def _insert_deliveries(
        self,
        connection: sqlite3.Connection,
        message_id: int,
        deliveries: Sequence[NewDelivery],
        at: datetime,
    ) -> int:
        lead = connection.execute(
            "SELECT id FROM leads WHERE message_id = ?", (message_id,)
        ).fetchone()
        if lead is None:
            return 0
        due = _timestamp(at)
        now = _now()
        created = 0
        for delivery in deliveries:
            cursor = connection.execute(
                "INSERT INTO deliveries (lead_id, endpoint, webhook_id, thread_key, "
                "state, attempts, next_attempt_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) "
                "ON CONFLICT (lead_id, endpoint) DO NOTHING",
                (
                    lead["id"],
                    delivery.endpoint,
                    delivery.webhook_id,
                    delivery.thread_key,
                    DeliveryState.PENDING,
                    due,
                    now,
                    now,
                ),
            )
            created += cursor.rowcount
        return created

    def claim_deliveries(
        self,
        endpoint: str,
        *,
        now: datetime,
        limit: int,
        lease_seconds: float,
        exclude: Sequence[int] = (),
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        excluded = ""
        if exclude:
            excluded = f" AND d.id NOT IN ({', '.join('?' * len(exclude))})"
        with self._transaction() as connection:
            rows = connection.execute(
                "SELECT d.id, d.lead_id, d.endpoint, d.webhook_id, d.thread_key, "
                "d.attempts, l.payload, m.request_id FROM deliveries d "
                "JOIN leads l ON l.id = d.lead_id "
                "JOIN messages m ON m.id = l.message_id "
                "WHERE d.endpoint = ? AND d.state IN ('pending', 'sending') "
                f"AND d.next_attempt_at <= ? AND {self._ENDPOINT_ENABLED} "
                f"AND {self._THREAD_FREE}{excluded} "
                "ORDER BY l.message_id, d.id LIMIT ?",
                (endpoint, _timestamp(now), *exclude, limit),
            ).fetchall()
            lease_end = _timestamp(now + timedelta(seconds=lease_seconds))
            connection.executemany(
                "UPDATE deliveries SET state = ?, next_attempt_at = ?, updated_at = ? "
                "WHERE id = ?",
                [(DeliveryState.SENDING, lease_end, _now(), row["id"]) for row in rows],
            )
        return [
            Delivery(
                id=row["id"],
                lead_id=row["lead_id"],
                endpoint=row["endpoint"],
                webhook_id=row["webhook_id"],
                thread_key=row["thread_key"],
                attempts=row["attempts"],
                request_id=row["request_id"],
                payload=row["payload"].encode("utf-8"),
            )
            for row in rows
        ]

    def next_delivery_due(self, endpoints: Sequence[str]) -> datetime | None:
        if not endpoints:
            return None
        names = ", ".join("?" * len(endpoints))
        row = (
            self._reader()
            .execute(
                "SELECT MIN(d.next_attempt_at) FROM deliveries d "
                "JOIN leads l ON l.id = d.lead_id "
                f"WHERE d.state = 'pending' AND d.endpoint IN ({names}) "
                f"AND {self._ENDPOINT_ENABLED} AND {self._THREAD_FREE}",
                tuple(endpoints),
            )
            .fetchone()
        )
        return datetime.fromisoformat(row[0]) if row[0] is not None else None

    def record_attempt(
        self,
        delivery_ids: Sequence[int],
        *,
        at: datetime,
        state: DeliveryState,
        status: int | None = None,
        error: str | None = None,
        duration_ms: int | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        if state is DeliveryState.PENDING and next_attempt_at is None:
            raise ValueError("a pending delivery needs next_attempt_at")
        when = _timestamp(at)
        due = _timestamp(next_attempt_at) if next_attempt_at is not None else None
        delivered = when if state is DeliveryState.DELIVERED else None
        error = error[:2000] if error else None
        with self._transaction() as connection:
            for delivery_id in delivery_ids:
                connection.execute(
                    "INSERT INTO delivery_attempts (delivery_id, at, status, error, "
                    "duration_ms) VALUES (?, ?, ?, ?, ?)",
                    (delivery_id, when, status, error, duration_ms),
                )
                connection.execute(
                    "UPDATE deliveries SET state = ?, attempts = attempts + 1, "
                    "last_status = ?, last_error = ?, "
                    "next_attempt_at = COALESCE(?, next_attempt_at), "
                    "delivered_at = COALESCE(?, delivered_at), updated_at = ? "
                    "WHERE id = ?",
                    (state, status, error, due, delivered, _now(), delivery_id),
                )

    def disable_endpoint(self, endpoint: str, *, reason: str, at: datetime) -> None:
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO endpoint_state (endpoint, disabled_at, disabled_reason) "
                "VALUES (?, ?, ?) ON CONFLICT (endpoint) DO UPDATE SET "
                "disabled_at = excluded.disabled_at, "
                "disabled_reason = excluded.disabled_reason",
                (endpoint, _timestamp(at), reason[:2000]),
            )

    def enable_endpoint(self, endpoint: str) -> bool:
        with self._transaction() as connection:
            cursor = connection.execute(
                "UPDATE endpoint_state SET disabled_at = NULL, disabled_reason = NULL "
                "WHERE endpoint = ? AND disabled_at IS NOT NULL",
                (endpoint,),
            )
            return bool(cursor.rowcount)

    def disabled_endpoints(self) -> list[EndpointState]:
        rows = (
            self._reader()
            .execute(
                "SELECT * FROM endpoint_state WHERE disabled_at IS NOT NULL "
                "ORDER BY endpoint"
            )
            .fetchall()
        )
        return [
            EndpointState(
                endpoint=row["endpoint"],
                disabled_at=datetime.fromisoformat(row["disabled_at"]),
                disabled_reason=row["disabled_reason"],
            )
            for row in rows
        ]

    def list_deliveries(
        self,
        *,
        state: DeliveryState | None = None,
        endpoint: str | None = None,
        lead_id: int | None = None,
        limit: int | None = None,
    ) -> list[DeliveryRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("state", state), ("endpoint", endpoint)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(str(value))
        if lead_id is not None:
            clauses.append("lead_id = ?")
            params.append(lead_id)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        limit_clause = ""
        if limit is not None:
            limit_clause = " LIMIT ?"
            params.append(limit)
        rows = (
            self._reader()
            .execute(
                f"SELECT * FROM deliveries{where} ORDER BY id{limit_clause}", params
            )
            .fetchall()
        )
        return [_delivery_record(row) for row in rows]

    def delivery_attempts(self, delivery_id: int) -> list[DeliveryAttempt]:
        rows = (
            self._reader()
            .execute(
                "SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY id",
                (delivery_id,),
            )
            .fetchall()
        )
        return [
            DeliveryAttempt(
                delivery_id=row["delivery_id"],
                at=datetime.fromisoformat(row["at"]),
                status=row["status"],
                error=row["error"],
                duration_ms=row["duration_ms"],
            )
            for row in rows
        ]

    def replay_deliveries(
        self, delivery_ids: Sequence[int] | None, *, at: datetime, actor: str
    ) -> list[int]:
        with self._transaction() as connection:
            if delivery_ids is None:
                rows = connection.execute(
                    "SELECT id FROM deliveries WHERE state = 'dead' ORDER BY id"
                ).fetchall()
            else:
                rows = connection.execute(
                    "SELECT id FROM deliveries WHERE state IN ('dead', 'delivered') "
                    f"AND id IN ({', '.join('?' * len(delivery_ids))}) ORDER BY id",
                    tuple(delivery_ids),
                ).fetchall()
            replayed = [row["id"] for row in rows]
            now = _now()
            connection.executemany(
                "UPDATE deliveries SET state = ?, attempts = 0, next_attempt_at = ?, "
                "last_status = NULL, last_error = NULL, delivered_at = NULL, "
                "updated_at = ? WHERE id = ?",
                [
                    (DeliveryState.PENDING, _timestamp(at), now, delivery_id)
                    for delivery_id in replayed
                ],
            )
            self._insert_audit(
                connection,
                "webhook_replay",
                actor=actor,
                detail={
                    "deliveries": len(replayed),
                    "ids": replayed if delivery_ids is not None else "all dead",
                },
            )
        return replayed

    def delivery_counts(self) -> dict[str, dict[str, int]]:
        rows = (
            self._reader()
            .execute(
                "SELECT endpoint, state, COUNT(*) AS n FROM deliveries "
                "GROUP BY endpoint, state ORDER BY endpoint, state"
            )
            .fetchall()
        )
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["endpoint"], {})[row["state"]] = row["n"]
        return counts

    # --- end deliveries ---

    def close(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the writer, under the write lock."""

    def __init__(self, connection: sqlite3.Connection, lock: threading.Lock) -> None:
        self._connection = connection
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._connection

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        try:
            if exc_type is None:
                self._connection.execute("COMMIT")
            else:
                self._connection.execute("ROLLBACK")
        finally:
            self._lock.release()


# --- deliveries ---


def _delivery_record(row: sqlite3.Row) -> DeliveryRecord:
    def moment(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value is not None else None

    return DeliveryRecord(
        id=row["id"],
        lead_id=row["lead_id"],
        endpoint=row["endpoint"],
        webhook_id=row["webhook_id"],
        thread_key=row["thread_key"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=datetime.fromisoformat(row["next_attempt_at"]),
        last_status=row["last_status"],
        last_error=row["last_error"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        delivered_at=moment(row["delivered_at"]),
    )


# --- end deliveries ---
