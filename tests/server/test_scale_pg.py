"""Scale-out on PostgreSQL: SMTP receivers, parse workers and delivery processes.

Every process is ``python -m leadparse.server serve`` with its own role and
one shared database: two SMTP receivers, three parse workers and two webhook
delivery processes, all configured with one webhook endpoint, an aiohttp
server on 127.0.0.1 that the test runs. Messages go to both receivers, and a
fifth of them are sent to both (the same bytes, as when a sender retries
through a second MX). A worker is killed with SIGKILL midway; its claimed
jobs are taken over when their lease expires. At the end every accepted
message has exactly one recorded parse, each idempotency key has one lead,
and each message sent twice is recorded as one lead and one duplicate. The
endpoint has received each lead exactly once, with a valid signature, and
both delivery processes have sent some of them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from server_support import SRC_DIR, lead_message

from leadparse.server.store import DeliveryState, public_lead_id
from leadparse.webhooks import WebhookVerificationError, verify

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

SECRET = "whsec_" + base64.b64encode(b"scale-test-secret-32-bytes-long!").decode()

_PORT_LINE = re.compile(r"leadparse server running: .* port=(\d+)")
_QUEUED = re.compile(r"queued as ([0-9a-f]{32})")
_DELIVERED = re.compile(r"webhook delivered: .* status=2\d\d")


class Serve:
    """``python -m leadparse.server serve --role ROLE`` against one database."""

    def __init__(
        self, role: str, url: str, log: Path, extra_env: dict[str, str]
    ) -> None:
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
                **extra_env,
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


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1, served by aiohttp in its own thread.

    Every request is verified with :func:`leadparse.webhooks.verify`. A
    verified request gets a 204 response and is stored in ``received`` as
    (webhook id, request id header, body). A rejected one gets 401, and its
    reason is stored in ``rejected``.
    """

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        self.rejected: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> str:
        """Start the server; return its URL."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        return future.result(10)

    def stop(self) -> None:
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(
                self._runner.cleanup(), self._loop
            )
            future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            webhook_id = verify(request.headers, body, [SECRET])
        except WebhookVerificationError as exc:
            self.rejected.append(exc.reason)
            return web.Response(status=401)
        request_id = request.headers.get("X-Leadparse-Request-Id", "")
        self.received.append((webhook_id, request_id, body))
        return web.Response(status=204)


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


@pytest.fixture
def endpoint() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver()
    yield started
    started.stop()


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
def test_scale_out_one_worker_killed_delivers_once(
    postgres_schema_url: str,
    tmp_path: Path,
    processes: list[Serve],
    endpoint: WebhookReceiver,
) -> None:
    from leadparse.server.pg_store import PostgresStore

    started = time.monotonic()
    # Every process gets the same webhook settings: the workers route new
    # leads to the endpoint, the delivery processes send them.
    webhooks = {
        "LEADPARSE_WEBHOOKS_URL": endpoint.start(),
        "LEADPARSE_WEBHOOKS_SECRETS": SECRET,
        "LEADPARSE_WEBHOOKS_ALLOW_HTTP_LOOPBACK": "true",
        "LEADPARSE_WEBHOOKS_RATE_LIMIT": "0",
        "LEADPARSE_WEBHOOKS_POLL_INTERVAL": "0.5",
    }
    # Apply the schema once, so the seven processes do not all wait on it.
    store = PostgresStore(postgres_schema_url, pool_size=2)
    try:
        receivers = [
            Serve("smtp", postgres_schema_url, tmp_path / f"mx{n}.log", webhooks)
            for n in (1, 2)
        ]
        workers = [
            Serve("worker", postgres_schema_url, tmp_path / f"worker{n}.log", webhooks)
            for n in (1, 2, 3)
        ]
        deliverers = [
            Serve(
                "delivery", postgres_schema_url, tmp_path / f"delivery{n}.log", webhooks
            )
            for n in (1, 2)
        ]
        processes.extend(receivers + workers + deliverers)
        ports = [receiver.wait_port() for receiver in receivers]
        for serve in workers + deliverers:
            serve.wait_port()

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
        delivered_state = {"default": {DeliveryState.DELIVERED.value: UNIQUE_MESSAGES}}
        while time.monotonic() < deadline:
            if store.delivery_counts() == delivered_state:
                break
            time.sleep(0.1)
        # Stopped before the checks, so no request can arrive after them.
        for serve in deliverers:
            serve.stop()
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

        # Webhooks: one delivery per lead, delivered on its first attempt.
        assert store.delivery_counts() == delivered_state
        deliveries = store.list_deliveries()
        assert len(deliveries) == UNIQUE_MESSAGES
        assert {delivery.attempts for delivery in deliveries} == {1}
        # The endpoint received each lead once, with a valid signature. A
        # message sent to both receivers, or parsed again after the kill,
        # adds no request.
        assert endpoint.rejected == []
        per_webhook_id = Counter(webhook_id for webhook_id, _r, _b in endpoint.received)
        assert len(endpoint.received) == UNIQUE_MESSAGES
        assert set(per_webhook_id.values()) == {1}
        assert set(per_webhook_id) == {delivery.webhook_id for delivery in deliveries}
        delivered_indexes = []
        for webhook_id, request_id, body in endpoint.received:
            lead_json = json.loads(body)
            assert webhook_id == public_lead_id(lead_json["idempotency_key"])
            index = int(lead_json["subject"].removeprefix("Quote request "))
            assert request_id in by_index[index]
            delivered_indexes.append(index)
        assert sorted(delivered_indexes) == list(range(UNIQUE_MESSAGES))
        # Both delivery processes sent a share; their log lines add up to the total.
        sent_by_process = [
            len(_DELIVERED.findall(serve.log.read_text())) for serve in deliverers
        ]
        assert sum(sent_by_process) == UNIQUE_MESSAGES
        assert min(sent_by_process) >= 1
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
        f"scale run: {total} messages ({UNIQUE_MESSAGES} unique) parsed and "
        f"delivered in {elapsed:.1f} s, {retried} jobs claimed more than once, "
        f"webhooks sent per delivery process: {sent_by_process}\n"
    )
