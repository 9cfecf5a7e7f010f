"""Wiring of the receiver: store, parse workers and SMTP server, start to stop."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from leadparse.server.config import Settings
from leadparse.server.crypto import RawCipher
from leadparse.server.store import SQLiteStore, Store
from leadparse.server.worker import WorkerPool, default_processes

__all__ = ["ROLES", "open_store", "run_server"]

ROLES = ("all", "smtp", "worker", "delivery", "api")
"""Parts ``run_server`` can run: ``all`` runs SMTP and the parse workers
(and delivery and the API when their modules are installed); each other role
runs one part, so parts can run in separate processes or hosts that share
one PostgreSQL database."""

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> Store:
    """Open the configured store with the encryption keys.

    A ``storage.url`` opens PostgreSQL (and applies pending migrations);
    otherwise SQLite in ``storage.data_dir``.
    """
    cipher = None
    if settings.encryption.keys:
        cipher = RawCipher(
            settings.encryption.decoded_keys(), settings.encryption.key_id
        )
    if settings.storage.url is not None:
        # Imported here so SQLite deployments do not need psycopg.
        from leadparse.server.pg_store import PostgresStore

        return PostgresStore(
            settings.storage.url,
            cipher=cipher,
            lease_timeout=settings.workers.lease_timeout,
            pool_size=settings.storage.pool_size,
        )
    return SQLiteStore(
        settings.storage.data_dir,
        cipher=cipher,
        lease_timeout=settings.workers.lease_timeout,
    )


async def run_server(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    on_started: Callable[[int], None] | None = None,
    role: str = "all",
) -> None:
    """Run the receiver until *stop* is set or SIGTERM or SIGINT arrives.

    Shutdown closes the listener, lets sessions in a transaction finish for
    up to ``smtp.drain_timeout`` seconds, waits as long for running parses,
    and closes the store.

    Args:
        settings: the complete configuration.
        stop: an event that ends the run when set; a new one when ``None``.
        handle_signals: install SIGTERM and SIGINT handlers (main thread only).
        on_started: called with the bound port once the server accepts mail,
            or with 0 once the other parts run when *role* runs no SMTP.
        role: one of :data:`ROLES`.

    Raises:
        ValueError: *role* is unknown.
        RuntimeError: *role* needs a module this installation lacks.
    """
    from leadparse.server.smtp import SmtpServer

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of: {', '.join(ROLES)}")
    run_smtp = role in ("all", "smtp")
    run_workers = role in ("all", "worker")
    part = _load_part(role) if role in ("delivery", "api") else None
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
    # --- webhooks ---
    route_deliveries, delivery_worker = _webhook_parts(
        settings, store, io_executor, role
    )
    # --- end webhooks ---
    workers: WorkerPool | None = None
    if run_workers and processes > 0:
        workers = WorkerPool(
            store,
            processes=processes,
            parser_path=settings.workers.parser,
            max_attempts=settings.workers.max_attempts,
            poll_interval=settings.workers.poll_interval,
            io_executor=io_executor,
            attachment_root=_attachment_root(settings),
            route_deliveries=route_deliveries,
            on_deliveries=delivery_worker.notify if delivery_worker else None,
        )
    server: SmtpServer | None = None
    if run_smtp:
        server = SmtpServer(
            settings.smtp,
            store,
            io_executor=io_executor,
            on_stored=_on_stored(workers),
        )
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    listener: Any = None
    part_task: asyncio.Task[None] | None = None
    optional_tasks: list[asyncio.Task[None]] = []
    try:
        if workers is not None:
            await workers.start()
            listener = _listen_for_jobs(store, workers, loop)
        elif run_workers:
            logger.warning("parse workers disabled (workers.processes = 0)")
        if server is not None:
            await server.start()
        if part is not None:
            part_task = asyncio.create_task(part(settings, store, stop), name=role)
        # --- api and acks ---
        if role == "all":
            optional_tasks = _start_api_and_acks(settings, store, stop)
        # --- end api and acks ---
        # --- webhooks ---
        if delivery_worker is not None:
            await delivery_worker.start()
        # --- end webhooks ---
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, _request_stop, stop, signum)
                installed.append(signum)
        port = server.port if server is not None else 0
        logger.info(
            "leadparse server running: role=%s storage=%s port=%d",
            role,
            # The URL may contain a password, so only the backend is logged.
            "postgresql" if settings.storage.url else settings.storage.data_dir,
            port,
        )
        if on_started is not None:
            on_started(port)
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        logger.info("leadparse server stopping")
        if server is not None:
            await server.stop(settings.smtp.drain_timeout)
        if listener is not None:
            await loop.run_in_executor(io_executor, listener.stop)
        if workers is not None:
            await workers.stop(timeout=settings.smtp.drain_timeout)
        if part_task is not None:
            stop.set()
            await part_task
        # --- api and acks ---
        if optional_tasks:
            stop.set()
            await asyncio.gather(*optional_tasks)
        # --- end api and acks ---
        # --- webhooks ---
        if delivery_worker is not None:
            await delivery_worker.stop(timeout=settings.smtp.drain_timeout)
        # --- end webhooks ---
        io_executor.shutdown(wait=True)
        store.close()
        logger.info("leadparse server stopped")


PartRunner = Callable[[Settings, Store, asyncio.Event], Coroutine[Any, Any, None]]
"""``run(settings, store, stop)`` of a part module: runs until *stop* is set."""


def _load_part(role: str) -> PartRunner:
    """Import ``leadparse.server.<role>`` and return its ``run`` coroutine function.

    Raises:
        RuntimeError: the module or its ``run`` function is missing.
    """
    name = f"leadparse.server.{role}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise RuntimeError(
            f"role {role!r} needs the module {name}, which this installation "
            f"of leadparse does not have; run another role or upgrade leadparse"
        ) from None
    runner = getattr(module, "run", None)
    if runner is None or not callable(runner):
        raise RuntimeError(
            f"role {role!r}: {name} has no run(settings, store, stop) function"
        )
    return cast(PartRunner, runner)


def _listen_for_jobs(
    store: Store, workers: WorkerPool, loop: asyncio.AbstractEventLoop
) -> Any:
    """Wake *workers* on PostgreSQL job notifications; return the listener or None.

    SQLite has no notifications across processes, and in one process the
    SMTP server wakes the workers directly.
    """
    listen = getattr(store, "listen_jobs", None)
    if listen is None:
        return None
    return listen(lambda: loop.call_soon_threadsafe(workers.notify))


# --- api and acks ---


def _attachment_root(settings: Settings) -> str | None:
    from leadparse.server.api import attachment_root

    root = attachment_root(settings)
    return str(root) if root is not None else None


def _on_stored(workers: WorkerPool | None) -> Callable[[], None]:
    """Return the SMTP server's callback: count the message, wake the workers."""
    from leadparse.server import metrics

    def stored() -> None:
        metrics.MESSAGES_RECEIVED.inc()
        if workers is not None:
            workers.notify()

    return stored


def _start_api_and_acks(
    settings: Settings, store: Store, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """Start the polling API and outbound acknowledgments, each when configured.

    The API starts when a token is configured (127.0.0.1:8025 by default),
    acknowledgments when ``acks.enabled`` is true; each logs when it is off.
    """
    from leadparse.server import acks, api

    return [
        asyncio.create_task(api.run(settings, store, stop), name="api"),
        asyncio.create_task(acks.run(settings, store, stop), name="acks"),
    ]


# --- end api and acks ---


# --- webhooks ---


def _webhook_parts(
    settings: Settings, store: Store, io_executor: ThreadPoolExecutor, role: str
) -> tuple[Callable[[Any], Any] | None, Any]:
    """Return the delivery router for the parse workers and the delivery worker.

    Both are ``None`` without webhook endpoints. Every role that parses
    creates deliveries; only ``all`` sends them in this process, and
    ``--role delivery`` sends them through :func:`leadparse.server.delivery.run`.
    """
    endpoints = settings.webhooks.resolved_endpoints()
    if not endpoints:
        return None, None
    # Imported here so deployments without webhooks do not load aiohttp.
    from leadparse.server.delivery import DeliveryWorker, Router

    worker = None
    if role == "all":
        worker = DeliveryWorker(
            store,
            endpoints,
            poll_interval=settings.webhooks.poll_interval,
            io_executor=io_executor,
        )
    return Router(endpoints).deliveries_for, worker


# --- end webhooks ---


def _request_stop(stop: asyncio.Event, signum: signal.Signals) -> None:
    logger.info("received %s; shutting down", signum.name)
    stop.set()
