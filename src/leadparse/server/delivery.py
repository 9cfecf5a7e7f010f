"""Webhook delivery: signed POSTs of new leads to the configured endpoints.

Deliveries live in the store, one row per lead and endpoint, created in the
transaction that records the lead. :class:`DeliveryWorker` claims due rows,
POSTs the stored lead JSON with Standard Webhooks headers
(:mod:`leadparse.webhooks`), and records every attempt. A failed attempt is
retried after the next step of the endpoint's schedule, and after the last
step the delivery is dead until ``leadparse dlq replay``. An endpoint that
returns 410 Gone is disabled until ``leadparse dlq enable``.

The worker takes an injectable clock and sleep function, so tests run the
whole retry schedule in simulated time against a real HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from leadparse._version import __version__
from leadparse.server import metrics
from leadparse.server.config import Settings, WebhookEndpoint, is_loopback_host
from leadparse.server.store import (
    Delivery,
    DeliveryState,
    NewDelivery,
    ParseResult,
    Store,
    public_lead_id,
)
from leadparse.webhooks import batch_webhook_id, sign

__all__ = [
    "USER_AGENT",
    "DeliveryWorker",
    "RetryPolicy",
    "Router",
    "TargetRejectedError",
    "check_address",
    "parse_retry_after",
    "run",
]

logger = logging.getLogger(__name__)

USER_AGENT = f"leadparse-webhooks/{__version__}"

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

_LEASE_MARGIN = 60.0
"""Seconds added to an endpoint's timeout for the claim lease, so a slow but
live request is not claimed again by another process."""


def utc_now() -> datetime:
    """Return the current time in UTC (the default clock)."""
    return datetime.now(UTC)


# -- routing --------------------------------------------------------------------


class Router:
    """Choose the endpoints of a new lead from their routes and kinds."""

    def __init__(self, endpoints: Sequence[WebhookEndpoint]) -> None:
        self._endpoints = tuple(endpoints)

    def deliveries_for(self, result: ParseResult) -> list[NewDelivery]:
        """Return one delivery per endpoint with a route that matches the lead."""
        payload = result.payload
        channel = payload.get("channel") or {}
        address = (channel.get("source_address") or "").casefold()
        campaign = channel.get("campaign")
        thread_key = (payload.get("threading") or {}).get("thread_id")
        webhook_id = public_lead_id(result.idempotency_key)
        deliveries = []
        for endpoint in self._endpoints:
            for route in endpoint.routes:
                kinds = route.kinds if route.kinds is not None else endpoint.kinds
                if result.kind not in kinds:
                    continue
                if not route.addresses and not route.campaigns:
                    matched = True
                else:
                    matched = campaign is not None and campaign in route.campaigns
                    matched = matched or any(
                        fnmatchcase(address, pattern.casefold())
                        for pattern in route.addresses
                    )
                if matched:
                    deliveries.append(
                        NewDelivery(endpoint.name, webhook_id, thread_key)
                    )
                    break
        return deliveries


# -- retry schedule -------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between attempts: the schedule, jitter and the Retry-After cap."""

    schedule: tuple[float, ...]
    jitter: float = 0.0
    max_retry_after: float = 3600.0
    random_fraction: Callable[[], float] = field(default=random.random, compare=False)
    """Returns a float in [0, 1) for the jitter."""

    @classmethod
    def for_endpoint(
        cls,
        endpoint: WebhookEndpoint,
        random_fraction: Callable[[], float] | None = None,
    ) -> RetryPolicy:
        """Return the policy configured for *endpoint*."""
        return cls(
            endpoint.schedule,
            endpoint.jitter,
            endpoint.max_retry_after,
            random_fraction or random.random,
        )

    @property
    def max_attempts(self) -> int:
        """Attempts before a delivery is dead: the first and one per step."""
        return len(self.schedule) + 1

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Return seconds to wait after failed *attempt* (1-based); None when dead.

        The schedule step is scaled by a random factor in
        ``[1 - jitter, 1 + jitter]`` so that retries of many deliveries
        spread out. A Retry-After, capped at ``max_retry_after``, lengthens
        the wait but never shortens it.
        """
        if attempt > len(self.schedule):
            return None
        base = self.schedule[attempt - 1]
        if self.jitter:
            base *= 1 + self.jitter * (2 * self.random_fraction() - 1)
        if retry_after is not None:
            base = max(base, min(retry_after, self.max_retry_after))
        return base


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Return the seconds a Retry-After header requests, or None when invalid.

    RFC 9110 section 10.2.3 allows a number of seconds or an HTTP date;
    a date in the past means zero.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


# -- SSRF protection ------------------------------------------------------------


class TargetRejectedError(Exception):
    """The endpoint's host resolves to an address that deliveries may not reach."""


_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# RFC 6598 shared address space (carrier-grade NAT); Python 3.11 calls it
# neither private nor global.
_SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")


def address_category(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> str | None:
    """Return why *address* is not a public unicast address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address in _METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified or address.is_reserved:
        return "reserved"
    if address.is_private or address in _SHARED_SPACE:
        # Also covers special ranges Python lists as private, such as
        # documentation (192.0.2.0/24) and benchmarking (198.18.0.0/15).
        return "private"
    if not address.is_global:
        return "reserved"
    return None


def check_address(address: str, endpoint: WebhookEndpoint) -> None:
    """Raise :class:`TargetRejectedError` unless *endpoint* may connect to *address*.

    Public unicast addresses pass. Loopback passes with
    ``allow_http_loopback``, private ranges with ``allow_private``, and any
    address inside ``allow_networks``. Metadata, link-local, multicast and
    reserved addresses pass only through ``allow_networks``.
    """
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        parsed = parsed.ipv4_mapped
    category = address_category(parsed)
    if category is None:
        return
    if any(parsed in network for network in endpoint.allow_networks):
        return
    if category == "loopback" and endpoint.allow_http_loopback:
        return
    if category == "private" and endpoint.allow_private:
        return
    raise TargetRejectedError(
        f"endpoint {endpoint.name!r} resolves to {category} address {parsed}; "
        "deliveries to it are rejected (see allow_private, allow_http_loopback "
        "and allow_networks)"
    )


def check_scheme(endpoint: WebhookEndpoint) -> str:
    """Return the endpoint's host after checking its scheme; raise when refused."""
    parts = urlsplit(endpoint.url)
    host = parts.hostname or ""
    if parts.scheme == "https":
        return host
    loopback = endpoint.allow_http_loopback and is_loopback_host(host)
    if parts.scheme == "http" and loopback:
        return host
    raise TargetRejectedError(
        f"endpoint {endpoint.name!r}: only https:// is allowed (plain http "
        "only to loopback with allow_http_loopback)"
    )


class _CheckedResolver(AbstractResolver):
    """Resolve host names and reject the result when any address is forbidden.

    The check runs on the addresses the connection then uses, so a DNS answer
    that changes between a check and the connection (DNS rebinding) cannot
    bypass it. Every address must pass, because the connector may try any.
    """

    def __init__(self, endpoint: WebhookEndpoint) -> None:
        self._endpoint = endpoint
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            check_address(result["host"], self._endpoint)
        return results

    async def close(self) -> None:
        await self._inner.close()


# -- rate limit -----------------------------------------------------------------


class _RateLimiter:
    """Space request starts at least ``1 / rate`` seconds apart (0: no limit)."""

    def __init__(self, rate: float, clock: Clock, sleep: Sleep) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: datetime | None = None

    async def acquire(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        slot = now if self._next is None or self._next <= now else self._next
        self._next = slot + timedelta(seconds=self._interval)
        wait = (slot - now).total_seconds()
        if wait > 0:
            await self._sleep(wait)


# -- the worker -----------------------------------------------------------------


@dataclass
class _Attempt:
    """Outcome of one HTTP attempt."""

    status: int | None = None
    error: str | None = None
    retry_after: str | None = None
    duration_ms: int = 0


@dataclass
class _EndpointRuntime:
    endpoint: WebhookEndpoint
    policy: RetryPolicy
    limiter: _RateLimiter
    session: aiohttp.ClientSession | None = None
    requests: int = 0
    """Requests in flight, waiting for the rate limit included."""

    @property
    def free(self) -> int:
        return self.endpoint.concurrency - self.requests

    @property
    def lease_seconds(self) -> float:
        # A claimed request may first wait its turn at the rate limit.
        waiting = 0.0
        if self.endpoint.rate_limit > 0:
            waiting = self.endpoint.concurrency / self.endpoint.rate_limit
        return self.endpoint.timeout + waiting + _LEASE_MARGIN


class DeliveryWorker:
    """Send due deliveries to their endpoints until stopped.

    Args:
        store: where deliveries and leads live.
        endpoints: the resolved endpoints; deliveries of other endpoint names
            stay in the store untouched.
        clock: returns the current time; tests pass a simulated clock.
        sleep: waits a number of seconds; tests pass one that advances the
            simulated clock.
        random_fraction: returns a float in [0, 1) for the jitter.
        poll_interval: seconds between checks when nothing is due, so that
            changes by other processes (replay, enable) are noticed.
        io_executor: thread pool for blocking store calls; the loop's default
            executor when ``None``.
    """

    def __init__(
        self,
        store: Store,
        endpoints: Sequence[WebhookEndpoint],
        *,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        random_fraction: Callable[[], float] = random.random,
        poll_interval: float = 1.0,
        io_executor: Executor | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._io_executor = io_executor
        self._runtimes = {
            endpoint.name: _EndpointRuntime(
                endpoint,
                RetryPolicy.for_endpoint(endpoint, random_fraction),
                _RateLimiter(endpoint.rate_limit, clock, sleep),
            )
            for endpoint in endpoints
        }
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_ids: set[int] = set()

    async def start(self) -> None:
        """Open one HTTP session per endpoint and start the dispatcher."""
        for runtime in self._runtimes.values():
            runtime.session = self._new_session(runtime.endpoint)
        self._dispatcher = asyncio.create_task(
            self._dispatch(), name="webhook-dispatcher"
        )
        logger.info("webhook delivery started: endpoints=%s", ",".join(self._runtimes))

    def notify(self) -> None:
        """Wake the dispatcher because new deliveries were stored."""
        self._wakeup.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming, wait up to *timeout* seconds for requests in flight.

        Requests still running after the timeout are cancelled. Their
        deliveries stay claimed until the lease expires, and then the next
        worker sends them again with the same webhook id.
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
                await asyncio.wait(pending)
                logger.warning(
                    "cancelled %d webhook requests at shutdown", len(pending)
                )
        for runtime in self._runtimes.values():
            if runtime.session is not None:
                await runtime.session.close()
        logger.info("webhook delivery stopped")

    def _new_session(self, endpoint: WebhookEndpoint) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=_CheckedResolver(endpoint),
            limit=endpoint.concurrency,
            use_dns_cache=False,
        )
        # trust_env=False: proxy variables must not route requests past the
        # address checks.
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=endpoint.timeout),
        )

    async def _io(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._io_executor, lambda: func(*args, **kwargs)
        )

    # -- dispatching ------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._stopping:
            # Cleared before claiming: a notify() during the claim stays set.
            self._wakeup.clear()
            try:
                started = await self._start_due()
            except Exception:
                logger.exception("claiming webhook deliveries failed; retrying")
                started = 0
            if not started:
                await self._idle()

    async def _start_due(self) -> int:
        now = self._clock()
        started = 0
        for runtime in self._runtimes.values():
            if runtime.free <= 0:
                continue
            batch_size = runtime.endpoint.batch_size
            claimed: list[Delivery] = await self._io(
                self._store.claim_deliveries,
                runtime.endpoint.name,
                now=now,
                limit=runtime.free * batch_size,
                lease_seconds=runtime.lease_seconds,
                exclude=sorted(self._inflight_ids),
            )
            for start in range(0, len(claimed), batch_size):
                self._start_request(runtime, claimed[start : start + batch_size])
                started += 1
        return started

    def _start_request(self, runtime: _EndpointRuntime, batch: list[Delivery]) -> None:
        runtime.requests += 1
        self._inflight_ids.update(delivery.id for delivery in batch)
        task = asyncio.create_task(self._deliver(runtime, batch))
        self._inflight.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            runtime.requests -= 1
            self._inflight_ids.difference_update(delivery.id for delivery in batch)
            self._inflight.discard(task)
            self._wakeup.set()

        task.add_done_callback(finished)

    async def _idle(self) -> None:
        """Wait for a wakeup, the next due delivery, or the poll interval."""
        free = [name for name, runtime in self._runtimes.items() if runtime.free > 0]
        due = await self._io(self._store.next_delivery_due, free) if free else None
        if due is None and self._inflight:
            # A request in flight wakes the dispatcher when it ends; sleeping
            # meanwhile would move a simulated clock past the request.
            await self._wakeup.wait()
            return
        timeout = self._poll_interval
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self._clock()).total_seconds()))
        sleeper = asyncio.ensure_future(self._sleep(timeout))
        waiter = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- one request ------------------------------------------------------------

    async def _deliver(self, runtime: _EndpointRuntime, batch: list[Delivery]) -> None:
        try:
            await runtime.limiter.acquire()
            attempt = await self._post(runtime, batch)
            await self._io(self._record, runtime, batch, attempt)
        except Exception:
            # The deliveries stay claimed and are sent again after the lease.
            logger.exception(
                "webhook delivery failed unexpectedly: endpoint=%s delivery_ids=%s",
                runtime.endpoint.name,
                ",".join(str(delivery.id) for delivery in batch),
            )

    async def _post(self, runtime: _EndpointRuntime, batch: list[Delivery]) -> _Attempt:
        endpoint = runtime.endpoint
        body, webhook_id = _request_body(batch)
        headers = sign(endpoint.secret_values(), webhook_id, self._clock(), body)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = USER_AGENT
        headers["X-Leadparse-Request-Id"] = ",".join(
            delivery.request_id for delivery in batch
        )
        attempt = _Attempt()
        started = time.monotonic()
        try:
            host = check_scheme(endpoint)
            if _is_ip_literal(host):
                # aiohttp connects to IP literals without calling the resolver.
                check_address(host.strip("[]"), endpoint)
            assert runtime.session is not None
            # Redirects are not followed: the target could be an internal host.
            async with runtime.session.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                attempt.status = response.status
                attempt.retry_after = response.headers.get("Retry-After")
        except TargetRejectedError as exc:
            attempt.error = str(exc)
        except TimeoutError:
            attempt.error = f"timed out after {endpoint.timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            attempt.error = f"connection failed: {exc.os_error.strerror or 'error'}"
        except aiohttp.ClientError as exc:
            # Only the type: some messages quote the URL, which may hold a token.
            attempt.error = f"request failed: {type(exc).__name__}"
        attempt.duration_ms = round((time.monotonic() - started) * 1000)
        return attempt

    def _record(
        self, runtime: _EndpointRuntime, batch: list[Delivery], attempt: _Attempt
    ) -> None:
        endpoint = runtime.endpoint
        now = self._clock()
        status = attempt.status
        error = attempt.error
        if status is not None and error is None and not 200 <= status < 300:
            error = f"HTTP {status}"
        ids = [delivery.id for delivery in batch]
        delivered = status is not None and 200 <= status < 300
        metrics.WEBHOOK_DELIVERY_SECONDS.observe(
            attempt.duration_ms / 1000,
            outcome="delivered" if delivered else "failed",
        )
        if delivered:
            self._store.record_attempt(
                ids,
                at=now,
                state=DeliveryState.DELIVERED,
                status=status,
                duration_ms=attempt.duration_ms,
            )
            for delivery in batch:
                logger.info(
                    "webhook delivered: delivery_id=%d webhook_id=%s endpoint=%s "
                    "attempt=%d status=%d",
                    delivery.id,
                    delivery.webhook_id,
                    endpoint.name,
                    delivery.attempts + 1,
                    status,
                )
            return
        if status == 410:
            # RFC 9110 section 15.5.11: the target is gone for good, so no
            # delivery is sent there until an operator enables it again.
            self._store.disable_endpoint(endpoint.name, reason="HTTP 410 Gone", at=now)
            self._store.record_attempt(
                ids,
                at=now,
                state=DeliveryState.PENDING,
                status=status,
                error=error,
                duration_ms=attempt.duration_ms,
                next_attempt_at=now,
            )
            logger.error(
                "webhook endpoint disabled: endpoint=%s status=410 delivery_ids=%s; "
                "run 'leadparse dlq enable %s' once it accepts requests again",
                endpoint.name,
                ",".join(map(str, ids)),
                endpoint.name,
            )
            return
        retry_after = parse_retry_after(attempt.retry_after, now)
        for delivery in batch:
            number = delivery.attempts + 1
            delay = runtime.policy.delay(number, retry_after)
            if delay is None:
                self._store.record_attempt(
                    [delivery.id],
                    at=now,
                    state=DeliveryState.DEAD,
                    status=status,
                    error=error,
                    duration_ms=attempt.duration_ms,
                )
                metrics.WEBHOOK_DEAD_LETTERS.inc()
                logger.error(
                    "webhook dead-lettered: delivery_id=%d webhook_id=%s "
                    "endpoint=%s attempts=%d status=%s error=%s; replay with "
                    "'leadparse dlq replay %d'",
                    delivery.id,
                    delivery.webhook_id,
                    endpoint.name,
                    number,
                    status,
                    error,
                    delivery.id,
                )
                continue
            self._store.record_attempt(
                [delivery.id],
                at=now,
                state=DeliveryState.PENDING,
                status=status,
                error=error,
                duration_ms=attempt.duration_ms,
                next_attempt_at=now + timedelta(seconds=delay),
            )
            metrics.WEBHOOK_RETRIES.inc()
            logger.warning(
                "webhook retry: delivery_id=%d webhook_id=%s endpoint=%s attempt=%d "
                "status=%s error=%s next_in=%.1fs",
                delivery.id,
                delivery.webhook_id,
                endpoint.name,
                number,
                status,
                error,
                delay,
            )


def _request_body(batch: Sequence[Delivery]) -> tuple[bytes, str]:
    """Return the body and webhook id of a request for one delivery or a batch.

    One delivery sends the stored lead JSON as is. A batch sends a JSON array
    of ``{"webhook_id", "request_id", "lead"}`` objects, signed once, under
    the id :func:`leadparse.webhooks.batch_webhook_id` of its member ids.
    """
    if len(batch) == 1:
        return batch[0].payload, batch[0].webhook_id
    members = [
        b'{"webhook_id":'
        + json.dumps(delivery.webhook_id).encode()
        + b',"request_id":'
        + json.dumps(delivery.request_id).encode()
        + b',"lead":'
        + delivery.payload
        + b"}"
        for delivery in batch
    ]
    body = b"[" + b",".join(members) + b"]"
    return body, batch_webhook_id(delivery.webhook_id for delivery in batch)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


async def run(settings: Settings, store: Store, stop: asyncio.Event) -> None:
    """Run webhook delivery alone until *stop* is set (``serve --role delivery``).

    New deliveries are found by polling every ``webhooks.poll_interval``
    seconds, since the parse workers run in another process.
    """
    endpoints = settings.webhooks.resolved_endpoints()
    if not endpoints:
        logger.warning("no webhook endpoints configured; delivery role idles")
        await stop.wait()
        return
    worker = DeliveryWorker(
        store, endpoints, poll_interval=settings.webhooks.poll_interval
    )
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop(timeout=settings.smtp.drain_timeout)
