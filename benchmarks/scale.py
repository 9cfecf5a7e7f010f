"""End-to-end throughput and latency of the receiver on PostgreSQL and SQLite.

Each configuration runs ``python -m leadparse.server serve`` processes on
loopback: one SMTP receiver (``--role smtp``) and N parse-worker processes
(``--role worker --workers 1``) sharing one PostgreSQL database, or one
process with SQLite (``--role all --workers 1``). Sender threads deliver
small lead messages over SMTP. The figures are:

- leads/s: messages divided by the seconds from the first send to the last
  recorded parse;
- p50 and p99 latency: from the 250 reply to the audit log's parse entry,
  both taken from this host's wall clock.

The end point is the parsed lead, not a webhook 2xx: the parse-worker role
does not create webhook deliveries yet.

Usage: python benchmarks/scale.py [--messages 1000] [--senders 4]
PostgreSQL comes from LEADPARSE_TEST_DATABASE_URL, or a throwaway cluster is
started as in the tests (see tests/server/pg_support.py).
"""

from __future__ import annotations

import argparse
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
from server_support import lead_message  # noqa: E402

from leadparse.server.store import Store  # noqa: E402

_PORT_LINE = re.compile(r"leadparse server running: .* port=(\d+)")
_QUEUED = re.compile(r"queued as ([0-9a-f]{32})")


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


def _measure(store: Store, port: int, messages: int, senders: int, offset: int) -> str:
    sent: dict[str, float] = {}
    indexes = list(range(offset, offset + messages))
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
    while time.monotonic() < deadline:
        if store.stats().jobs_by_state.get("done", 0) >= messages:
            break
        time.sleep(0.1)
    parsed = {
        entry.request_id: entry.at.timestamp()
        for entry in store.audit_entries(action="parse")
        if entry.request_id in sent
    }
    if len(parsed) != messages:
        raise RuntimeError(f"only {len(parsed)} of {messages} messages were parsed")
    elapsed = max(parsed.values()) - started
    latencies = sorted(parsed[key] - sent[key] for key in sent)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return (
        f"{messages / elapsed:8.1f} leads/s   p50 {p50 * 1000:7.1f} ms   "
        f"p99 {p99 * 1000:7.1f} ms   ({messages} messages in {elapsed:.1f} s)"
    )


def _run_postgres(
    url: str, workers: int, messages: int, senders: int, work: Path
) -> str:
    import psycopg

    from leadparse.server.pg_store import PostgresStore

    schema = pg_support.new_schema_name()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    schema_url = pg_support.with_schema(url, schema)
    store = PostgresStore(schema_url, pool_size=2)
    env = {"LEADPARSE_STORAGE_URL": schema_url, "LEADPARSE_STORAGE_POOL_SIZE": "4"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        smtp_log = work / f"pg{workers}-smtp.log"
        processes.append(_start(["--role", "smtp"], env, smtp_log))
        port = _wait_port(processes[0], smtp_log)
        for n in range(workers):
            log = work / f"pg{workers}-worker{n}.log"
            processes.append(_start(["--role", "worker", "--workers", "1"], env, log))
            _wait_port(processes[-1], log)
        return _measure(store, port, messages, senders, offset=0)
    finally:
        _stop(processes)
        store.close()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def _run_sqlite(messages: int, senders: int, work: Path) -> str:
    from leadparse.server.store import SQLiteStore

    data_dir = work / "sqlite-data"
    log = work / "sqlite.log"
    process = _start(
        ["--role", "all", "--workers", "1", "--data-dir", str(data_dir)], {}, log
    )
    try:
        port = _wait_port(process, log)
        store = SQLiteStore(data_dir)
        try:
            return _measure(store, port, messages, senders, offset=0)
        finally:
            store.close()
    finally:
        _stop([process])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per run")
    parser.add_argument("--senders", type=int, default=4, help="SMTP client threads")
    parser.add_argument(
        "--workers", default="1,2,4", help="worker process counts on PostgreSQL"
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
        f"{args.senders} SMTP sessions"
    )
    if cluster is not None:
        print("PostgreSQL: throwaway local cluster with fsync=off (not durable)")
    try:
        with tempfile.TemporaryDirectory(prefix="leadparse-scale-") as folder:
            work = Path(folder)
            for workers in (int(n) for n in args.workers.split(",")):
                figures = _run_postgres(url, workers, args.messages, args.senders, work)
                print(f"postgresql  {workers} worker(s): {figures}")
            print(
                f"sqlite      1 worker   : {_run_sqlite(args.messages, args.senders, work)}"
            )
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
