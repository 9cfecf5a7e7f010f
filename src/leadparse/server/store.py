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
from datetime import UTC, datetime
from enum import StrEnum
from hashlib import sha256
from pathlib import Path
from typing import Any

from leadparse.server.crypto import RawCipher

__all__ = [
    "DATABASE_NAME",
    "AuditEntry",
    "IncomingMessage",
    "Job",
    "JobState",
    "Outcome",
    "ParseResult",
    "SQLiteStore",
    "SchemaError",
    "Stats",
    "Store",
    "StoredMessage",
]

logger = logging.getLogger(__name__)

DATABASE_NAME = "leadparse.sqlite3"


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
    def complete_job(self, job_id: int, result: ParseResult, *, actor: str) -> Outcome:
        """Record a parse result and mark the job done, in one transaction.

        A result whose idempotency key already belongs to another message
        marks this message a duplicate of that one and stores no lead.
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
    """

    def __init__(
        self, data_dir: Path | str, *, cipher: RawCipher | None = None
    ) -> None:
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
        with self._transaction() as connection:
            rows = connection.execute(
                "SELECT jobs.id, jobs.message_id, jobs.attempts, messages.request_id "
                "FROM jobs JOIN messages ON messages.id = jobs.message_id "
                "WHERE jobs.state = ? ORDER BY jobs.id LIMIT ?",
                (JobState.PENDING, limit),
            ).fetchall()
            now = _now()
            connection.executemany(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ? "
                "WHERE id = ?",
                [(JobState.RUNNING, now, row["id"]) for row in rows],
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

    def complete_job(self, job_id: int, result: ParseResult, *, actor: str) -> Outcome:
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
