"""Durability: a server killed with SIGKILL keeps every message it replied 250 to."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from server_support import SRC_DIR, lead_message

from leadparse.server.store import SQLiteStore

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the crash test sends SIGKILL"
)

_PORT_LINE = re.compile(r"leadparse server running: .* port=(\d+)")


class ServerProcess:
    """``python -m leadparse.server serve`` in a subprocess, with its log lines."""

    def __init__(self, data_dir: Path) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("LEADPARSE_")
        }
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC_DIR), *filter(None, [env.get("PYTHONPATH")])]
        )
        env["LEADPARSE_SMTP_ACCEPT"] = "*@leads.test"
        env["LEADPARSE_WORKERS_POLL_INTERVAL"] = "0.2"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leadparse.server",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                "--workers",
                "1",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._port: int | None = None
        self._port_seen = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            match = _PORT_LINE.search(line)
            if match:
                self._port = int(match.group(1))
                self._port_seen.set()

    def wait_port(self, timeout: float = 30.0) -> int:
        if not self._port_seen.wait(timeout) or self._port is None:
            raise TimeoutError("server did not start:\n" + "".join(self.lines))
        return self._port

    def close(self) -> None:
        """Wait for the process to exit, then close its stderr pipe."""
        self.process.wait(30)
        self._reader.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def children(self) -> list[int]:
        """Return pids whose parent is the server, read from /proc."""
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


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _reap(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait for orphaned worker processes to exit; kill and return any that remain."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    remaining = [pid for pid in pids if _alive(pid)]
    for pid in remaining:
        os.kill(pid, signal.SIGKILL)
    return remaining


def _send_until_stopped(
    port: int, sender: int, acked: list[str], stop: threading.Event
) -> None:
    """Send messages on one session until *stop* is set or the server dies."""
    index = sender * 100_000
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            while not stop.is_set():
                client.mail("alice@example.org")
                client.rcpt("sales@leads.test")
                code, reply = client.data(lead_message(index))
                if code == 250:
                    acked.append(reply.decode().rsplit(" ", 1)[-1])
                index += 1
    except (smtplib.SMTPException, OSError):
        # The server was killed mid-stream; the last message got no 250.
        pass


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc for child pids")
def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = ServerProcess(data_dir)
    port = first.wait_port()
    acked: list[str] = []
    stop = threading.Event()
    senders = [
        threading.Thread(target=_send_until_stopped, args=(port, sender, acked, stop))
        for sender in range(3)
    ]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 30
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    orphans = first.children()
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    stop.set()
    for sender in senders:
        sender.join(15)
    # Worker processes exit when their parent dies. They also have the
    # stderr pipe open, so it reaches end of file only after they are gone.
    assert _reap(orphans) == []
    first.close()
    assert len(acked) >= 60, "".join(first.lines)

    second = ServerProcess(data_dir)
    second.wait_port()
    store = SQLiteStore(data_dir)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            states = store.stats().jobs_by_state
            if set(states) == {"done"}:
                break
            time.sleep(0.1)
        stored = {store.get_message(mid).request_id for mid in store.message_ids()}
        assert set(acked) <= stored
        stats = store.stats()
        assert stats.jobs_by_state == {"done": stats.messages}
        assert stats.leads_by_kind == {"lead": stats.messages}
        parses = [entry.request_id for entry in store.audit_entries(action="parse")]
        assert sorted(parses) == sorted(stored)
    finally:
        store.close()
        orphans = second.children()
        second.process.send_signal(signal.SIGTERM)
        second.process.wait(30)
        assert _reap(orphans) == []
        second.close()
    assert second.process.returncode == 0
    log = "".join(second.lines)
    assert "leadparse server stopped" in log
