"""Helpers that run the receiver on loopback for the server tests."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from leadparse.server.app import run_server
from leadparse.server.config import Settings, load_settings
from leadparse.server.store import SQLiteStore

SRC_DIR = Path(__file__).resolve().parents[2] / "src"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Return settings for a test server on a free loopback port.

    The environment is ignored, so a developer's LEADPARSE_* variables
    cannot change a test.
    """
    values: dict[str, Any] = {
        "smtp.host": "127.0.0.1",
        "smtp.port": 0,
        "smtp.hostname": "mx.test",
        "smtp.accept": ["*@leads.test", "sales@example.test"],
        "storage.data_dir": data_dir,
        "workers.processes": 1,
        "workers.poll_interval": 0.2,
    }
    values.update(overrides)
    return load_settings(env={}, overrides=values)


class RunningServer:
    """The full receiver (store, workers, SMTP) in a thread with its own loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="smtp-test-server")

    def start(self) -> RunningServer:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("test server did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await run_server(
            self.settings,
            stop=self._stop,
            handle_signals=False,
            on_started=self._started,
        )

    def _started(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def stop(self) -> None:
        if (
            self._loop is not None
            and self._stop is not None
            and self._thread.is_alive()
        ):
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self._thread.is_alive():
            raise TimeoutError("test server did not stop within 60 s")
        if self._error is not None:
            raise self._error

    def open_store(self) -> SQLiteStore:
        return SQLiteStore(self.settings.storage.data_dir)


def wait_until_parsed(store: SQLiteStore, count: int, timeout: float = 30.0) -> None:
    """Wait until *count* jobs are done or failed; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = store.stats().jobs_by_state
        if states.get("done", 0) + states.get("failed", 0) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"jobs not finished after {timeout} s: {store.stats()}")


def lead_message(index: int, *, sender: str = "alice@example.org") -> bytes:
    """Return a small lead email with a unique Message-ID."""
    return (
        f"From: Alice Example <{sender}>\r\n"
        "To: sales@leads.test\r\n"
        f"Subject: Quote request {index}\r\n"
        f"Message-ID: <lead-{index}@example.org>\r\n"
        "Date: Tue, 04 Jun 2024 10:00:00 +0000\r\n"
        "\r\n"
        f"Hello, we would like a quote for {index} licences.\r\n"
        "\r\n"
        "Alice Example\r\n"
        "Acme GmbH\r\n"
    ).encode()


def failing_parser(raw: bytes, **_kwargs: Any) -> None:
    """Parser that always fails, with the message text in its error."""
    raise ValueError(f"cannot parse {raw[:20]!r}")
