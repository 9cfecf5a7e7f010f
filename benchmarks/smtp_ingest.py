"""SMTP ingest rate of the leadparse receiver beside a bare aiosmtpd server.

Both servers run as subprocesses on 127.0.0.1 with a free port, one after the
other, and the same aiosmtplib client load goes to each: ``--concurrency``
sessions that together send ``--messages`` messages, several per session.
The bare server's handler discards each message and replies 250. The
leadparse receiver replies 250 only after the message and its parse job are
committed with fsync, and its parse workers run during the measurement
unless ``--workers 0`` turns them off.

Run from the repository root::

    python benchmarks/smtp_ingest.py --messages 2000 --concurrency 10 --rounds 3

The script prints messages per second for each server and round, the median
of each, and the ratio leadparse / bare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_PORT_LINE = re.compile(r"port=(\d+)")


def _message(index: int, size: int) -> bytes:
    head = (
        f"From: Alice Example <alice{index}@example.org>\r\n"
        "To: sales@leads.test\r\n"
        f"Subject: Quote request {index}\r\n"
        f"Message-ID: <bench-{index}-{time.time_ns()}@example.org>\r\n"
        "Date: Tue, 04 Jun 2024 10:00:00 +0000\r\n"
        "\r\n"
        "Hello, we would like a quote for 25 licences. Please call me.\r\n"
        "\r\nAlice Example\r\nHead of Sales, Acme GmbH\r\n+49 30 1234567\r\n"
    ).encode()
    filler_lines = max(0, (size - len(head)) // 78)
    return head + (b"x" * 76 + b"\r\n") * filler_lines


def _run_bare_server() -> None:
    """Serve SMTP with a handler that discards messages; print the port."""
    from aiosmtpd.smtp import SMTP

    class Discard:
        async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
            self, server: object, session: object, envelope: object
        ) -> str:
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                Discard(),
                data_size_limit=25 * 1024 * 1024,
                enable_SMTPUTF8=True,
                hostname="bench.test",
                ident="bare",
            ),
            host="127.0.0.1",
            port=0,
        )
        print(f"port={server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class _Server:
    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.port = 0
        self._seen = threading.Event()
        self._lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        if not self._seen.wait(60):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self._lines))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
            if self._seen.is_set():
                continue
            # The bare server prints "port=N"; leadparse logs "server running".
            if line.startswith("port=") or "server running" in line:
                match = _PORT_LINE.search(line)
                if match:
                    self.port = int(match.group(1))
                    self._seen.set()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _load(port: int, messages: int, concurrency: int, size: int) -> float:
    import aiosmtplib

    bodies = [_message(index, size) for index in range(messages)]
    per_client = [bodies[client::concurrency] for client in range(concurrency)]

    async def client(batch: list[bytes]) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60) as smtp:
            for body in batch:
                errors, reply = await smtp.sendmail(
                    "alice@example.org", ["sales@leads.test"], body
                )
                if errors or not reply:
                    raise RuntimeError(f"message rejected: {errors} {reply}")

    start = time.perf_counter()
    await asyncio.gather(*(client(batch) for batch in per_client))
    return messages / (time.perf_counter() - start)


def main() -> None:
    """Run the comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--size", type=int, default=2048, help="Bytes per message.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=None, help="leadparse parse processes."
    )
    parser.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        _run_bare_server()
        return

    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADPARSE_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["LEADPARSE_SMTP_ACCEPT"] = "*@leads.test"
    env["LEADPARSE_LOGGING_LEVEL"] = "WARNING"
    rates: dict[str, list[float]] = {"bare": [], "leadparse": []}
    print(
        f"messages={args.messages} concurrency={args.concurrency} "
        f"size={args.size} rounds={args.rounds} cpus={os.cpu_count()}"
    )
    for round_number in range(1, args.rounds + 1):
        bare = _Server([sys.executable, __file__, "--bare-server"], env)
        try:
            rate = asyncio.run(
                _load(bare.port, args.messages, args.concurrency, args.size)
            )
        finally:
            bare.stop()
        rates["bare"].append(rate)
        print(f"round {round_number} bare aiosmtpd: {rate:8.1f} msg/s")

        with tempfile.TemporaryDirectory(prefix="leadparse-bench-") as data_dir:
            command = [
                sys.executable, "-m", "leadparse.server", "serve",
                "--port", "0", "--data-dir", data_dir, "--log-level", "INFO",
            ]  # fmt: skip
            if args.workers is not None:
                command += ["--workers", str(args.workers)]
            server = _Server(command, env)
            try:
                rate = asyncio.run(
                    _load(server.port, args.messages, args.concurrency, args.size)
                )
            finally:
                server.stop()
        rates["leadparse"].append(rate)
        print(f"round {round_number} leadparse:     {rate:8.1f} msg/s")

    bare_median = statistics.median(rates["bare"])
    lead_median = statistics.median(rates["leadparse"])
    print(f"median bare aiosmtpd: {bare_median:.1f} msg/s")
    print(f"median leadparse (stored, fsynced): {lead_median:.1f} msg/s")
    print(f"ratio leadparse / bare: {lead_median / bare_median:.0%}")


if __name__ == "__main__":
    main()
