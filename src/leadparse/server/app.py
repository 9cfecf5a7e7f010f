"""Wiring of the receiver: store, parse workers and SMTP server, start to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from leadparse.server.config import Settings
from leadparse.server.crypto import RawCipher
from leadparse.server.store import SQLiteStore
from leadparse.server.worker import WorkerPool, default_processes

__all__ = ["open_store", "run_server"]

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> SQLiteStore:
    """Open the SQLite store in the configured data folder, with encryption keys."""
    cipher = None
    if settings.encryption.keys:
        cipher = RawCipher(
            settings.encryption.decoded_keys(), settings.encryption.key_id
        )
    return SQLiteStore(settings.storage.data_dir, cipher=cipher)


async def run_server(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    on_started: Callable[[int], None] | None = None,
) -> None:
    """Run the receiver until *stop* is set or SIGTERM or SIGINT arrives.

    Shutdown closes the listener, lets sessions in a transaction finish for
    up to ``smtp.drain_timeout`` seconds, waits as long for running parses,
    and closes the store.

    Args:
        settings: the complete configuration.
        stop: an event that ends the run when set; a new one when ``None``.
        handle_signals: install SIGTERM and SIGINT handlers (main thread only).
        on_started: called with the bound port once the server accepts mail.
    """
    from leadparse.server.smtp import SmtpServer

    stop = stop or asyncio.Event()
    store = open_store(settings)
    processes = settings.workers.processes
    if processes is None:
        processes = default_processes()
    # One thread per possible session keeps a slow fsync from queueing
    # sessions behind each other; store calls share commits anyway.
    io_executor = ThreadPoolExecutor(
        max_workers=min(64, settings.smtp.max_connections + 4),
        thread_name_prefix="leadparse-io",
    )
    workers: WorkerPool | None = None
    if processes > 0:
        workers = WorkerPool(
            store,
            processes=processes,
            parser_path=settings.workers.parser,
            max_attempts=settings.workers.max_attempts,
            poll_interval=settings.workers.poll_interval,
            io_executor=io_executor,
        )
    server = SmtpServer(
        settings.smtp,
        store,
        io_executor=io_executor,
        on_stored=workers.notify if workers is not None else None,
    )
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        if workers is not None:
            await workers.start()
        else:
            logger.warning("parse workers disabled (workers.processes = 0)")
        await server.start()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, _request_stop, stop, signum)
                installed.append(signum)
        logger.info(
            "leadparse server running: data_dir=%s port=%d",
            settings.storage.data_dir,
            server.port,
        )
        if on_started is not None:
            on_started(server.port)
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        logger.info("leadparse server stopping")
        await server.stop(settings.smtp.drain_timeout)
        if workers is not None:
            await workers.stop(timeout=settings.smtp.drain_timeout)
        io_executor.shutdown(wait=True)
        store.close()
        logger.info("leadparse server stopped")


def _request_stop(stop: asyncio.Event, signum: signal.Signals) -> None:
    logger.info("received %s; shutting down", signum.name)
    stop.set()
