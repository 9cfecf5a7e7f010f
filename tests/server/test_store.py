"""The store on SQLite and PostgreSQL: schema, durability path, ledger, leases,
encryption and deletion.

Tests that take the ``store`` or ``store_factory`` fixture run once per
backend; the PostgreSQL run is skipped when no PostgreSQL is available.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from server_support import lead_message
from store_backends import StoreFactory

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
    Store,
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


def _parse(store: Store, message_id: int) -> ParseResult:
    message = store.get_message(message_id)
    return parse_message(
        "leadparse:parse_lead",
        message.raw,
        message.mail_from,
        message.rcpt_tos,
        message.received_at,
    )


def _store_and_parse(store: Store, incoming: IncomingMessage) -> int:
    message_id = store.put_message(incoming)
    [job] = store.claim_jobs(1)
    assert job.message_id == message_id
    store.complete_job(job.id, _parse(store, message_id), actor="worker")
    return message_id


def test_schema_migrated_once_in_wal_mode(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    assert store.schema_version() == len(MIGRATIONS)
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


def test_newer_schema_rejected(store_factory: StoreFactory) -> None:
    store_factory.open().close()
    store_factory.execute("INSERT INTO schema_version VALUES (99, '2030-01-01')")
    with pytest.raises(SchemaError, match="schema version 99, but this leadparse"):
        store_factory.open()


def test_put_message_round_trip(store: Store) -> None:
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


def test_concurrent_puts_get_distinct_ids(store: Store) -> None:
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


def test_duplicate_request_id_fails_put(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    store.put_message(_incoming(1))
    with pytest.raises(store_factory.integrity_error):
        store.put_message(_incoming(1))
    assert store.stats().messages == 1


def test_jobs_claim_requeue_and_fail(store: Store) -> None:
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


def test_idempotency_marks_duplicates(store: Store) -> None:
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


def test_encrypted_raw_not_stored_in_clear(store_factory: StoreFactory) -> None:
    store = store_factory.open(cipher=RawCipher({"a": KEY_A}, "a"))
    incoming = _incoming(1)
    message_id = store.put_message(incoming)
    assert store.get_message(message_id).raw == incoming.raw
    [(raw, key_id)] = store_factory.execute("SELECT raw, key_id FROM messages")
    raw = bytes(raw)
    assert key_id == "a"
    assert b"licences" not in raw
    assert len(raw) == len(incoming.raw) + 12 + 16


def test_key_rotation_keeps_old_rows_readable(store_factory: StoreFactory) -> None:
    store = store_factory.open(cipher=RawCipher({"a": KEY_A}, "a"))
    old = store.put_message(_incoming(1))

    rotated = store_factory.open(cipher=RawCipher({"a": KEY_A, "b": KEY_B}, "b"))
    new = rotated.put_message(_incoming(2))
    assert rotated.get_message(old).raw == lead_message(1)
    assert rotated.get_message(new).raw == lead_message(2)

    without_old = store_factory.open(cipher=RawCipher({"b": KEY_B}, "b"))
    with pytest.raises(DecryptionError, match="no key with id 'a'"):
        without_old.get_message(old)

    plain = store_factory.open()
    with pytest.raises(DecryptionError, match="no encryption keys are configured"):
        plain.get_message(new)


def test_swapped_ciphertext_fails_authentication(store_factory: StoreFactory) -> None:
    store = store_factory.open(cipher=RawCipher({"a": KEY_A}, "a"))
    first = store.put_message(_incoming(1))
    second = store.put_message(_incoming(2))
    store_factory.execute(
        "UPDATE messages SET raw = (SELECT raw FROM messages WHERE id = ?) "
        "WHERE id = ?",
        (second, first),
    )
    with pytest.raises(DecryptionError, match="failed authentication"):
        store.get_message(first)


def test_purge_deletes_old_messages_and_leads(store: Store) -> None:
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


def test_forget_deletes_every_record_of_address(store: Store) -> None:
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


def test_forget_includes_duplicates(store: Store) -> None:
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


def test_reparse_replaces_lead_and_audits(store: Store) -> None:
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


def test_reparse_completes_failed_job(store: Store) -> None:
    message_id = store.put_message(_incoming(1))
    [job] = store.claim_jobs(1)
    store.fail_job(job.id, "RuntimeError: parser bug", retry=False)
    outcome = store.record_reparse(
        message_id, _parse(store, message_id), actor="dana", reason="parser fixed"
    )
    assert outcome is Outcome.LEAD
    assert store.stats().jobs_by_state == {JobState.DONE.value: 1}


def test_iter_leads_filters_since(store: Store) -> None:
    _store_and_parse(store, _incoming(1, at=T0 - timedelta(days=2)))
    _store_and_parse(store, _incoming(2, at=T0))
    subjects = [lead["subject"] for lead in store.iter_leads(since=T0 - timedelta(1))]
    assert subjects == ["Quote request 2"]


def test_cipher_key_base64_config_matches(tmp_path: Path) -> None:
    from leadparse.server.config import load_settings

    settings = load_settings(
        env={
            "LEADPARSE_ENCRYPTION_KEY_ID": "a",
            "LEADPARSE_ENCRYPTION_KEYS": "a=" + base64.b64encode(KEY_A).decode(),
        }
    )
    assert settings.encryption.decoded_keys() == {"a": KEY_A}


def test_expired_lease_claimed_again(store_factory: StoreFactory) -> None:
    store = store_factory.open(lease_timeout=0.2)
    message_id = store.put_message(_incoming(1))
    [first] = store.claim_jobs(5)
    # The claim is fresh, so a second worker finds nothing to do.
    assert store.claim_jobs(5) == []
    time.sleep(0.4)
    [taken_over] = store.claim_jobs(5)
    assert taken_over.id == first.id
    assert taken_over.message_id == message_id
    assert taken_over.attempts == 2
    assert store.complete_job(
        taken_over.id, _parse(store, message_id), actor="worker"
    ) is (Outcome.LEAD)
    # The worker that lost its lease finishes late: nothing changes.
    assert store.complete_job(first.id, _parse(store, message_id), actor="worker") is (
        Outcome.SKIPPED
    )
    assert store.stats().leads_by_kind == {"lead": 1}
    assert len(store.audit_entries(action="parse")) == 1


def test_concurrent_claims_disjoint(store_factory: StoreFactory) -> None:
    stores = [store_factory.open() for _ in range(4)]
    for index in range(60):
        stores[0].put_message(_incoming(index))
    claimed: list[int] = []
    lock = threading.Lock()

    def claim(store: Store) -> None:
        while jobs := store.claim_jobs(3):
            with lock:
                claimed.extend(job.id for job in jobs)

    threads = [threading.Thread(target=claim, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 60
    assert stores[0].stats().jobs_by_state == {"running": 60}


def test_same_key_completed_concurrently_once(store_factory: StoreFactory) -> None:
    """Two receivers stored the same bytes; two workers complete them at once."""
    first_store = store_factory.open()
    second_store = store_factory.open()
    raw = lead_message(7)
    ids = first_store.put_messages(
        [
            IncomingMessage(
                f"req-{name}", T0, "alice@example.org", ("s@leads.test",), raw
            )
            for name in ("mx1", "mx2")
        ]
    )
    jobs = first_store.claim_jobs(2)
    assert [job.message_id for job in jobs] == ids
    result = _parse(first_store, ids[0])
    outcomes: list[Outcome] = []
    barrier = threading.Barrier(2)

    def complete(store: Store, job_id: int) -> None:
        barrier.wait()
        outcome = store.complete_job(job_id, result, actor="worker")
        outcomes.append(outcome)

    threads = [
        threading.Thread(target=complete, args=(store, job.id))
        for store, job in zip((first_store, second_store), jobs, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [Outcome.DUPLICATE, Outcome.LEAD]
    stats = first_store.stats()
    assert stats.leads_by_kind == {"lead": 1}
    assert stats.duplicates == 1
    assert stats.jobs_by_state == {"done": 2}
