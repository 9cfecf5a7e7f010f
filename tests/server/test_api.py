"""The polling API against a real server: SMTP in, parse workers, HTTP out."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import (
    ADMIN_TOKEN,
    RAW_TOKEN,
    READER_TOKEN,
    api_overrides,
    free_port,
    http,
    message_with_attachment,
    send,
    wait_for_api,
    wait_for_leads,
)
from server_support import RunningServer, lead_message, make_settings, wait_until_parsed

from leadparse.store import FileSystemStore

pytest.importorskip("aiohttp", reason="the API needs the 'server' extra")

StartServer = Callable[..., RunningServer]

_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def api(start_server: StartServer) -> Callable[..., tuple[RunningServer, str]]:
    """Start a server with the API; return it and the API base URL."""

    def start(**overrides: Any) -> tuple[RunningServer, str]:
        port = free_port()
        server = start_server(**api_overrides(port), **overrides)
        base_url = f"http://127.0.0.1:{port}"
        wait_for_api(base_url)
        return server, base_url

    return start


def _send_in_order(server: RunningServer, count: int) -> None:
    # Each message is parsed before the next is sent, so the order in which
    # leads are recorded is the sending order.
    store = server.open_store()
    try:
        for index in range(count):
            send(server, [lead_message(index)])
            wait_until_parsed(store, index + 1)
    finally:
        store.close()


def _metric_samples(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(
            r'([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?)'
            r" (-?(?:[0-9.e+-]+|\+Inf|NaN))",
            line,
        )
        assert match is not None, f"not a sample line: {line!r}"
        samples[match.group(1)] = float(match.group(2))
    return samples


def test_leads_pages_follow_cursor_in_order(api: Any) -> None:
    server, base_url = api()
    _send_in_order(server, 5)

    subjects: list[str] = []
    ids: list[str] = []
    cursor = ""
    pages = 0
    while True:
        reply = http(
            "GET", f"{base_url}/v1/leads?limit=2&cursor={cursor}", token=READER_TOKEN
        )
        assert reply.status == 200
        page = reply.json()
        pages += 1
        subjects += [item["lead"]["subject"] for item in page["leads"]]
        ids += [item["id"] for item in page["leads"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert subjects == [f"Quote request {index}" for index in range(5)]
    assert len(set(ids)) == 5
    assert all(re.fullmatch(r"msg_[0-9a-f]{32}", item) for item in ids)

    # A cursor past the last lead gives an empty page that keeps the cursor.
    reply = http(
        "GET", f"{base_url}/v1/leads?cursor={page['next_cursor']}", token=READER_TOKEN
    )
    assert reply.json() == {
        "leads": [],
        "next_cursor": page["next_cursor"],
        "has_more": False,
    }


def test_lead_id_is_prefix_of_idempotency_key(api: Any) -> None:
    server, base_url = api()
    _send_in_order(server, 1)
    [item] = wait_for_leads(base_url, 1)
    assert item["id"] == "msg_" + item["lead"]["idempotency_key"][:32]
    assert item["kind"] == "lead"
    assert item["acknowledged_at"] is None


def test_ack_is_idempotent_and_reports_unknown(api: Any) -> None:
    server, base_url = api()
    _send_in_order(server, 3)
    first, second, third = (item["id"] for item in wait_for_leads(base_url, 3))
    unknown = "msg_" + "0" * 32

    reply = http(
        "POST",
        f"{base_url}/v1/leads/ack",
        token=READER_TOKEN,
        body={"ids": [first, second, unknown, "bogus"]},
    )
    assert reply.status == 200
    assert reply.json() == {
        "acknowledged": [first, second],
        "already_acknowledged": [],
        "unknown": [unknown, "bogus"],
    }
    again = http(
        "POST",
        f"{base_url}/v1/leads/ack",
        token=READER_TOKEN,
        body={"ids": [second, first]},
    )
    assert again.json() == {
        "acknowledged": [],
        "already_acknowledged": [second, first],
        "unknown": [],
    }

    listed = http("GET", f"{base_url}/v1/leads", token=READER_TOKEN).json()
    assert [item["id"] for item in listed["leads"]] == [third]
    one = http("GET", f"{base_url}/v1/leads/{first}", token=READER_TOKEN).json()
    assert one["id"] == first
    assert one["acknowledged_at"] is not None


def test_ack_rejects_invalid_bodies(api: Any) -> None:
    _server, base_url = api()
    url = f"{base_url}/v1/leads/ack"
    empty = http("POST", url, token=READER_TOKEN, body={"ids": []})
    assert empty.status == 400
    assert empty.json()["error"]["code"] == "invalid_ids"
    numbers = http("POST", url, token=READER_TOKEN, body={"ids": [1]})
    assert numbers.status == 400
    broken = http("POST", url, token=READER_TOKEN, raw_body=b"{not json")
    assert broken.status == 400
    assert broken.json()["error"]["code"] == "invalid_json"
    form = http(
        "POST",
        url,
        token=READER_TOKEN,
        raw_body=b"ids=1",
        content_type="application/x-www-form-urlencoded",
    )
    assert form.status == 415
    too_many = http("POST", url, token=READER_TOKEN, body={"ids": ["x"] * 1001})
    assert too_many.status == 400
    assert too_many.json()["error"]["code"] == "too_many_ids"
    nested = http("POST", url, token=READER_TOKEN, raw_body=b"[" * 100_000)
    assert nested.status == 400
    assert nested.json()["error"]["code"] == "invalid_json"


def test_list_rejects_bad_cursor_and_limit(api: Any) -> None:
    _server, base_url = api()
    bad_cursor = http("GET", f"{base_url}/v1/leads?cursor=%21%21", token=READER_TOKEN)
    assert bad_cursor.status == 400
    assert bad_cursor.json()["error"]["code"] == "invalid_cursor"
    foreign = base64.urlsafe_b64encode(b"v2:5").decode()
    assert (
        http("GET", f"{base_url}/v1/leads?cursor={foreign}", token=READER_TOKEN).status
        == 400
    )
    huge = base64.urlsafe_b64encode(b"v1:99999999999999999999999999").decode()
    overflow = http("GET", f"{base_url}/v1/leads?cursor={huge}", token=READER_TOKEN)
    assert overflow.status == 400
    assert overflow.json()["error"]["code"] == "invalid_cursor"
    assert http("GET", f"{base_url}/v1/leads?limit=0", token=READER_TOKEN).status == 400
    over = http("GET", f"{base_url}/v1/leads?limit=1001", token=READER_TOKEN)
    assert over.status == 400
    assert over.json()["error"]["code"] == "invalid_parameter"
    assert (
        http("GET", f"{base_url}/v1/leads?limit=1000", token=READER_TOKEN).status == 200
    )


def test_auth_rejects_and_logs_without_token(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _server, base_url = api()
    caplog.set_level(logging.WARNING, logger="leadparse.server.api")
    missing = http("GET", f"{base_url}/v1/leads")
    assert missing.status == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    wrong = http("GET", f"{base_url}/v1/leads", token="wrong-token-secret-value-xyz")
    assert wrong.status == 401
    assert http("GET", f"{base_url}/metrics").status == 401
    assert http("GET", f"{base_url}/openapi.json").status == 401

    raw_only = http("GET", f"{base_url}/v1/leads", token=RAW_TOKEN)
    assert raw_only.status == 403
    assert raw_only.json()["error"]["code"] == "forbidden"
    reader_admin = http(
        "POST",
        f"{base_url}/v1/admin/forget",
        token=READER_TOKEN,
        body={"email": "a@b.test"},
    )
    assert reader_admin.status == 403
    reader_raw = http(
        "GET", f"{base_url}/v1/leads/msg_{'0' * 32}/raw", token=READER_TOKEN
    )
    assert reader_raw.status == 403

    health = http("GET", f"{base_url}/healthz")
    assert health.status == 200
    assert health.json() == {"status": "ok"}
    assert "API request rejected" in caplog.text
    assert "wrong-token-secret-value-xyz" not in caplog.text
    assert READER_TOKEN not in caplog.text


def test_unknown_lead_and_route_are_json_404(api: Any) -> None:
    _server, base_url = api()
    lead = http("GET", f"{base_url}/v1/leads/msg_{'f' * 32}", token=READER_TOKEN)
    assert lead.status == 404
    assert lead.json()["error"]["code"] == "lead_not_found"
    route = http("GET", f"{base_url}/v2/nothing", token=READER_TOKEN)
    assert route.status == 404
    assert route.json()["error"]["code"] == "not_found"


def test_raw_download_returns_stored_message(api: Any) -> None:
    server, base_url = api()
    _send_in_order(server, 1)
    [item] = wait_for_leads(base_url, 1)
    reply = http("GET", f"{base_url}/v1/leads/{item['id']}/raw", token=RAW_TOKEN)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "message/rfc822"
    assert reply.body.endswith(lead_message(0))
    assert b"X-Leadparse-Request-Id: " in reply.body
    assert (
        item["lead"]["provenance"]["raw_mime_url"]
        == f"{base_url}/v1/leads/{item['id']}/raw"
    )


def test_raw_download_decrypts_encrypted_message(api: Any) -> None:
    server, base_url = api(
        **{"encryption.key_id": "k1", "encryption.keys": {"k1": _KEY}}
    )
    _send_in_order(server, 1)
    [item] = wait_for_leads(base_url, 1)
    store = server.open_store()
    try:
        row = store._reader().execute("SELECT raw, key_id FROM messages").fetchone()
    finally:
        store.close()
    assert row["key_id"] == "k1"
    assert b"Quote request 0" not in bytes(row["raw"])
    reply = http("GET", f"{base_url}/v1/leads/{item['id']}/raw", token=RAW_TOKEN)
    assert reply.status == 200
    assert reply.body.endswith(lead_message(0))
    # Attachment files would be written in clear, so they are off here.
    assert not (server.settings.storage.data_dir / "attachments").exists()


def test_signed_attachment_url_valid_tampered_expired(api: Any) -> None:
    server, base_url = api()
    data = bytes(range(256)) * 8
    send(server, [message_with_attachment(1, data)])
    [item] = wait_for_leads(base_url, 1)
    [attachment] = item["lead"]["attachments"]
    url = attachment["url"]
    digest = hashlib.sha256(data).hexdigest()
    assert url.startswith(f"{base_url}/v1/attachments/{digest}?expires=")
    assert (
        item["lead"]["provenance"]["raw_mime_url"]
        == f"{base_url}/v1/leads/{item['id']}/raw"
    )

    valid = http("GET", url)
    assert valid.status == 200
    assert valid.body == data
    assert valid.headers["Content-Type"] == "application/octet-stream"

    tampered = re.sub(
        r"signature=.",
        lambda m: m.group(0)[:-1] + ("A" if m.group(0)[-1] != "A" else "B"),
        url,
    )
    bad = http("GET", tampered)
    assert bad.status == 403
    assert bad.json()["error"]["code"] == "invalid_signature"
    other_digest = url.replace(digest, "0" * 64)
    assert http("GET", other_digest).status == 403
    unsigned = http("GET", url.split("?")[0])
    assert unsigned.status == 403

    secret = (server.settings.storage.data_dir / "api-url-secret").read_bytes()
    signer = FileSystemStore(
        server.settings.storage.data_dir / "attachments", secret=secret
    )
    old = signer.sign(signer.url_for(digest), expires_in=60, now=time.time() - 120)
    expired = http("GET", f"{base_url}/v1/attachments/{digest}?{old.partition('?')[2]}")
    assert expired.status == 403
    assert "expired" in expired.json()["error"]["message"]


def test_metrics_text_parses_and_counts(api: Any) -> None:
    server, base_url = api()
    before = _metric_samples(
        http("GET", f"{base_url}/metrics", token=READER_TOKEN).body.decode()
    )
    _send_in_order(server, 2)
    wait_for_leads(base_url, 2)
    reply = http("GET", f"{base_url}/metrics", token=READER_TOKEN)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    after = _metric_samples(reply.body.decode())

    received = "leadparse_messages_received_total"
    success = 'leadparse_parses_total{outcome="success"}'
    assert after[received] - before[received] == 2
    assert after[success] - before.get(success, 0) == 2
    assert after["leadparse_leads_unacknowledged"] == 2
    assert after['leadparse_jobs{state="done"}'] == 2
    for name in (
        "leadparse_webhook_retries_total",
        "leadparse_webhook_dead_letters_total",
    ):
        assert name in after
    text = reply.body.decode()
    assert "# TYPE leadparse_webhook_delivery_seconds histogram" in text
    assert "# TYPE leadparse_messages_received_total counter" in text


def test_admin_forget_deletes_leads(api: Any) -> None:
    server, base_url = api()
    _send_in_order(server, 2)
    items = wait_for_leads(base_url, 2)
    reply = http(
        "POST",
        f"{base_url}/v1/admin/forget",
        token=ADMIN_TOKEN,
        body={"email": "ALICE@example.org"},
    )
    assert reply.status == 200
    assert reply.json() == {"deleted_messages": 2}
    assert (
        http("GET", f"{base_url}/v1/leads/{items[0]['id']}", token=ADMIN_TOKEN).status
        == 404
    )
    invalid = http(
        "POST",
        f"{base_url}/v1/admin/forget",
        token=ADMIN_TOKEN,
        body={"email": "nobody"},
    )
    assert invalid.status == 400
    store = server.open_store()
    try:
        [entry] = store.audit_entries(action="forget")
    finally:
        store.close()
    assert entry.actor == "api:admin"


def test_admin_replay_without_dead_letters(api: Any) -> None:
    _server, base_url = api()
    reply = http("POST", f"{base_url}/v1/admin/dlq/replay", token=ADMIN_TOKEN, body={})
    assert reply.status == 200
    assert reply.json() == {"replayed": []}
    invalid = http(
        "POST",
        f"{base_url}/v1/admin/dlq/replay",
        token=ADMIN_TOKEN,
        body={"ids": ["x"]},
    )
    assert invalid.status == 400


def test_api_off_without_token(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leadparse.server.api")
    port = free_port()
    server = start_server(**{"api.port": port})
    send(server, [lead_message(1)])
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert "API off: no token configured" in caplog.text


# -- end to end ---------------------------------------------------------------


def _closed_port() -> int:
    # Bound and closed again, so connections to it are refused.
    return free_port()


@pytest.fixture
def serve_with_down_webhook(tmp_path: Path) -> Iterator[tuple[RunningServer, str]]:
    port = free_port()
    overrides: dict[str, Any] = {
        **api_overrides(port),
        "workers.processes": 2,
        "webhooks.url": f"http://127.0.0.1:{_closed_port()}/hook",
        "webhooks.secrets": ["whsec_" + base64.b64encode(b"k" * 32).decode()],
        "webhooks.schedule": [0.05, 0.05],
        "webhooks.jitter": 0.0,
        "webhooks.allow_http_loopback": True,
        "webhooks.poll_interval": 0.1,
        "webhooks.rate_limit": 0,
        "webhooks.concurrency": 8,
    }
    server = RunningServer(make_settings(tmp_path / "data", **overrides)).start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_api(base_url)
        yield server, base_url
    finally:
        server.stop()


def test_serve_polling_gets_every_lead_once_with_webhook_down(
    serve_with_down_webhook: tuple[RunningServer, str],
) -> None:
    server, base_url = serve_with_down_webhook
    count = 40
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test") as client:
        for index in range(count):
            client.sendmail(
                "alice@example.org", ["sales@leads.test"], lead_message(index)
            )

    # Poll with small pages and acknowledge each page, while the workers are
    # still parsing, until every lead arrived.
    seen: list[str] = []
    subjects: list[str] = []
    deadline = time.monotonic() + 25
    while len(seen) < count and time.monotonic() < deadline:
        page = http("GET", f"{base_url}/v1/leads?limit=7", token=READER_TOKEN).json()
        if not page["leads"]:
            time.sleep(0.05)
            continue
        ids = [item["id"] for item in page["leads"]]
        seen += ids
        subjects += [item["lead"]["subject"] for item in page["leads"]]
        ack = http(
            "POST", f"{base_url}/v1/leads/ack", token=READER_TOKEN, body={"ids": ids}
        )
        assert ack.json()["acknowledged"] == ids

    assert len(seen) == count
    assert len(set(seen)) == count
    assert sorted(subjects) == sorted(
        f"Quote request {index}" for index in range(count)
    )
    final = http("GET", f"{base_url}/v1/leads", token=READER_TOKEN).json()
    assert final == {"leads": [], "next_cursor": None, "has_more": False}
    store = server.open_store()
    try:
        assert store.stats().jobs_by_state == {"done": count}
        if not hasattr(store, "list_deliveries"):
            # NOTE: without webhook delivery the endpoint setting is ignored
            # and only the polling half of this test runs.
            return
        deliveries = _wait_for_dead_letters(store, count)
    finally:
        store.close()
    # The webhook id of each delivery is the lead id the API returned, so a
    # consumer that gets a lead both ways can tell.
    assert sorted(record.webhook_id for record in deliveries) == sorted(seen)
    replay = http("POST", f"{base_url}/v1/admin/dlq/replay", token=ADMIN_TOKEN, body={})
    assert replay.status == 200
    assert sorted(replay.json()["replayed"]) == sorted(
        record.id for record in deliveries
    )
    # Replayed deliveries do not return acknowledged leads to the list.
    after = http("GET", f"{base_url}/v1/leads", token=READER_TOKEN).json()
    assert after["leads"] == []


def _wait_for_dead_letters(store: Any, count: int, timeout: float = 15.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    while time.monotonic() < deadline:
        records = store.list_deliveries()
        if len(records) == count and all(record.state == "dead" for record in records):
            return records
        time.sleep(0.1)
    states = sorted({record.state for record in records})
    raise TimeoutError(f"{len(records)} deliveries, states {states}, after {timeout} s")
