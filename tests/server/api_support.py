"""Helpers for the API tests: a full server with the API, HTTP calls, messages."""

from __future__ import annotations

import json
import smtplib
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

from server_support import RunningServer

ADMIN_TOKEN = "admin-token-0123456789abcdef"
READER_TOKEN = "reader-token-0123456789abcdef"
RAW_TOKEN = "raw-token-0123456789abcdef01"


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api_overrides(port: int) -> dict[str, Any]:
    """Return settings that start the API on *port* with three tokens."""
    return {
        "api.host": "127.0.0.1",
        "api.port": port,
        "api.tokens": {
            "admin": {
                "token": ADMIN_TOKEN,
                "scopes": ["leads:read", "raw:read", "admin"],
            },
            "reader": {"token": READER_TOKEN, "scopes": ["leads:read"]},
            "raw": {"token": RAW_TOKEN, "scopes": ["raw:read"]},
        },
    }


@dataclass
class Reply:
    """One HTTP response: status, headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    raw_body: bytes | None = None,
    content_type: str = "application/json",
) -> Reply:
    """Send one request with urllib and return the reply, error statuses included."""
    data = raw_body
    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, dict(error.headers), error.read())


def wait_for_api(base_url: str, timeout: float = 10.0) -> None:
    """Wait until ``GET /healthz`` returns 200; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http("GET", f"{base_url}/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"API at {base_url} did not answer within {timeout} s")


def send(server: RunningServer, messages: list[bytes]) -> None:
    """Send each message over one SMTP session to sales@leads.test."""
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test") as client:
        for message in messages:
            client.sendmail("alice@example.org", ["sales@leads.test"], message)


def message_with_attachment(index: int, data: bytes) -> bytes:
    """Return a lead with one application/octet-stream attachment."""
    message = EmailMessage(policy=SMTP)
    message["From"] = "Bob Example <bob@example.org>"
    message["To"] = "sales@leads.test"
    message["Subject"] = f"Drawing for quote {index}"
    message["Message-ID"] = f"<attach-{index}@example.org>"
    message["Date"] = "Tue, 04 Jun 2024 10:00:00 +0000"
    message.set_content("Please quote the attached part.\n\nBob Example\n")
    message.add_attachment(
        data, maintype="application", subtype="octet-stream", filename="part.bin"
    )
    return message.as_bytes()


def wait_for_leads(base_url: str, count: int, timeout: float = 30.0) -> list[Any]:
    """Wait until *count* unacknowledged leads are listed; return the first page."""
    deadline = time.monotonic() + timeout
    leads: list[Any] = []
    while time.monotonic() < deadline:
        reply = http("GET", f"{base_url}/v1/leads?limit=1000", token=ADMIN_TOKEN)
        leads = reply.json()["leads"]
        if len(leads) >= count:
            return leads
        time.sleep(0.05)
    raise TimeoutError(f"{len(leads)} of {count} leads listed after {timeout} s")
