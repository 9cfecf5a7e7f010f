"""Webhook delivery against a real aiohttp receiver on 127.0.0.1.

Time is simulated: the worker gets a clock and a sleep function that moves
the clock, so a retry schedule of days runs in milliseconds and the tests
assert the exact attempt times.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp import web
from click.testing import CliRunner
from server_support import RunningServer, lead_message

from leadparse.server.config import (
    DEFAULT_WEBHOOK_SCHEDULE,
    ConfigError,
    WebhookEndpoint,
    load_settings,
)
from leadparse.server.delivery import (
    DeliveryWorker,
    RetryPolicy,
    Router,
    TargetRejectedError,
    _RateLimiter,
    check_address,
    parse_retry_after,
)
from leadparse.server.store import (
    DeliveryState,
    IncomingMessage,
    NewDelivery,
    ParseResult,
    SQLiteStore,
    public_lead_id,
)
from leadparse.webhooks import WebhookVerificationError, batch_webhook_id, verify

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
T0 = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)
WAIT_SECONDS = 10.0


# -- simulated time -------------------------------------------------------------


class FakeClock:
    """A clock that only moves when the worker sleeps."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.workers: list[DeliveryWorker] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
        # A little real time, so an idle dispatcher does not spin the CPU.
        await asyncio.sleep(0.002)


# -- the receiving application ----------------------------------------------------


@dataclass
class Step:
    """The response the receiver returns to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    process: bool = False
    """Process the lead before returning an error, as when a response is lost."""


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    at: datetime | None


class Consumer:
    """A receiving application: verifies signatures, deduplicates on webhook-id."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock
        self.script: list[Step] = []
        self.requests: list[Received] = []
        self.rejected: list[str] = []
        self.processed: dict[str, int] = {}
        self.duplicates = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = self.clock() if self.clock is not None else None
        try:
            webhook_id = verify(request.headers, body, [SECRET], now=now)
        except WebhookVerificationError as exc:
            self.rejected.append(exc.reason)
            return web.Response(status=401)
        self.requests.append(Received(webhook_id, dict(request.headers), body, now))
        step = self.script.pop(0) if self.script else Step()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if step.delay:
                await asyncio.sleep(step.delay)
        finally:
            self.in_flight -= 1
        if step.process or 200 <= step.status < 300:
            if webhook_id in self.processed:
                self.duplicates += 1
            else:
                self.processed[webhook_id] = len(self.processed) + 1
        return web.Response(status=step.status, headers=step.headers)

    def ids(self) -> list[str]:
        return [received.webhook_id for received in self.requests]


# -- store and endpoint helpers -----------------------------------------------------


def _endpoints(url: str, **options: Any) -> tuple[WebhookEndpoint, ...]:
    values: dict[str, Any] = {
        "webhooks.url": url,
        "webhooks.secrets": [SECRET],
        "webhooks.allow_http_loopback": True,
        "webhooks.schedule": [5, 30, 120],
        "webhooks.jitter": 0,
        "webhooks.rate_limit": 0,
        "webhooks.timeout": 2,
    }
    values.update({f"webhooks.{key}": value for key, value in options.items()})
    return load_settings(env={}, overrides=values).webhooks.resolved_endpoints()


def _result(
    index: int,
    *,
    thread: str | None = None,
    kind: str = "lead",
    source: str = "sales@leads.test",
    campaign: str | None = None,
) -> ParseResult:
    key = hashlib.sha256(f"lead-{index}".encode()).hexdigest()
    payload = {
        "subject": f"Quote request {index}",
        "threading": {"thread_id": thread},
        "channel": {"source_address": source, "campaign": campaign},
        "classification": {"kind": kind},
        "idempotency_key": key,
    }
    return ParseResult(
        payload=payload, idempotency_key=key, kind=kind, parser_version="test"
    )


def _add_lead(
    store: SQLiteStore,
    endpoints: tuple[WebhookEndpoint, ...],
    index: int,
    **options: Any,
) -> int:
    """Store one parsed lead and its deliveries due at T0; return the message id."""
    message_id = store.put_message(
        IncomingMessage(
            request_id=f"req-{index}",
            received_at=T0,
            mail_from="alice@example.org",
            rcpt_tos=("sales@leads.test",),
            raw=lead_message(index),
        )
    )
    [job] = store.claim_jobs(1)
    result = _result(index, **options)
    store.complete_job(job.id, result, actor="test")
    store.create_deliveries(message_id, Router(endpoints).deliveries_for(result), at=T0)
    return message_id


def _webhook_id(index: int) -> str:
    return public_lead_id(_result(index).idempotency_key)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {WAIT_SECONDS} s")
        await asyncio.sleep(0.005)


def _states(store: SQLiteStore) -> list[str]:
    return [record.state for record in store.list_deliveries()]


def _attempt_offsets(store: SQLiteStore, delivery_id: int) -> list[float]:
    return [
        (attempt.at - T0).total_seconds()
        for attempt in store.delivery_attempts(delivery_id)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path)
    yield opened
    opened.close()


def _run(scenario: Callable[[Consumer, str, FakeClock], Any]) -> None:
    """Run *scenario(consumer, url, clock)* with a started receiver."""

    async def main() -> None:
        clock = FakeClock()
        consumer = Consumer(clock)
        url = await consumer.start()
        try:
            await asyncio.wait_for(scenario(consumer, url, clock), 20)
        finally:
            # Stopping twice is harmless; this closes the HTTP sessions of a
            # scenario that failed before its own stop().
            for worker in clock.workers:
                await worker.stop(5)
            await consumer.stop()

    asyncio.run(main())


def _worker(
    store: SQLiteStore, endpoints: tuple[WebhookEndpoint, ...], clock: FakeClock
) -> DeliveryWorker:
    worker = DeliveryWorker(
        store, endpoints, clock=clock, sleep=clock.sleep, poll_interval=3600.0
    )
    clock.workers.append(worker)
    return worker


# -- retries, schedule and dead letters ---------------------------------------------


def test_delivery_signed_headers_and_body(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url)
        message_id = _add_lead(store, endpoints, 1)
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["delivered"], "delivery")
        await worker.stop(5)

        [received] = consumer.requests
        lead = store.get_lead(_webhook_id(1))
        assert lead is not None
        assert lead.message_id == message_id
        assert received.webhook_id == _webhook_id(1)
        assert json.loads(received.body) == lead.payload
        assert received.headers["webhook-timestamp"] == str(int(T0.timestamp()))
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["User-Agent"].startswith("leadparse-webhooks/")
        assert received.headers["X-Leadparse-Request-Id"] == "req-1"
        assert consumer.rejected == []

    _run(scenario)


def test_retry_schedule_exact_times(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, schedule=[5, 30, 120, 600])
        _add_lead(store, endpoints, 1)
        consumer.script = [Step(500), Step(502), Step(429)]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["delivered"], "delivery")
        await worker.stop(5)

        [record] = store.list_deliveries()
        assert _attempt_offsets(store, record.id) == [0, 5, 35, 155]
        assert [a.status for a in store.delivery_attempts(record.id)] == [
            500,
            502,
            429,
            200,
        ]
        assert record.attempts == 4
        assert record.delivered_at == T0 + timedelta(seconds=155)
        assert consumer.ids() == [_webhook_id(1)] * 4
        assert consumer.processed == {_webhook_id(1): 1}

    _run(scenario)


def test_dead_letter_then_replay_same_id(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leadparse.server.delivery")
    from leadparse.server import metrics

    retries_before = metrics.WEBHOOK_RETRIES.value()
    dead_before = metrics.WEBHOOK_DEAD_LETTERS.value()
    failed_before = metrics.WEBHOOK_DELIVERY_SECONDS.count(outcome="failed")
    delivered_before = metrics.WEBHOOK_DELIVERY_SECONDS.count(outcome="delivered")

    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, schedule=[5, 30])
        _add_lead(store, endpoints, 1)
        consumer.script = [Step(500), Step(503), Step(500)]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["dead"], "dead letter")

        [dead] = store.dead_letters()
        assert dead.attempts == 3
        assert dead.last_status == 500
        assert dead.last_error == "HTTP 500"
        assert _attempt_offsets(store, dead.id) == [0, 5, 35]
        # The lead stays readable while its delivery is dead.
        assert [lead["subject"] for lead in store.iter_leads()] == ["Quote request 1"]
        assert store.get_lead(dead.webhook_id) is not None

        replayed = store.replay_deliveries([dead.id], at=clock(), actor="test")
        assert replayed == [dead.id]
        [pending] = store.list_deliveries()
        assert pending.state == "pending"
        assert pending.attempts == 0
        assert pending.webhook_id == dead.webhook_id
        worker.notify()
        await _until(lambda: _states(store) == ["delivered"], "replayed delivery")
        await worker.stop(5)

        assert consumer.ids() == [_webhook_id(1)] * 4
        assert len(store.delivery_attempts(dead.id)) == 4
        assert store.dead_letters() == []

    _run(scenario)

    assert metrics.WEBHOOK_RETRIES.value() - retries_before == 2
    assert metrics.WEBHOOK_DEAD_LETTERS.value() - dead_before == 1
    assert metrics.WEBHOOK_DELIVERY_SECONDS.count(outcome="failed") - failed_before == 3
    assert (
        metrics.WEBHOOK_DELIVERY_SECONDS.count(outcome="delivered") - delivered_before
        == 1
    )
    messages = [record.getMessage() for record in caplog.records]
    retries = [m for m in messages if m.startswith("webhook retry:")]
    assert len(retries) == 2
    assert f"webhook_id={_webhook_id(1)}" in retries[0]
    assert "attempt=1 status=500" in retries[0]
    assert sum(m.startswith("webhook dead-lettered:") for m in messages) == 1
    assert sum(m.startswith("webhook delivered:") for m in messages) == 1
    assert any(m.startswith("webhook delivery started") for m in messages)
    assert any(m.startswith("webhook delivery stopped") for m in messages)
    log_text = caplog.text
    assert SECRET not in log_text
    assert SECRET.removeprefix("whsec_") not in log_text
    assert "Quote request" not in log_text
    assert "alice@example.org" not in log_text


def test_default_schedule_spans_a_day(store: SQLiteStore) -> None:
    total = sum(DEFAULT_WEBHOOK_SCHEDULE)
    assert total == 168155
    # Even with every wait shortened by the full default jitter of 20 %.
    assert total * 0.8 > 24 * 3600

    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, schedule=list(DEFAULT_WEBHOOK_SCHEDULE))
        _add_lead(store, endpoints, 1)
        consumer.script = [Step(500)] * 20
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["dead"], "dead letter")
        await worker.stop(5)

        [dead] = store.dead_letters()
        offsets = _attempt_offsets(store, dead.id)
        expected = [0.0]
        for step in DEFAULT_WEBHOOK_SCHEDULE:
            expected.append(expected[-1] + step)
        assert offsets == expected
        assert len(offsets) == 11
        assert offsets[-1] - offsets[0] >= 24 * 3600

    _run(scenario)


def test_timeout_counts_as_failed_attempt(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, timeout=0.3)
        _add_lead(store, endpoints, 1)
        consumer.script = [Step(200, delay=1.0)]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["delivered"], "delivery")
        await worker.stop(5)

        [record] = store.list_deliveries()
        first, second = store.delivery_attempts(record.id)
        assert first.status is None
        assert first.error == "timed out after 0.3 s"
        assert second.status == 200
        assert _attempt_offsets(store, record.id) == [0, 5]

    _run(scenario)


def test_connection_refused_retries(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        # A port that was just free: nothing listens there.
        await consumer.stop()
        endpoints = _endpoints(url, schedule=[5])
        _add_lead(store, endpoints, 1)
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["dead"], "dead letter")
        await worker.stop(5)

        [dead] = store.dead_letters()
        assert dead.last_status is None
        assert dead.last_error is not None
        assert dead.last_error.startswith("connection failed: ")
        assert _attempt_offsets(store, dead.id) == [0, 5]

    _run(scenario)


def test_retry_after_seconds_and_date(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, schedule=[5, 30, 120], max_retry_after=600)
        _add_lead(store, endpoints, 1)
        # 120 s from T0 + 0, then an HTTP date 90 s after the second attempt,
        # then 99999 s, capped at 600.
        date = T0 + timedelta(seconds=120 + 90)
        consumer.script = [
            Step(503, {"Retry-After": "120"}),
            Step(429, {"Retry-After": date.strftime("%a, %d %b %Y %H:%M:%S GMT")}),
            Step(503, {"Retry-After": "99999"}),
        ]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["delivered"], "delivery")
        await worker.stop(5)

        [record] = store.list_deliveries()
        assert _attempt_offsets(store, record.id) == [0, 120, 210, 810]

    _run(scenario)


def test_gone_disables_endpoint(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url)
        _add_lead(store, endpoints, 1)
        consumer.script = [Step(410)]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: bool(store.disabled_endpoints()), "disabled endpoint")
        _add_lead(store, endpoints, 2)
        worker.notify()
        # Simulated hours pass; nothing is sent to a disabled endpoint.
        await clock.sleep(3 * 3600)
        await asyncio.sleep(0.1)

        [state] = store.disabled_endpoints()
        assert state.endpoint == "default"
        assert state.disabled_reason == "HTTP 410 Gone"
        first, second = store.list_deliveries()
        assert (first.state, first.attempts, first.last_status) == ("pending", 1, 410)
        assert (second.state, second.attempts) == ("pending", 0)
        assert len(consumer.requests) == 1
        assert store.next_delivery_due(["default"]) is None

        assert store.enable_endpoint("default") is True
        assert store.enable_endpoint("default") is False
        worker.notify()
        await _until(lambda: _states(store) == ["delivered"] * 2, "deliveries")
        await worker.stop(5)
        assert consumer.ids() == [_webhook_id(1), _webhook_id(1), _webhook_id(2)]

    _run(scenario)


# -- exactly-once processing, ordering, batching, limits ---------------------------


def test_lost_response_processed_once(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url)
        _add_lead(store, endpoints, 1)
        # The receiver stores the lead, then fails before answering 2xx.
        consumer.script = [Step(500, process=True)]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["delivered"], "delivery")
        await worker.stop(5)

        assert len(consumer.requests) == 2
        assert consumer.processed == {_webhook_id(1): 1}
        assert consumer.duplicates == 1

    _run(scenario)


def test_thread_order_waits_for_earlier(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, concurrency=1)
        _add_lead(store, endpoints, 1, thread="t1")
        _add_lead(store, endpoints, 2, thread="t1")
        _add_lead(store, endpoints, 3, thread="t2")
        consumer.script = [Step(500)]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["delivered"] * 3, "deliveries")
        await worker.stop(5)

        lead1, lead2, lead3 = (_webhook_id(i) for i in (1, 2, 3))
        assert consumer.ids() == [lead1, lead3, lead1, lead2]
        assert [r.at for r in consumer.requests] == [
            T0,
            T0,
            T0 + timedelta(seconds=5),
            T0 + timedelta(seconds=5),
        ]
        assert list(consumer.processed) == [lead3, lead1, lead2]

    _run(scenario)


def test_dead_delivery_releases_thread(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, schedule=[5])
        _add_lead(store, endpoints, 1, thread="t1")
        _add_lead(store, endpoints, 2, thread="t1")
        consumer.script = [Step(400), Step(400)]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["dead", "delivered"], "deliveries")
        await worker.stop(5)

        assert consumer.ids() == [_webhook_id(1), _webhook_id(1), _webhook_id(2)]

    _run(scenario)


def test_batch_signed_once(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, batch_size=3, concurrency=1)
        for index in (1, 2, 3):
            _add_lead(store, endpoints, index)
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["delivered"] * 3, "deliveries")
        await worker.stop(5)

        [received] = consumer.requests
        member_ids = [_webhook_id(i) for i in (1, 2, 3)]
        assert received.webhook_id == batch_webhook_id(member_ids)
        members = json.loads(received.body)
        assert [m["webhook_id"] for m in members] == member_ids
        assert [m["request_id"] for m in members] == ["req-1", "req-2", "req-3"]
        assert [m["lead"]["subject"] for m in members] == [
            "Quote request 1",
            "Quote request 2",
            "Quote request 3",
        ]
        assert received.headers["X-Leadparse-Request-Id"] == "req-1,req-2,req-3"

    _run(scenario)


def test_concurrency_limit_per_endpoint(store: SQLiteStore) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        endpoints = _endpoints(url, concurrency=2)
        for index in range(1, 7):
            _add_lead(store, endpoints, index)
        consumer.script = [Step(200, delay=0.1) for _ in range(6)]
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["delivered"] * 6, "deliveries")
        await worker.stop(5)

        assert consumer.max_in_flight == 2
        assert sorted(consumer.ids()) == sorted(_webhook_id(i) for i in range(1, 7))

    _run(scenario)


def test_rate_limiter_spaces_requests() -> None:
    clock = FakeClock()
    limiter = _RateLimiter(2.0, clock, clock.sleep)

    async def acquire_three() -> list[datetime]:
        starts = []
        for _ in range(3):
            await limiter.acquire()
            starts.append(clock())
        return starts

    starts = asyncio.run(acquire_three())

    assert starts == [T0, T0 + timedelta(seconds=0.5), T0 + timedelta(seconds=1)]
    assert clock.sleeps == [0.5, 0.5]


def test_rate_limiter_zero_is_unlimited() -> None:
    clock = FakeClock()
    limiter = _RateLimiter(0, clock, clock.sleep)

    async def acquire_many() -> None:
        for _ in range(5):
            await limiter.acquire()

    asyncio.run(acquire_many())

    assert clock.sleeps == []


# -- retry policy ---------------------------------------------------------------------


def test_retry_policy_jitter_bounds() -> None:
    low = RetryPolicy((100.0, 200.0), jitter=0.2, random_fraction=lambda: 0.0)
    high = RetryPolicy((100.0, 200.0), jitter=0.2, random_fraction=lambda: 1.0)

    assert low.delay(1) == pytest.approx(80.0)
    assert high.delay(2) == pytest.approx(240.0)
    assert low.delay(3) is None
    assert low.max_attempts == 3


def test_retry_policy_retry_after_cap() -> None:
    policy = RetryPolicy((5.0, 30.0), max_retry_after=600.0)

    assert policy.delay(1, retry_after=2.0) == 5.0
    assert policy.delay(1, retry_after=60.0) == 60.0
    assert policy.delay(2, retry_after=86400.0) == 600.0
    assert policy.delay(3, retry_after=60.0) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Tue, 04 Jun 2024 10:01:00 GMT", 60.0),
        ("Tue, 04 Jun 2024 09:00:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, T0) == seconds


# -- SSRF protection ------------------------------------------------------------------


def _one_endpoint(**options: Any) -> WebhookEndpoint:
    values = {"url": "https://hooks.example.com/x", "secrets": [SECRET], **options}
    [endpoint] = load_settings(
        env={}, overrides={f"webhooks.{k}": v for k, v in values.items()}
    ).webhooks.resolved_endpoints()
    return endpoint


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.5", "private"),
        ("100.64.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "reserved"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_check_address_rejects(address: str, category: str) -> None:
    endpoint = _one_endpoint()

    with pytest.raises(TargetRejectedError) as caught:
        check_address(address, endpoint)
    parsed = ipaddress.ip_address(address)
    shown = parsed.ipv4_mapped if isinstance(parsed, ipaddress.IPv6Address) else None
    assert f"{category} address {shown or parsed}" in str(caught.value)
    assert "hooks.example.com" not in str(caught.value)


def test_check_address_allows_public() -> None:
    endpoint = _one_endpoint()

    check_address("93.184.216.34", endpoint)
    check_address("2606:2800:220:1::1", endpoint)


def test_check_address_options() -> None:
    private = _one_endpoint(allow_private=True)
    loopback = _one_endpoint(allow_http_loopback=True)
    listed = _one_endpoint(allow_networks=["169.254.169.254/32"])

    check_address("10.1.2.3", private)
    check_address("127.0.0.1", loopback)
    check_address("169.254.169.254", listed)
    for endpoint in (private, loopback):
        with pytest.raises(TargetRejectedError):
            check_address("169.254.169.254", endpoint)
    with pytest.raises(TargetRejectedError):
        check_address("127.0.0.1", private)
    with pytest.raises(TargetRejectedError):
        check_address("10.1.2.3", loopback)


@pytest.mark.parametrize(
    ("host_url", "error"),
    [
        ("https://127.0.0.1:{port}/hook", "loopback address 127.0.0.1"),
        ("https://localhost:{port}/hook", "loopback address 127.0.0.1"),
    ],
)
def test_delivery_refuses_loopback_target(
    store: SQLiteStore, host_url: str, error: str
) -> None:
    async def scenario(consumer: Consumer, url: str, clock: FakeClock) -> None:
        port = url.split(":")[2].split("/")[0]
        endpoints = _endpoints(
            host_url.format(port=port), allow_http_loopback=False, schedule=[5]
        )
        _add_lead(store, endpoints, 1)
        worker = _worker(store, endpoints, clock)
        await worker.start()
        await _until(lambda: _states(store) == ["dead"], "dead letter")
        await worker.stop(5)

        [dead] = store.dead_letters()
        assert dead.last_error is not None
        assert error in dead.last_error
        assert consumer.requests == []

    _run(scenario)


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("http://hooks.example.com/x", False),
        ("http://hooks.example.com/x", True),
        ("http://10.0.0.5/x", True),
        ("ftp://hooks.example.com/x", False),
        ("https:///x", False),
    ],
)
def test_config_rejects_insecure_url(url: str, allow: bool) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            env={},
            overrides={
                "webhooks.url": url,
                "webhooks.secrets": [SECRET],
                "webhooks.allow_http_loopback": allow,
            },
        )
    assert "endpoint 'default'" in str(caught.value)
    assert "/x" not in str(caught.value)


def test_config_accepts_http_loopback() -> None:
    endpoints = _endpoints("http://localhost:8080/x")

    assert [endpoint.url for endpoint in endpoints] == ["http://localhost:8080/x"]


# -- routing and configuration ---------------------------------------------------------


def test_router_addresses_campaigns_kinds() -> None:
    settings = load_settings(
        env={},
        overrides={
            "webhooks.secrets": [SECRET],
            "webhooks.endpoints": [
                {
                    "name": "ads",
                    "url": "https://crm.example.com/ads",
                    "routes": [
                        {"addresses": ["ads+*@leads.test", "google@leads.test"]}
                    ],
                },
                {
                    "name": "spring",
                    "url": "https://crm.example.com/spring",
                    "routes": [{"campaigns": ["spring-2024"]}],
                },
                {
                    "name": "everything",
                    "url": "https://archive.example.com/in",
                    "kinds": ["lead", "auto_reply", "bounce", "bulk"],
                },
                {
                    "name": "bounces",
                    "url": "https://ops.example.com/bounces",
                    "routes": [{"kinds": ["bounce"]}],
                },
            ],
        },
    )
    router = Router(settings.webhooks.resolved_endpoints())

    def names(**options: Any) -> list[str]:
        return [d.endpoint for d in router.deliveries_for(_result(1, **options))]

    assert names(source="ADS+Summer@leads.test") == ["ads", "everything"]
    assert names(source="google@leads.test") == ["ads", "everything"]
    assert names(campaign="spring-2024") == ["spring", "everything"]
    assert names(source="sales@leads.test") == ["everything"]
    assert names(kind="auto_reply") == ["everything"]
    assert names(kind="bounce") == ["everything", "bounces"]
    assert names(kind="bulk", source="ads+x@leads.test") == ["everything"]


def test_router_default_kinds_lead_only() -> None:
    router = Router(_endpoints("https://crm.example.com/x"))

    [delivery] = router.deliveries_for(_result(1, thread="t9"))
    assert delivery == NewDelivery("default", _webhook_id(1), "t9")
    for kind in ("auto_reply", "bounce", "bulk"):
        assert router.deliveries_for(_result(1, kind=kind)) == []


def test_config_environment_and_rotation() -> None:
    other = "whsec_" + base64.b64encode(b"t" * 32).decode()
    settings = load_settings(
        env={
            "LEADPARSE_WEBHOOKS_URL": "https://crm.example.com/x",
            "LEADPARSE_WEBHOOKS_SECRETS": f"{SECRET}, {other}",
            "LEADPARSE_WEBHOOKS_SCHEDULE": "1,2,3",
            "LEADPARSE_WEBHOOKS_BATCH_SIZE": "10",
        }
    )
    [endpoint] = settings.webhooks.resolved_endpoints()

    assert endpoint.secret_values() == [SECRET, other]
    assert endpoint.schedule == (1.0, 2.0, 3.0)
    assert endpoint.batch_size == 10
    assert SECRET not in repr(settings)


def test_config_errors_hide_secrets() -> None:
    bad = "whsec_c2hvcnQ="
    with pytest.raises(ConfigError) as short:
        load_settings(
            env={},
            overrides={"webhooks.url": "https://x.example/", "webhooks.secrets": [bad]},
        )
    with pytest.raises(ConfigError) as nested:
        load_settings(
            env={},
            overrides={
                "webhooks.endpoints": [
                    {
                        "name": "crm",
                        "url": "https://x.example/",
                        "secrets": [bad],
                        "x": 1,
                    }
                ]
            },
        )

    assert "decodes to 5 bytes" in str(short.value)
    assert "endpoint 'crm'" in str(nested.value)
    assert "x: Extra inputs are not permitted" in str(nested.value)
    for error in (short.value, nested.value):
        assert "c2hvcnQ" not in str(error)


def test_config_duplicate_endpoint_names() -> None:
    endpoint = {"name": "default", "url": "https://b.example/", "secrets": [SECRET]}
    with pytest.raises(ConfigError) as caught:
        load_settings(
            env={},
            overrides={
                "webhooks.url": "https://a.example/",
                "webhooks.secrets": [SECRET],
                "webhooks.endpoints": [endpoint],
            },
        )
    assert "two endpoints are named 'default'" in str(caught.value)


# -- store -----------------------------------------------------------------------------


def test_complete_job_creates_deliveries_atomically(store: SQLiteStore) -> None:
    endpoints = _endpoints("https://crm.example.com/x")
    router = Router(endpoints)
    ids = []
    for index in (1, 1):
        ids.append(
            store.put_message(
                IncomingMessage(
                    request_id=f"req-{len(ids)}",
                    received_at=T0,
                    mail_from="alice@example.org",
                    rcpt_tos=("sales@leads.test",),
                    raw=lead_message(index),
                )
            )
        )
    for job in store.claim_jobs(2):
        result = _result(1)
        store.complete_job(
            job.id, result, actor="test", deliveries=router.deliveries_for(result)
        )

    # The second message is a duplicate of the first and gets no delivery.
    [record] = store.list_deliveries()
    assert record.webhook_id == _webhook_id(1)
    assert record.state == "pending"
    assert store.delivery_counts() == {"default": {"pending": 1}}
    assert (
        store.create_deliveries(ids[0], router.deliveries_for(_result(1)), at=T0) == 0
    )


def test_claim_lease_and_exclude(store: SQLiteStore) -> None:
    endpoints = _endpoints("https://crm.example.com/x")
    _add_lead(store, endpoints, 1)

    [claimed] = store.claim_deliveries("default", now=T0, limit=5, lease_seconds=70)
    assert claimed.payload.startswith(b"{")
    assert store.claim_deliveries("default", now=T0, limit=5, lease_seconds=70) == []
    later = T0 + timedelta(seconds=70)
    assert (
        store.claim_deliveries(
            "default", now=later, limit=5, lease_seconds=70, exclude=[claimed.id]
        )
        == []
    )
    [again] = store.claim_deliveries("default", now=later, limit=5, lease_seconds=70)
    assert again.id == claimed.id
    assert again.webhook_id == claimed.webhook_id


def test_replay_all_and_audit(store: SQLiteStore) -> None:
    endpoints = _endpoints("https://crm.example.com/x")
    for index in (1, 2, 3):
        _add_lead(store, endpoints, index)
    claimed = store.claim_deliveries("default", now=T0, limit=3, lease_seconds=60)
    store.record_attempt(
        [claimed[0].id, claimed[1].id], at=T0, state=DeliveryState.DEAD, status=500
    )
    store.record_attempt([claimed[2].id], at=T0, state=DeliveryState.DELIVERED)

    assert store.delivery_counts() == {"default": {"dead": 2, "delivered": 1}}
    assert store.replay_deliveries(None, at=T0, actor="ops") == [
        claimed[0].id,
        claimed[1].id,
    ]
    assert store.replay_deliveries([claimed[2].id, 999], at=T0, actor="ops") == [
        claimed[2].id
    ]
    assert store.delivery_counts() == {"default": {"pending": 3}}
    entries = store.audit_entries(action="webhook_replay")
    assert [entry.detail["deliveries"] for entry in entries] == [2, 1]
    assert [entry.actor for entry in entries] == ["ops", "ops"]
    with pytest.raises(ValueError, match="next_attempt_at"):
        store.record_attempt([claimed[0].id], at=T0, state=DeliveryState.PENDING)


# -- dlq commands ------------------------------------------------------------------------


@pytest.fixture
def cli() -> click.Group:
    from leadparse.server.cli import register

    @click.group()
    def group() -> None:
        """Test group."""

    register(group)
    return group


def test_dlq_list_and_replay(
    cli: click.Group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "LEADPARSE_CONFIG",
        "LEADPARSE_STORAGE_DATA_DIR",
        "LEADPARSE_STORAGE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    store = SQLiteStore(tmp_path)
    endpoints = _endpoints("https://crm.example.com/x")
    _add_lead(store, endpoints, 1)
    _add_lead(store, endpoints, 2)
    first, second = store.claim_deliveries("default", now=T0, limit=2, lease_seconds=9)
    store.record_attempt(
        [first.id], at=T0, state=DeliveryState.DEAD, status=503, error="HTTP 503"
    )
    store.close()
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]

    listed = runner.invoke(cli, ["dlq", "list", *data])
    as_json = runner.invoke(cli, ["dlq", "list", "--json", *data])
    neither = runner.invoke(cli, ["dlq", "replay", *data])
    pending = runner.invoke(cli, ["dlq", "replay", str(second.id), *data])
    replayed = runner.invoke(cli, ["dlq", "replay", str(first.id), *data])
    status = runner.invoke(cli, ["dlq", "status", *data])

    assert listed.exit_code == 0, listed.output
    assert listed.output.startswith(
        f"{first.id}\tdefault\t{_webhook_id(1)}\tattempts=1\tstatus=503\terror=HTTP 503\t"
    )
    assert listed.output.count("\n") == 2
    assert "1 dead deliveries" in listed.output
    assert json.loads(as_json.output)["webhook_id"] == _webhook_id(1)
    assert neither.exit_code == 2
    assert "give delivery ids or --all" in neither.output
    assert pending.exit_code == 1
    assert (
        f"not replayed (no such delivery, or still pending or sending): {second.id}"
        in (pending.output)
    )
    assert replayed.exit_code == 0, replayed.output
    assert replayed.output == "replayed 1 deliveries\n"
    assert status.output == "default.pending\t1\ndefault.sending\t1\n"
    reopened = SQLiteStore(tmp_path)
    [record] = reopened.list_deliveries(lead_id=first.lead_id)
    assert (record.state, record.attempts, record.webhook_id) == (
        "pending",
        0,
        _webhook_id(1),
    )
    reopened.close()


def test_serve_rejects_bad_secret_quietly(cli: click.Group, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            "--data-dir",
            str(tmp_path),
            "--webhook-url",
            "https://crm.example.com/x",
            "--webhook-secret",
            "whsec_secret*value",
        ],
    )

    assert result.exit_code == 1
    assert "webhooks.secrets (from command line): webhook secret is not valid" in (
        result.output
    )
    assert "secret*value" not in result.output


# -- end to end ------------------------------------------------------------------------


class ThreadedConsumer:
    """A :class:`Consumer` on the real clock, in a thread with its own loop."""

    def __init__(self) -> None:
        self.consumer = Consumer()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> str:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.consumer.start(), self._loop)
        self.url = future.result(10)
        return self.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.consumer.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def test_serve_smtp_to_webhook(start_server: Callable[..., RunningServer]) -> None:
    receiver = ThreadedConsumer()
    url = receiver.start()
    try:
        server = start_server(
            **{
                "webhooks.url": url,
                "webhooks.secrets": [SECRET],
                "webhooks.allow_http_loopback": True,
                "webhooks.poll_interval": 0.2,
            }
        )
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.sendmail("alice@example.org", ["sales@leads.test"], lead_message(7))
        deadline = time.monotonic() + 30
        while not receiver.consumer.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        # Any second request would arrive within this pause.
        time.sleep(0.5)
    finally:
        receiver.stop()

    consumer = receiver.consumer
    assert consumer.rejected == []
    [received] = consumer.requests
    store = server.open_store()
    try:
        [lead] = list(store.iter_leads())
        [record] = store.list_deliveries()
        [message_id] = store.message_ids()
        request_id = store.get_message(message_id).request_id
    finally:
        store.close()
    assert received.webhook_id == "msg_" + lead["idempotency_key"][:32]
    assert json.loads(received.body) == lead
    assert lead["subject"] == "Quote request 7"
    assert received.headers["X-Leadparse-Request-Id"] == request_id
    assert record.state == "delivered"
    assert consumer.processed == {received.webhook_id: 1}
