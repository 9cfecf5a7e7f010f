"""Scale-out on PostgreSQL: two SMTP receivers and three parse workers, one killed.

Every process is ``python -m leadparse.server serve`` with its own role and
one shared database. Messages go to both receivers, and a fifth of them are
sent to both (the same bytes, as when a sender retries through a second MX).
A worker is killed with SIGKILL midway; its claimed jobs are taken over when
their lease expires. At the end every accepted message has exactly one
recorded parse, each idempotency key has one lead, and each message sent
twice is recorded as one lead and one duplicate.

NOTE: the run ends at parsed leads. Webhook delivery is not part of it,
because the parse-worker role does not create deliveries yet (the worker
pool receives no delivery routes from ``run_server``).
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_support import SRC_DIR, lead_message

pytestmark = [
    pytest.mark.scale,
    pytest.mark.skipif(sys.platform == "win32", reason="the test sends SIGKILL"),
]

UNIQUE_MESSAGES = 2000
"""Distinct messages; a fifth of them are also sent to the second receiver."""

SENDERS_PER_RECEIVER = 3
LEASE_TIMEOUT = 3.0
TIME_LIMIT = 80.0
"""Seconds for the whole run, from the first process start to the checks."""

_PORT_LINE = re.compile(r"leadparse server running: .* port=(\d+)")
_QUEUED = re.compile(r"queued as ([0-9a-f]{32})")


class Serve:
    """``python -m leadparse.server serve --role ROLE`` against one database."""

    def __init__(self, role: str, url: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADPARSE_")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC_DIR), *filter(None, [env.get("PYTHONPATH")])]
        )
        env.update(
            {
                "LEADPARSE_STORAGE_URL": url,
                "LEADPARSE_STORAGE_POOL_SIZE": "4",
                "LEADPARSE_SMTP_ACCEPT": "*@leads.test",
                "LEADPARSE_SMTP_HOSTNAME": "mx.test",
                "LEADPARSE_WORKERS_LEASE_TIMEOUT": str(LEASE_TIMEOUT),
                "LEADPARSE_WORKERS_POLL_INTERVAL": "0.5",
                "LEADPARSE_LOGGING_LEVEL": "WARNING",
            }
        )
        self.log = log
        self._log_file = log.open("w")
        args = [sys.executable, "-m", "leadparse.server", "serve", "--role", role]
        args += ["--port", "0", "--workers", "1", "--log-level", "INFO"]
        self.process = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )

    def wait_port(self, timeout: float = 40.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _PORT_LINE.search(self.log.read_text(errors="replace"))
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError("serve did not start:\n" + self.log.read_text())

    def children(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{self.process.pid}\n" in status:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; also kill pool processes left behind."""
        children = self.children()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        _reap(children)
        self._log_file.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _reap(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def processes() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.stop()


def _send(port: int, indexes: list[int], accepted: list[tuple[int, str]]) -> None:
    """Send one message per index on one session, recording (index, request id)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        for index in indexes:
            client.mail("alice@example.org")
            client.rcpt("sales@leads.test")
            code, reply = client.data(lead_message(index))
            assert code == 250, reply
            match = _QUEUED.search(reply.decode())
            assert match is not None, reply
            accepted.append((index, match.group(1)))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc for child pids")
def test_two_receivers_three_workers_one_killed(
    postgres_schema_url: str, tmp_path: Path, processes: list[Serve]
) -> None:
    from leadparse.server.pg_store import PostgresStore

    started = time.monotonic()
    # Apply the schema once, so the five processes do not all wait on it.
    store = PostgresStore(postgres_schema_url, pool_size=2)
    try:
        receivers = [
            Serve("smtp", postgres_schema_url, tmp_path / f"mx{n}.log") for n in (1, 2)
        ]
        workers = [
            Serve("worker", postgres_schema_url, tmp_path / f"worker{n}.log")
            for n in (1, 2, 3)
        ]
        processes.extend(receivers + workers)
        ports = [receiver.wait_port() for receiver in receivers]
        for worker in workers:
            worker.wait_port()

        # Index i goes to receiver i % 2; every fifth index also goes to the other.
        batches: list[tuple[int, list[int]]] = []
        for receiver in (0, 1):
            mine = [i for i in range(UNIQUE_MESSAGES) if i % 2 == receiver]
            copies = [
                i for i in range(UNIQUE_MESSAGES) if i % 2 != receiver and i % 5 == 0
            ]
            indexes = sorted(mine + copies)
            for sender in range(SENDERS_PER_RECEIVER):
                batches.append((ports[receiver], indexes[sender::SENDERS_PER_RECEIVER]))
        accepted: list[tuple[int, str]] = []
        senders = [
            threading.Thread(target=_send, args=(port, indexes, accepted))
            for port, indexes in batches
        ]
        for sender in senders:
            sender.start()

        # Kill one worker once a tenth of the messages are parsed.
        killed = workers[0]
        deadline = started + TIME_LIMIT
        while time.monotonic() < deadline:
            if store.stats().jobs_by_state.get("done", 0) >= UNIQUE_MESSAGES // 10:
                break
            time.sleep(0.05)
        orphans = killed.children()
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait(10)
        _reap(orphans)
        for sender in senders:
            sender.join(max(1.0, deadline - time.monotonic()))
        assert not any(sender.is_alive() for sender in senders)

        total = UNIQUE_MESSAGES + len(range(0, UNIQUE_MESSAGES, 5))
        assert len(accepted) == total
        while time.monotonic() < deadline:
            if store.stats().jobs_by_state == {"done": total}:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started

        stats = store.stats()
        assert stats.jobs_by_state == {"done": total}, stats
        assert stats.messages == total
        assert stats.leads_by_kind == {"lead": UNIQUE_MESSAGES}
        assert stats.duplicates == UNIQUE_MESSAGES // 5
        # One recorded parse per accepted message, none repeated.
        parses = [entry.request_id for entry in store.audit_entries(action="parse")]
        assert sorted(parses) == sorted(request_id for _i, request_id in accepted)
        # Each message sent twice: one lead, and one duplicate pointing at it.
        by_index: dict[int, list[str]] = {}
        for index, request_id in accepted:
            by_index.setdefault(index, []).append(request_id)
        for index in (0, 5, UNIQUE_MESSAGES - 5):
            first, second = (
                store.get_message(store.message_ids(request_id=request_id)[0])
                for request_id in by_index[index]
            )
            lead, duplicate = (
                (first, second) if second.duplicate_of else (second, first)
            )
            assert lead.duplicate_of is None
            assert duplicate.duplicate_of == lead.id
        assert elapsed < TIME_LIMIT
        import psycopg

        with psycopg.connect(postgres_schema_url) as connection:
            row = connection.execute(
                "SELECT COUNT(*) FROM jobs WHERE attempts > 1"
            ).fetchone()
        retried = row[0] if row else 0
        # The killed worker held claimed jobs, which the others took over.
        assert retried >= 1
    finally:
        store.close()
    sys.stderr.write(
        f"scale run: {total} messages ({UNIQUE_MESSAGES} unique) in {elapsed:.1f} s, "
        f"{retried} jobs claimed more than once\n"
    )
