"""The SQLite store: schema, durability path, ledger, encryption and deletion."""

from __future__ import annotations

import base64
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from server_support import lead_message

from leadparse.server.crypto import DecryptionError, RawCipher
from leadparse.server.store import (
    DATABASE_NAME,
    MIGRATIONS,
    IncomingMessage,
    JobState,
    Outcome,
    ParseResult,
    SchemaError,
    SQLiteStore,
)
from leadparse.server.worker import parse_message

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
T0 = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)


def _incoming(
    index: int, *, sender: str = "alice@example.org", at: datetime = T0
) -> IncomingMessage:
    return IncomingMessage(
        request_id=f"req-{index}",
        received_at=at,
        mail_from=sender,
        rcpt_tos=("sales@leads.test",),
        raw=lead_message(index, sender=sender),
    )


def _parse(store: SQLiteStore, message_id: int) -> ParseResult:
    message = store.get_message(message_id)
    return parse_message(
        "leadparse:parse_lead",
        message.raw,
        message.mail_from,
        message.rcpt_tos,
        message.received_at,
    )


def _store_and_parse(store: SQLiteStore, incoming: IncomingMessage) -> int:
    message_id = store.put_message(incoming)
    [job] = store.claim_jobs(1)
    assert job.message_id == message_id
    store.complete_job(job.id, _parse(store, message_id), actor="worker")
    return message_id


def test_schema_migrated_once_in_wal_mode(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    assert store.schema_version() == len(MIGRATIONS) == 3
    store.close()
    reopened = SQLiteStore(tmp_path)
    assert reopened.schema_version() == len(MIGRATIONS)
    reopened.close()
    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (
        len(MIGRATIONS),
    )
    connection.close()


def test_newer_schema_rejected(tmp_path: Path) -> None:
    SQLiteStore(tmp_path).close()
    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    connection.execute("INSERT INTO schema_version VALUES (99, '2030-01-01')")
    connection.commit()
    connection.close()
    with pytest.raises(SchemaError, match="schema version 99, but this leadparse"):
        SQLiteStore(tmp_path)


def test_put_message_round_trip(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    incoming = _incoming(1, sender="Alice@Example.org")
    message_id = store.put_message(incoming)
    message = store.get_message(message_id)
    assert message.request_id == "req-1"
    assert message.received_at == T0
    assert message.mail_from == "alice@example.org"
    assert message.rcpt_tos == ("sales@leads.test",)
    assert message.raw == incoming.raw
    assert message.duplicate_of is None
    assert store.stats().jobs_by_state == {"pending": 1}
    store.close()


def test_concurrent_puts_share_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    ids: list[int] = []
    lock = threading.Lock()

    def put(index: int) -> None:
        message_id = store.put_message(_incoming(index))
        with lock:
            ids.append(message_id)

    threads = [threading.Thread(target=put, args=(index,)) for index in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ids) == list(range(1, 41))
    assert store.stats().jobs_by_state == {"pending": 40}
    store.close()


def test_duplicate_request_id_fails_put(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.put_message(_incoming(1))
    with pytest.raises(sqlite3.IntegrityError):
        store.put_message(_incoming(1))
    assert store.stats().messages == 1
    store.close()


def test_jobs_claim_requeue_and_fail(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    for index in range(3):
        store.put_message(_incoming(index))
    claimed = store.claim_jobs(2)
    assert [job.attempts for job in claimed] == [1, 1]
    assert store.stats().jobs_by_state == {"pending": 1, "running": 2}
    assert store.requeue_running() == 2
    first, second = store.claim_jobs(2)
    assert first.attempts == 2
    store.fail_job(first.id, "ValueError: boom", retry=True)
    store.fail_job(second.id, "ValueError: boom", retry=False)
    assert store.stats().jobs_by_state == {"failed": 1, "pending": 2}
    store.close()


def test_idempotency_marks_duplicates(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    first = _store_and_parse(store, _incoming(1))
    # Same content under a new request id: a redelivery.
    redelivered = IncomingMessage(
        request_id="req-again",
        received_at=T0 + timedelta(minutes=5),
        mail_from="alice@example.org",
        rcpt_tos=("sales@leads.test",),
        raw=b"Received: from relay.test\r\n" + lead_message(1),
    )
    second = store.put_message(redelivered)
    [job] = store.claim_jobs(1)
    outcome = store.complete_job(job.id, _parse(store, second), actor="worker")
    assert outcome is Outcome.DUPLICATE
    assert store.get_message(second).duplicate_of == first
    assert store.stats().leads_by_kind == {"lead": 1}
    # A late result for a job that is no longer running changes nothing.
    assert store.complete_job(job.id, _parse(store, second), actor="worker") is (
        Outcome.SKIPPED
    )
    assert len(store.audit_entries(action="parse")) == 2
    store.close()


def test_encrypted_raw_not_stored_in_clear(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, cipher=RawCipher({"a": KEY_A}, "a"))
    incoming = _incoming(1)
    message_id = store.put_message(incoming)
    assert store.get_message(message_id).raw == incoming.raw
    store.close()
    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    raw, key_id = connection.execute("SELECT raw, key_id FROM messages").fetchone()
    connection.close()
    assert key_id == "a"
    assert b"licences" not in raw
    assert len(raw) == len(incoming.raw) + 12 + 16


def test_key_rotation_keeps_old_rows_readable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, cipher=RawCipher({"a": KEY_A}, "a"))
    old = store.put_message(_incoming(1))
    store.close()

    rotated = SQLiteStore(tmp_path, cipher=RawCipher({"a": KEY_A, "b": KEY_B}, "b"))
    new = rotated.put_message(_incoming(2))
    assert rotated.get_message(old).raw == lead_message(1)
    assert rotated.get_message(new).raw == lead_message(2)
    rotated.close()

    without_old = SQLiteStore(tmp_path, cipher=RawCipher({"b": KEY_B}, "b"))
    with pytest.raises(DecryptionError, match="no key with id 'a'"):
        without_old.get_message(old)
    without_old.close()

    plain = SQLiteStore(tmp_path)
    with pytest.raises(DecryptionError, match="no encryption keys are configured"):
        plain.get_message(new)
    plain.close()


def test_swapped_ciphertext_fails_authentication(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, cipher=RawCipher({"a": KEY_A}, "a"))
    first = store.put_message(_incoming(1))
    store.put_message(_incoming(2))
    store.close()
    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    connection.execute(
        "UPDATE messages SET raw = (SELECT raw FROM messages WHERE id = 2) WHERE id = 1"
    )
    connection.commit()
    connection.close()
    store = SQLiteStore(tmp_path, cipher=RawCipher({"a": KEY_A}, "a"))
    with pytest.raises(DecryptionError, match="failed authentication"):
        store.get_message(first)
    store.close()


def test_purge_deletes_old_messages_and_leads(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    _store_and_parse(store, _incoming(1, at=T0 - timedelta(days=100)))
    kept = _store_and_parse(store, _incoming(2, at=T0))
    assert store.purge(T0 - timedelta(days=90), actor="ops") == 1
    assert store.message_ids() == [kept]
    stats = store.stats()
    assert stats.leads_by_kind == {"lead": 1}
    assert stats.jobs_by_state == {"done": 1}
    [entry] = store.audit_entries(action="purge")
    assert entry.actor == "ops"
    assert entry.detail["messages"] == 1
    store.close()


def test_forget_deletes_every_record_of_address(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    by_envelope = _store_and_parse(store, _incoming(1, sender="bob@example.org"))
    # Envelope sender differs from the From address (a form or a relay).
    by_header = store.put_message(
        IncomingMessage(
            request_id="req-header",
            received_at=T0,
            mail_from="bounces@forms.example",
            rcpt_tos=("sales@leads.test",),
            raw=lead_message(2, sender="Bob@Example.org"),
        )
    )
    [job] = store.claim_jobs(1)
    store.complete_job(job.id, _parse(store, by_header), actor="worker")
    other = _store_and_parse(store, _incoming(3, sender="carol@example.org"))

    assert store.forget("BOB@example.org", actor="ops") == 2
    assert store.message_ids() == [other]
    assert by_envelope not in store.message_ids()
    assert [lead["from"]["email"] for lead in store.iter_leads()] == [
        "carol@example.org"
    ]
    [entry] = store.audit_entries(action="forget")
    assert entry.detail == {"messages": 2}
    assert "bob" not in repr(store.audit_entries())
    store.close()


def test_forget_includes_duplicates(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    _store_and_parse(store, _incoming(1, sender="bob@example.org"))
    copy = IncomingMessage(
        request_id="req-copy",
        received_at=T0,
        mail_from="relay@example.net",
        rcpt_tos=("sales@leads.test",),
        raw=lead_message(1, sender="bob@example.org"),
    )
    duplicate = store.put_message(copy)
    [job] = store.claim_jobs(1)
    store.complete_job(job.id, _parse(store, duplicate), actor="worker")
    assert store.get_message(duplicate).duplicate_of is not None
    assert store.forget("bob@example.org", actor="ops") == 2
    assert store.stats().messages == 0
    store.close()


def test_reparse_replaces_lead_and_audits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    message_id = _store_and_parse(store, _incoming(1))
    result = _parse(store, message_id)
    changed = ParseResult(
        payload={**result.payload, "subject": "changed by a newer parser"},
        idempotency_key=result.idempotency_key,
        kind="bulk",
        parser_version="9.9.9",
        sender_email=result.sender_email,
        contact_email=result.contact_email,
    )
    outcome = store.record_reparse(message_id, changed, actor="dana", reason="fix")
    assert outcome is Outcome.UPDATED
    [lead] = list(store.iter_leads())
    assert lead["subject"] == "changed by a newer parser"
    assert list(store.iter_leads(kind="lead")) == []
    [entry] = store.audit_entries(action="reparse")
    assert entry.actor == "dana"
    assert entry.reason == "fix"
    assert entry.parser_version == "9.9.9"
    assert entry.request_id == "req-1"
    assert entry.detail["key_changed"] is False
    store.close()


def test_reparse_completes_failed_job(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    message_id = store.put_message(_incoming(1))
    [job] = store.claim_jobs(1)
    store.fail_job(job.id, "RuntimeError: parser bug", retry=False)
    outcome = store.record_reparse(
        message_id, _parse(store, message_id), actor="dana", reason="parser fixed"
    )
    assert outcome is Outcome.LEAD
    assert store.stats().jobs_by_state == {JobState.DONE.value: 1}
    store.close()


def test_iter_leads_filters_since(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    _store_and_parse(store, _incoming(1, at=T0 - timedelta(days=2)))
    _store_and_parse(store, _incoming(2, at=T0))
    subjects = [lead["subject"] for lead in store.iter_leads(since=T0 - timedelta(1))]
    assert subjects == ["Quote request 2"]
    store.close()


def test_cipher_key_base64_config_matches(tmp_path: Path) -> None:
    from leadparse.server.config import load_settings

    settings = load_settings(
        env={
            "LEADPARSE_ENCRYPTION_KEY_ID": "a",
            "LEADPARSE_ENCRYPTION_KEYS": "a=" + base64.b64encode(KEY_A).decode(),
        }
    )
    assert settings.encryption.decoded_keys() == {"a": KEY_A}
