"""End-to-end throughput and latency of the receiver on PostgreSQL and SQLite.

Each configuration runs ``python -m leadparse.server serve`` processes on
loopback: one SMTP receiver (``--role smtp``), N parse-worker processes
(``--role worker --workers 1``) and one webhook sender (``--role delivery``)
sharing one PostgreSQL database, or one process with SQLite (``--role all
--workers 1``, which sends webhooks itself). Every process posts to one
webhook endpoint, an aiohttp server on 127.0.0.1 in this process that
verifies each signature and responds with 204. Sender threads deliver small lead
messages over SMTP. The figures are:

- leads/s: messages divided by the seconds from the first send to the last
  webhook answered 2xx;
- p50 and p99 latency: from the 250 reply to the endpoint's 2xx response
  for the same request id, both taken from this host's wall clock. When the
  senders offer mail faster than the workers parse it, most of this is time
  spent waiting in the job queue.

Webhook settings: no rate limit (the default of 10 requests per second
would cap every run at 10 leads/s), the default concurrency of 4 requests
per endpoint, batch size 1, and ``--delivery-poll`` seconds between polls.
On PostgreSQL the delivery process finds new deliveries only by polling,
so the poll interval adds up to that many seconds to the latency.

Usage: python benchmarks/scale.py [--messages 1000] [--senders 4]
PostgreSQL comes from LEADPARSE_TEST_DATABASE_URL, or a throwaway cluster is
started as in the tests (see tests/server/pg_support.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import re
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "server")]

import pg_support  # noqa: E402
from aiohttp import web  # noqa: E402
from server_support import lead_message  # noqa: E402

from leadparse.webhooks import WebhookVerificationError, verify  # noqa: E402

_PORT_LINE = re.compile(r"leadparse server running: .* port=(\d+)")
_QUEUED = re.compile(r"queued as ([0-9a-f]{32})")
SECRET = "whsec_" + base64.b64encode(b"scale-benchmark-secret-32-bytes!").decode()


class WebhookEndpoint:
    """A webhook endpoint on 127.0.0.1, served by aiohttp in its own thread.

    A verified request gets a 204 response, and the wall-clock time of that
    response is stored under the request's ``X-Leadparse-Request-Id``. A
    request that fails verification gets 401 and is counted in ``rejected``.
    """

    def __init__(self) -> None:
        self.answered: dict[str, float] = {}
        self.requests = 0
        self.rejected = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> str:
        """Start the server; return its URL."""
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            cleanup = self._runner.cleanup()
            asyncio.run_coroutine_threadsafe(cleanup, self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(request.headers, body, [SECRET])
        except WebhookVerificationError:
            self.rejected += 1
            return web.Response(status=401)
        self.requests += 1
        request_id = request.headers.get("X-Leadparse-Request-Id", "")
        # Only the first response time is kept, so a repeated delivery of the
        # same lead increments `requests` and nothing else.
        self.answered.setdefault(request_id, time.time())
        return web.Response(status=204)


def _webhook_env(url: str, poll_interval: float) -> dict[str, str]:
    return {
        "LEADPARSE_WEBHOOKS_URL": url,
        "LEADPARSE_WEBHOOKS_SECRETS": SECRET,
        "LEADPARSE_WEBHOOKS_ALLOW_HTTP_LOOPBACK": "true",
        "LEADPARSE_WEBHOOKS_RATE_LIMIT": "0",
        "LEADPARSE_WEBHOOKS_POLL_INTERVAL": str(poll_interval),
    }


def _start(
    args: list[str], env_extra: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADPARSE_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(
        {
            "LEADPARSE_SMTP_ACCEPT": "*@leads.test",
            "LEADPARSE_SMTP_HOSTNAME": "mx.test",
            "LEADPARSE_WORKERS_POLL_INTERVAL": "1.0",
            "LEADPARSE_LOGGING_LEVEL": "WARNING",
            **env_extra,
        }
    )
    command = [sys.executable, "-m", "leadparse.server", "serve", "--port", "0"]
    with log.open("w") as handle:
        return subprocess.Popen(
            command + args + ["--log-level", "INFO"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=handle,
        )


def _wait_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = _PORT_LINE.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("serve did not start:\n" + log.read_text())


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _send(port: int, indexes: list[int], sent: dict[str, float]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo()
        for index in indexes:
            client.mail("alice@example.org")
            client.rcpt("sales@leads.test")
            code, reply = client.data(lead_message(index))
            accepted_at = time.time()
            match = _QUEUED.search(reply.decode())
            if code != 250 or match is None:
                raise RuntimeError(f"message {index} rejected: {code} {reply!r}")
            sent[match.group(1)] = accepted_at


def _measure(endpoint: WebhookEndpoint, port: int, messages: int, senders: int) -> str:
    sent: dict[str, float] = {}
    indexes = list(range(messages))
    threads = [
        threading.Thread(target=_send, args=(port, indexes[n::senders], sent))
        for n in range(senders)
    ]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 600
    answered: dict[str, float] = {}
    while time.monotonic() < deadline:
        # A copy, because the endpoint's thread adds entries meanwhile.
        answered = dict(endpoint.answered)
        if len(answered.keys() & sent.keys()) >= messages:
            break
        time.sleep(0.05)
    delivered = {key: at for key, at in answered.items() if key in sent}
    if len(delivered) != messages:
        raise RuntimeError(
            f"only {len(delivered)} of {messages} messages reached the webhook "
            "endpoint within 600 s"
        )
    elapsed = max(delivered.values()) - started
    latencies = sorted(delivered[key] - sent[key] for key in sent)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return (
        f"{messages / elapsed:8.1f} leads/s   p50 {p50 * 1000:7.1f} ms   "
        f"p99 {p99 * 1000:7.1f} ms   ({messages} messages in {elapsed:.1f} s, "
        f"{endpoint.requests} webhook requests, {endpoint.rejected} rejected)"
    )


def _run_postgres(
    url: str, workers: int, messages: int, senders: int, work: Path, poll: float
) -> str:
    import psycopg

    from leadparse.server.pg_store import PostgresStore

    schema = pg_support.new_schema_name()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    schema_url = pg_support.with_schema(url, schema)
    # Opening the store applies the schema once, before the processes start.
    store = PostgresStore(schema_url, pool_size=2)
    endpoint = WebhookEndpoint()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        env = {
            "LEADPARSE_STORAGE_URL": schema_url,
            "LEADPARSE_STORAGE_POOL_SIZE": "4",
            **_webhook_env(endpoint.start(), poll),
        }
        smtp_log = work / f"pg{workers}-smtp.log"
        processes.append(_start(["--role", "smtp"], env, smtp_log))
        port = _wait_port(processes[0], smtp_log)
        roles = [["--role", "worker", "--workers", "1"]] * workers
        roles.append(["--role", "delivery"])
        for n, role in enumerate(roles):
            log = work / f"pg{workers}-{role[1]}{n}.log"
            processes.append(_start(role, env, log))
            _wait_port(processes[-1], log)
        return _measure(endpoint, port, messages, senders)
    finally:
        _stop(processes)
        endpoint.stop()
        store.close()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def _run_sqlite(messages: int, senders: int, work: Path, poll: float) -> str:
    data_dir = work / "sqlite-data"
    log = work / "sqlite.log"
    endpoint = WebhookEndpoint()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        env = _webhook_env(endpoint.start(), poll)
        args = ["--role", "all", "--workers", "1", "--data-dir", str(data_dir)]
        processes.append(_start(args, env, log))
        port = _wait_port(processes[0], log)
        return _measure(endpoint, port, messages, senders)
    finally:
        _stop(processes)
        endpoint.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per run")
    parser.add_argument("--senders", type=int, default=4, help="SMTP client threads")
    parser.add_argument(
        "--workers", default="1,2,4", help="worker process counts on PostgreSQL"
    )
    parser.add_argument(
        "--delivery-poll",
        type=float,
        default=1.0,
        help="webhooks.poll_interval in seconds (default 1.0, the product default)",
    )
    args = parser.parse_args()

    cluster: pg_support.TemporaryCluster | None = None
    url = os.environ.get(pg_support.TEST_DATABASE_ENV)
    if not url:
        bindir = pg_support.find_bindir()
        if bindir is None:
            sys.exit(
                "PostgreSQL not found; install it or set "
                + pg_support.TEST_DATABASE_ENV
            )
        cluster = pg_support.TemporaryCluster(bindir).start()
        url = cluster.url
    print(
        f"CPU cores: {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.messages} messages per run, "
        f"{args.senders} SMTP sessions, webhook poll interval {args.delivery_poll:g} s"
    )
    if cluster is not None:
        print("PostgreSQL: throwaway local cluster with fsync=off (not durable)")
    try:
        with tempfile.TemporaryDirectory(prefix="leadparse-scale-") as folder:
            work = Path(folder)
            for workers in (int(n) for n in args.workers.split(",")):
                figures = _run_postgres(
                    url, workers, args.messages, args.senders, work, args.delivery_poll
                )
                print(
                    f"postgresql  {workers} worker(s) + 1 delivery: {figures}",
                    flush=True,
                )
            figures = _run_sqlite(args.messages, args.senders, work, args.delivery_poll)
            print(f"sqlite      1 worker, delivery in process: {figures}")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
