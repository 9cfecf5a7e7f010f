"""The job queue and the parse workers.

Jobs live in the store, so the queue survives a crash: on start, jobs left
running are returned to pending. A dispatcher task claims pending jobs and
runs each parse in a process pool, so parsing a slow or hostile message
takes CPU time from a worker process, not from the SMTP event loop. The
result, the idempotency ledger update and the job's completion are written in
one transaction, so each message yields exactly one recorded result even when
a parse is repeated after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

from leadparse.server import metrics
from leadparse.server.store import (
    Job,
    NewDelivery,
    Outcome,
    ParseResult,
    Store,
    StoredMessage,
)

__all__ = ["WORKER_ACTOR", "WorkerPool", "default_processes", "parse_message"]

logger = logging.getLogger(__name__)

WORKER_ACTOR = "worker"
"""Actor recorded in the audit log for parses done by the server."""

_WORKER_NICENESS = 10
"""Added to the worker processes' nice value (lower scheduling priority)."""

_parser_cache: dict[str, Callable[..., Any]] = {}
_policy_cache: dict[str, Any] = {}


def _attachment_policy(root: str) -> Any:
    """Return a parse policy that writes attachments to a FileSystemStore at *root*.

    Cached per worker process, so the store folder is created once.
    """
    policy = _policy_cache.get(root)
    if policy is None:
        from leadparse.policy import Policy
        from leadparse.store import FileSystemStore

        policy = Policy(attachment_store=FileSystemStore(root))
        _policy_cache[root] = policy
    return policy


def default_processes() -> int:
    """Return the number of CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _load_parser(path: str) -> Callable[..., Any]:
    parser = _parser_cache.get(path)
    if parser is None:
        module_name, _, attribute = path.partition(":")
        parser = getattr(importlib.import_module(module_name), attribute)
        _parser_cache[path] = parser
    return parser


def _init_worker(parser_path: str) -> None:
    # The parent handles SIGINT and SIGTERM and shuts the pool down. A worker
    # that died on them would turn a clean shutdown into a broken pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Parsing can wait and SMTP replies cannot: on a busy machine the
    # scheduler runs the server process first.
    if hasattr(os, "nice"):
        os.nice(_WORKER_NICENESS)
    _exit_with_parent()
    _load_parser(parser_path)


def _exit_with_parent() -> None:
    """Exit this worker when the server process dies.

    On CPython 3.11, pool workers of a parent killed with SIGKILL wait on
    their task queue forever, because each worker keeps the queue's pipe
    open. The parent's sentinel becomes ready when the parent exits.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parse_message(
    parser_path: str,
    raw: bytes,
    mail_from: str | None,
    rcpt_tos: tuple[str, ...],
    received_at: datetime,
    attachment_root: str | None = None,
) -> ParseResult:
    """Parse one raw message into the :class:`ParseResult` the store records.

    Runs in a worker process and also in the ``reparse`` command.

    Args:
        parser_path: ``module:function`` of a ``parse_lead``-compatible function.
        raw: the stored raw MIME.
        mail_from: envelope sender.
        rcpt_tos: envelope recipients.
        received_at: when the SMTP server accepted the message.
        attachment_root: folder of a :class:`leadparse.store.FileSystemStore`
            that receives the attachments; the parser then gets a ``policy``
            argument with that store.
    """
    from leadparse.pipeline import Envelope

    parser = _load_parser(parser_path)
    extra: dict[str, Any] = {}
    if attachment_root is not None:
        extra["policy"] = _attachment_policy(attachment_root)
    lead = parser(
        raw,
        envelope=Envelope(mail_from=mail_from, rcpt_tos=tuple(rcpt_tos)),
        received_at=received_at,
        **extra,
    )
    return ParseResult(
        payload=lead.model_dump(mode="json"),
        idempotency_key=lead.idempotency_key,
        kind=lead.classification.kind,
        parser_version=lead.provenance.parser_version,
        sender_email=lead.from_.email,
        contact_email=lead.extracted.email,
    )


def describe_error(exc: BaseException) -> str:
    """Return the exception type and message, cut to a length fit for a database."""
    return f"{type(exc).__name__}: {exc}"[:2000]


class WorkerPool:
    """Claims pending jobs from the store and parses them in worker processes.

    Args:
        store: where jobs, messages and results live.
        processes: size of the process pool.
        parser_path: ``module:function`` that parses one message.
        max_attempts: attempts per job before it is marked failed.
        poll_interval: seconds between checks for pending jobs when
            :meth:`notify` is not called.
        io_executor: thread pool for blocking store calls; the loop's default
            executor when ``None``.
        attachment_root: folder where parses store attachments; ``None``
            stores none.
        route_deliveries: returns the webhook deliveries of a new lead; the
            store creates them in the transaction that records the lead.
        on_deliveries: called on the event loop after a lead with
            deliveries is recorded, to wake the delivery worker.
    """

    def __init__(
        self,
        store: Store,
        *,
        processes: int,
        parser_path: str,
        max_attempts: int,
        poll_interval: float = 1.0,
        io_executor: Executor | None = None,
        attachment_root: str | None = None,
        route_deliveries: Callable[[ParseResult], Sequence[NewDelivery]] | None = None,
        on_deliveries: Callable[[], None] | None = None,
    ) -> None:
        self._route_deliveries = route_deliveries
        self._on_deliveries = on_deliveries
        self._attachment_root = attachment_root
        self._store = store
        self._processes = processes
        self._parser_path = parser_path
        self._max_attempts = max_attempts
        self._poll_interval = poll_interval
        self._io_executor = io_executor
        # Two jobs per process keep each process busy while results are written.
        self._capacity = processes * 2
        self._pool: ProcessPoolExecutor | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Requeue interrupted jobs, then start the processes and the dispatcher."""
        requeued = await self._io(self._store.requeue_running)
        if requeued:
            logger.info("returned %d interrupted jobs to the queue", requeued)
        self._pool = self._new_pool()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="dispatcher")
        logger.info("parse workers started: processes=%d", self._processes)

    def notify(self) -> None:
        """Wake the dispatcher because a new job was stored."""
        self._wakeup.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming jobs, wait up to *timeout* seconds for running parses.

        Parses still running after the timeout are abandoned; their jobs stay
        running in the store and return to pending at the next start.
        """
        self._stopping = True
        self._wakeup.set()
        if self._dispatcher is not None:
            await self._dispatcher
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("abandoned %d running parses at shutdown", len(pending))
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        logger.info("parse workers stopped")

    async def _io(self, func: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io_executor, func, *args)

    def _new_pool(self) -> ProcessPoolExecutor:
        # "spawn" because the parent runs threads (executor, SQLite), and
        # forking a process with threads can copy held locks into the child.
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._parser_path,),
        )

    async def _dispatch(self) -> None:
        while not self._stopping:
            # Clear before claiming: a notify() during the claim then stays
            # set, and the wait below returns at once.
            self._wakeup.clear()
            free = self._capacity - len(self._inflight)
            jobs: list[Job] = []
            if free > 0:
                try:
                    jobs = await self._io(self._store.claim_jobs, free)
                except Exception:
                    logger.exception("claiming jobs failed; retrying")
            for job in jobs:
                task = asyncio.create_task(self._run(job))
                self._inflight.add(task)
                task.add_done_callback(self._finished)
            if not jobs:
                await self._wait_for_wakeup(self._poll_interval)

    async def _wait_for_wakeup(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wakeup.set()

    async def _run(self, job: Job) -> None:
        try:
            message: StoredMessage = await self._io(
                self._store.get_message, job.message_id
            )
        except Exception as exc:
            logger.error(
                "parse failed: request_id=%s cannot read message: %s",
                job.request_id,
                type(exc).__name__,
            )
            await self._io(self._fail, job, describe_error(exc), False)
            return

        loop = asyncio.get_running_loop()
        pool = self._pool
        assert pool is not None
        try:
            result: ParseResult = await loop.run_in_executor(
                pool,
                parse_message,
                self._parser_path,
                message.raw,
                message.mail_from,
                message.rcpt_tos,
                message.received_at,
                self._attachment_root,
            )
        except BrokenProcessPool as exc:
            # A worker died (killed, or out of memory on this message). The
            # pool is unusable, so replace it; the attempt still counts, so
            # a message that kills workers every time ends up failed.
            logger.error(
                "parse failed: request_id=%s worker process died; restarting pool",
                job.request_id,
            )
            if self._pool is pool:
                self._replace_pool()
            retry = job.attempts < self._max_attempts
            await self._io(self._fail, job, describe_error(exc), retry)
            return
        except Exception as exc:
            retry = job.attempts < self._max_attempts
            # The exception text may quote the message, so only its type is logged.
            logger.warning(
                "parse failed: request_id=%s attempt=%d error=%s retry=%s",
                job.request_id,
                job.attempts,
                type(exc).__name__,
                retry,
            )
            await self._io(self._fail, job, describe_error(exc), retry)
            return

        try:
            outcome: Outcome = await self._io(self._complete, job, result)
        except Exception as exc:
            # Recording the result failed (the store rejected it). The text of
            # such errors can quote the lead, so only the type is logged, and
            # the job is failed so that it neither hangs nor loops.
            retry = job.attempts < self._max_attempts
            logger.error(
                "storing parse result failed: request_id=%s attempt=%d error=%s",
                job.request_id,
                job.attempts,
                type(exc).__name__,
            )
            await self._io(self._fail, job, type(exc).__name__, retry)
            return
        metrics.PARSES.inc(outcome="success")
        if outcome is Outcome.LEAD and self._on_deliveries is not None:
            self._on_deliveries()
        logger.info(
            "parsed: request_id=%s kind=%s outcome=%s",
            job.request_id,
            result.kind,
            outcome,
        )

    def _complete(self, job: Job, result: ParseResult) -> Outcome:
        deliveries: Sequence[NewDelivery] = ()
        if self._route_deliveries is not None:
            deliveries = self._route_deliveries(result)
        if not deliveries:
            return self._store.complete_job(job.id, result, actor=WORKER_ACTOR)
        return self._store.complete_job(
            job.id, result, actor=WORKER_ACTOR, deliveries=deliveries
        )

    def _fail(self, job: Job, error: str, retry: bool) -> None:
        self._store.fail_job(job.id, error, retry=retry)
        metrics.PARSES.inc(outcome="retry" if retry else "failed")
        if not retry:
            logger.error(
                "parse job failed permanently: request_id=%s attempts=%d; "
                "run 'leadparse reparse --id %s' after fixing the cause",
                job.request_id,
                job.attempts,
                job.request_id,
            )

    def _replace_pool(self) -> None:
        old = self._pool
        self._pool = self._new_pool()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
