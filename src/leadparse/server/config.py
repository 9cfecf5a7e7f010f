"""Settings of the reference SMTP receiver.

Settings come from four layers, each overriding the one before: built-in
defaults, a TOML file (``--config`` or ``LEADPARSE_CONFIG``), environment
variables named ``LEADPARSE_<SECTION>_<KEY>`` (for example
``LEADPARSE_SMTP_PORT``), and command-line options. Invalid input raises
:class:`ConfigError`, whose message names the key, where it came from and the
expected value.

Example file::

    [smtp]
    host = "0.0.0.0"
    port = 25
    hostname = "mx1.example.com"
    accept = ["*@leads.example.com", "sales@example.org"]

    [storage]
    data_dir = "/var/lib/leadparse"
    retention_days = 90

    [encryption]
    key_id = "2024-06"
    keys = { "2024-06" = "<base64 of 32 random bytes>" }
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "API_SCOPES",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "AcksSettings",
    "ApiSettings",
    "ApiToken",
    "ConfigError",
    "EncryptionSettings",
    "LoggingSettings",
    "Settings",
    "SmtpSettings",
    "StorageSettings",
    "WebhookEndpoint",
    "WebhookEndpointSettings",
    "WebhookRoute",
    "WebhookSettings",
    "WorkerSettings",
    "is_loopback_host",
    "load_settings",
]

ENV_PREFIX = "LEADPARSE_"
CONFIG_ENV = "LEADPARSE_CONFIG"
MIB = 1024 * 1024

# Keys whose values are secrets: error messages never echo their input.
# A database URL may contain a password, so "url" is among them.
_SECRET_KEYS = frozenset({"keys", "token", "tokens", "url_secret", "password", "url"})
# Webhook signing secrets, and endpoint tables, which contain secrets and URLs.
_SECRET_KEYS |= {"secrets", "endpoints"}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpSettings(_Section):
    """The SMTP listener and the limits it enforces per session and message."""

    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    """TCP port; 0 picks a free port at start (used by tests)."""

    hostname: str = Field(default_factory=socket.gethostname)
    """Name in the 220 greeting and in the ``by`` clause of the Received header."""

    accept: tuple[str, ...] = ("*@localhost",)
    """Recipients accepted: ``*@domain`` for a catch-all, ``local@domain`` for
    one mailbox. Plus-tags (``sales+ads@domain``) match their base local part.
    Every other recipient gets 550, so the server is never an open relay."""

    max_message_bytes: int = Field(default=25 * MIB, gt=0)
    """SIZE limit advertised in EHLO (RFC 1870); larger messages get 552."""

    max_recipients: int = Field(default=100, gt=0)
    """RCPT commands accepted per message. RFC 5321 section 4.5.3.1.8 requires
    servers to accept at least 100. Further recipients get 452."""

    max_connections: int = Field(default=100, gt=0)
    """Concurrent SMTP sessions; further connections get 421 and are closed."""

    idle_timeout: float = Field(default=300.0, gt=0)
    """Seconds a session may wait between commands (RFC 5321 section 4.5.3.2.7
    suggests 5 minutes)."""

    tls_cert: Path | None = None
    """PEM certificate chain; enables STARTTLS (RFC 3207)."""

    tls_key: Path | None = None
    """PEM private key; may be omitted when ``tls_cert`` also contains the key."""

    require_tls: bool = False
    """Reply 530 to MAIL and later commands until the client used STARTTLS."""

    smtputf8: bool = True
    """Advertise SMTPUTF8 (RFC 6531) so UTF-8 addresses and headers are accepted."""

    reject_bare_newlines: bool = False
    """Reject any message whose data contains a CR or LF that is not part of a
    CRLF pair. Bare line ends around a lone dot are always rejected."""

    drain_timeout: float = Field(default=30.0, ge=0)
    """Seconds a shutdown waits for sessions in the middle of a transaction."""

    @field_validator("accept", mode="before")
    @classmethod
    def _split_accept(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("accept")
    @classmethod
    def _check_accept(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        normalized = []
        for pattern in value:
            local, at, domain = pattern.strip().rpartition("@")
            if not at or not local or not domain or "@" in domain:
                raise ValueError(
                    f"expected '*@domain' or 'local@domain', got {pattern!r}"
                )
            normalized.append(f"{local.casefold()}@{domain.casefold().rstrip('.')}")
        return tuple(normalized)

    @model_validator(mode="after")
    def _check_tls(self) -> SmtpSettings:
        if self.require_tls and self.tls_cert is None:
            raise ValueError(
                "require_tls is true but tls_cert is not set; set smtp.tls_cert "
                "to a PEM certificate or set require_tls to false"
            )
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key is set but tls_cert is not; set both")
        return self


class StorageSettings(_Section):
    """Location and retention of raw messages, jobs and leads."""

    data_dir: Path = Path("leadparse-data")
    """Folder of the SQLite database; created when missing. Unused with ``url``."""

    url: str | None = None
    """``postgresql://user:password@host:port/database`` to keep everything in
    PostgreSQL, shared by receivers and workers on several hosts; unset keeps
    it in SQLite under ``data_dir``."""

    pool_size: int = Field(default=10, gt=0)
    """Connections each process opens to PostgreSQL at most."""

    retention_days: int = Field(default=90, gt=0)
    """Age in days after which ``leadparse purge`` deletes a message and its lead."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            # Only the scheme is echoed: the URL may contain a password.
            scheme = value.partition("://")[0] if "://" in value else "none"
            raise ValueError(
                f"expected a URL starting with postgresql://, got scheme {scheme!r}; "
                "leave url unset to use SQLite in data_dir"
            )
        return value


class WorkerSettings(_Section):
    """The parse workers that turn stored messages into leads."""

    processes: int | None = Field(default=None, ge=0)
    """Worker processes; unset means the number of CPUs this process may use.
    0 runs no parse workers: messages are stored with pending jobs, which
    the next server started with workers parses."""

    max_attempts: int = Field(default=3, gt=0)
    """Parse attempts per message before its job is marked failed."""

    parser: str = "leadparse:parse_lead"
    """``module:function`` of the parser, called as
    ``function(raw, envelope=..., received_at=...)``."""

    poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between checks for pending jobs when nothing signals new mail."""

    lease_timeout: float = Field(default=300.0, gt=0)
    """Seconds after which a running job whose worker has not finished it is
    claimed again by another worker. Keep it above the longest parse."""

    @field_validator("parser")
    @classmethod
    def _check_parser(cls, value: str) -> str:
        module, colon, name = value.partition(":")
        if not colon or not module or not name:
            raise ValueError(f"expected 'module:function', got {value!r}")
        return value


class EncryptionSettings(_Section):
    """AES-GCM encryption of raw messages at rest."""

    key_id: str | None = None
    """Id of the key that encrypts new messages; unset stores raw MIME in clear."""

    keys: dict[str, SecretStr] = Field(default_factory=dict)
    """Key id mapped to a base64 AES key of 16, 24 or 32 bytes. Keep retired
    keys here so rows written with them still decrypt."""

    @field_validator("keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        # The environment form is "id=base64,id2=base64"; base64 padding may
        # itself contain "=", so only the first "=" separates the id.
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for item in value.split(","):
                key_id, eq, encoded = item.strip().partition("=")
                if not eq or not key_id:
                    raise ValueError("expected 'id=base64key' pairs separated by ','")
                pairs[key_id] = encoded
            return pairs
        return value

    @field_validator("keys")
    @classmethod
    def _check_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, secret in value.items():
            decode_key(key_id, secret.get_secret_value())
        return value

    @model_validator(mode="after")
    def _check_key_id(self) -> EncryptionSettings:
        if self.key_id is not None and self.key_id not in self.keys:
            raise ValueError(
                f"key_id {self.key_id!r} is not in encryption.keys; add that key "
                "or set key_id to one of: " + (", ".join(sorted(self.keys)) or "none")
            )
        return self

    def decoded_keys(self) -> dict[str, bytes]:
        """Return every configured key id mapped to its raw key bytes."""
        return {
            key_id: decode_key(key_id, secret.get_secret_value())
            for key_id, secret in self.keys.items()
        }


def decode_key(key_id: str, encoded: str) -> bytes:
    """Decode one base64 AES key and check its length.

    Raises:
        ValueError: the text is not base64 or the key is not 16, 24 or 32 bytes;
            the message never contains the key.
    """
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        try:
            key = base64.urlsafe_b64decode(encoded)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {key_id!r} is not valid base64") from None
    if len(key) not in (16, 24, 32):
        raise ValueError(
            f"key {key_id!r} decodes to {len(key)} bytes; expected 16, 24 or 32 "
            '(generate one with: python -c "import os, base64; '
            'print(base64.b64encode(os.urandom(32)).decode())")'
        )
    return key


class LoggingSettings(_Section):
    """Log level and line format of the server."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# --- api and acks ---

API_SCOPES = ("leads:read", "raw:read", "admin")
"""Scopes an API token can carry; ``admin`` covers the admin endpoints only."""


class ApiToken(_Section):
    """One bearer token of the polling API and the scopes it grants."""

    token: SecretStr
    scopes: tuple[str, ...] = ("leads:read",)

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters long")
        return value

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(API_SCOPES))
        if unknown:
            raise ValueError(
                f"unknown scopes {unknown}; expected some of: {', '.join(API_SCOPES)}"
            )
        return value


class ApiSettings(_Section):
    """The HTTP polling API; it starts only when at least one token is set."""

    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=0, le=65535)
    """TCP port; 0 picks a free port at start (used by tests)."""

    token: SecretStr | None = None
    """One token with every scope, named ``default`` (``--api-token``)."""

    tokens: dict[str, ApiToken] = Field(default_factory=dict)
    """Token name mapped to its token and scopes; the name appears in logs
    and in the acknowledgment records, the token never does."""

    page_size: int = Field(default=100, gt=0)
    """Leads per page of ``GET /v1/leads`` when the request sets no limit."""

    max_page_size: int = Field(default=1000, gt=0)
    """Largest ``limit`` a request may ask for."""

    public_url: str | None = None
    """Base URL of links in responses, such as ``https://leads-api.example.com``;
    unset uses the scheme and Host header of each request."""

    attachments: bool = True
    """Store attachments under ``data_dir/attachments`` and serve them by
    signed URL. Off whenever encryption at rest is configured, because the
    attachment files would be written in clear."""

    url_secret: SecretStr | None = None
    """HMAC key of signed attachment URLs; unset creates a random key in
    ``data_dir/api-url-secret`` on first start."""

    url_ttl: int = Field(default=3600, gt=0)
    """Seconds a signed attachment URL stays valid."""

    @field_validator("tokens", mode="before")
    @classmethod
    def _reject_token_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "set named tokens in the TOML file ([api.tokens.NAME] with token "
                "and scopes); use api.token for a single token"
            )
        return value

    @field_validator("token")
    @classmethod
    def _check_token_length(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here, at load, so a short token stops start-up instead of
        # switching the API off when the token list is built later.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters long")
        return value

    @model_validator(mode="after")
    def _check_sizes(self) -> ApiSettings:
        if self.page_size > self.max_page_size:
            raise ValueError(
                f"page_size {self.page_size} exceeds max_page_size "
                f"{self.max_page_size}; lower page_size or raise max_page_size"
            )
        return self

    def all_tokens(self) -> dict[str, ApiToken]:
        """Return every configured token by name, with ``token`` as ``default``."""
        tokens = dict(self.tokens)
        if self.token is not None:
            tokens["default"] = ApiToken(token=self.token, scopes=API_SCOPES)
        return tokens


class AcksSettings(_Section):
    """Outbound acknowledgment mail to new leads, sent through an SMTP relay."""

    enabled: bool = False
    from_address: str | None = None
    """The From address of acknowledgments; required when enabled."""

    relay_host: str = "127.0.0.1"
    relay_port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    """Upgrade the relay connection with STARTTLS (RFC 3207) before sending."""

    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(default=30.0, gt=0)
    """Seconds for each relay operation before the send counts as failed."""

    window_seconds: int = Field(default=86400, gt=0)
    """At most one acknowledgment per recipient address within this window."""

    subject_prefix: str = "Re: "
    body: str = "Thank you for your message. We have received it and will reply soon.\n"
    """Plain-text body of every acknowledgment."""

    suppress: tuple[str, ...] = ()
    """Addresses that never get an acknowledgment, in addition to the ones
    added with ``leadparse suppress``."""

    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key: Path | None = None
    """PEM RSA or Ed25519 key; DKIM signing (RFC 6376) is on when it is set."""

    poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between checks for new leads to acknowledge."""

    @field_validator("suppress", mode="before")
    @classmethod
    def _split_suppress(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @model_validator(mode="after")
    def _check_enabled(self) -> AcksSettings:
        if self.enabled and not self.from_address:
            raise ValueError("enabled is true but from_address is not set; set both")
        dkim = (self.dkim_domain, self.dkim_selector, self.dkim_private_key)
        if any(item is not None for item in dkim) and None in dkim:
            raise ValueError(
                "DKIM signing needs dkim_domain, dkim_selector and "
                "dkim_private_key; set all three or none"
            )
        return self


# --- end api and acks ---


# --- webhooks ---

WebhookKind = Literal["lead", "auto_reply", "bounce", "bulk"]

DEFAULT_WEBHOOK_SCHEDULE: tuple[float, ...] = (
    5,
    30,
    120,
    600,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    24 * 3600,
)
"""Seconds to wait after attempt 1, 2, ... before the next one. Eleven
attempts span 46.7 hours before jitter, so an endpoint that is down for a
day still receives every lead."""

_ENDPOINT_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)
_MIN_SECRET_BYTES = 16
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _check_secret(secret: SecretStr) -> SecretStr:
    from leadparse.webhooks import InvalidSecretError, decode_secret

    try:
        key = decode_secret(secret.get_secret_value())
    except InvalidSecretError as exc:
        raise ValueError(str(exc)) from None
    if len(key) < _MIN_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret decodes to {len(key)} bytes; use at least "
            f'{_MIN_SECRET_BYTES} (generate one with: python -c "from '
            'leadparse.webhooks import generate_secret; print(generate_secret())")'
        )
    return secret


def is_loopback_host(host: str) -> bool:
    """Return whether *host* is ``localhost`` or a loopback IP literal."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_webhook_url(name: str, url: str, allow_http_loopback: bool) -> None:
    # The URL is never echoed: many receivers put an access token in it.
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"endpoint {name!r}: url has no host")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and allow_http_loopback:
        if is_loopback_host(parts.hostname):
            return
        raise ValueError(
            f"endpoint {name!r}: plain http is allowed only for a loopback "
            "host (localhost, 127.0.0.1, ::1); use https"
        )
    raise ValueError(
        f"endpoint {name!r}: url must start with https:// (plain http to "
        "loopback needs allow_http_loopback = true)"
    )


class WebhookRoute(_Section):
    """Leads an endpoint receives: by inbound address or campaign, and by kind.

    A lead matches when the route sets neither addresses nor campaigns, or
    when its ``channel.source_address`` matches one of the address patterns,
    or when its ``channel.campaign`` is one of the campaigns.
    """

    addresses: tuple[str, ...] = ()
    """Shell-style globs compared case-insensitively with the address the
    message reached, such as ``*@leads.example.com`` or ``ads+*@leads.example.com``."""

    campaigns: tuple[str, ...] = ()
    """Campaign names (``channel.campaign``), compared exactly."""

    kinds: tuple[WebhookKind, ...] | None = None
    """Classification kinds delivered; unset uses the endpoint's ``kinds``."""

    _split = field_validator("addresses", "campaigns", "kinds", mode="before")(
        _split_commas
    )


class WebhookEndpointSettings(_Section):
    """One receiving URL. Unset options take the ``[webhooks]`` section's value."""

    name: str
    url: str
    secrets: tuple[SecretStr, ...] | None = None
    routes: tuple[WebhookRoute, ...] = ()
    """Unset sends every lead of the endpoint's kinds."""
    kinds: tuple[WebhookKind, ...] | None = None
    rate_limit: float | None = Field(default=None, ge=0)
    concurrency: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0, le=1000)
    timeout: float | None = Field(default=None, gt=0)
    schedule: tuple[float, ...] | None = None
    allow_http_loopback: bool | None = None
    allow_private: bool | None = None
    allow_networks: tuple[str, ...] | None = None

    _split = field_validator(
        "secrets", "kinds", "schedule", "allow_networks", mode="before"
    )(_split_commas)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value or len(value) > 64 or not set(value) <= _ENDPOINT_NAME_CHARS:
            raise ValueError(
                "name must be 1 to 64 letters, digits, '_', '.' or '-', "
                f"got {value[:70]!r}"
            )
        return value


@dataclass(frozen=True)
class WebhookEndpoint:
    """An endpoint with every option resolved, as the delivery worker uses it."""

    name: str
    url: str
    secrets: tuple[SecretStr, ...]
    routes: tuple[WebhookRoute, ...]
    kinds: tuple[WebhookKind, ...]
    rate_limit: float
    """Requests per second; 0 means no limit."""
    concurrency: int
    batch_size: int
    timeout: float
    schedule: tuple[float, ...]
    jitter: float
    max_retry_after: float
    allow_http_loopback: bool
    allow_private: bool
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def secret_values(self) -> list[str]:
        """Return the secrets as text, for signing only."""
        return [secret.get_secret_value() for secret in self.secrets]


class WebhookSettings(_Section):
    """Signed webhook delivery of new leads (Standard Webhooks).

    ``url`` and ``secrets`` define one endpoint named ``default``;
    ``[[webhooks.endpoints]]`` tables define more. The other keys are
    defaults that each endpoint may override.
    """

    url: str | None = None
    """URL of the ``default`` endpoint (``--webhook-url``)."""

    secrets: tuple[SecretStr, ...] = ()
    """Signing secrets ``whsec_<base64>``; every one signs each request, so
    add the new secret, update receivers, then remove the old one."""

    endpoints: tuple[WebhookEndpointSettings, ...] = ()

    kinds: tuple[WebhookKind, ...] = ("lead",)
    """Classification kinds delivered. Auto-replies, bounces and bulk mail
    are stored and counted either way."""

    rate_limit: float = Field(default=10.0, ge=0)
    """Requests per second per endpoint; 0 means no limit."""

    concurrency: int = Field(default=4, gt=0)
    """Requests in flight per endpoint."""

    batch_size: int = Field(default=1, gt=0, le=1000)
    """Leads per request; above 1 the body is a JSON array."""

    timeout: float = Field(default=10.0, gt=0)
    """Seconds for one request, connection included."""

    schedule: tuple[float, ...] = DEFAULT_WEBHOOK_SCHEDULE
    """Seconds between attempts; after the last one the delivery is dead."""

    jitter: float = Field(default=0.2, ge=0, lt=1)
    """Each wait is multiplied by a random factor in [1 - jitter, 1 + jitter]."""

    max_retry_after: float = Field(default=3600.0, ge=0)
    """Largest Retry-After in seconds that is honoured; longer ones are cut."""

    allow_http_loopback: bool = False
    """Allow plain http to loopback addresses, for development."""

    allow_private: bool = False
    """Allow private addresses (RFC 1918, RFC 4193, RFC 6598 shared space)."""

    allow_networks: tuple[str, ...] = ()
    """CIDR networks allowed even when a rule above rejects them."""

    poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between checks for deliveries changed by other processes,
    such as ``leadparse dlq replay``."""

    _split = field_validator(
        "secrets", "kinds", "schedule", "allow_networks", mode="before"
    )(_split_commas)

    @field_validator("secrets")
    @classmethod
    def _check_secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:
            _check_secret(secret)
        return value

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(step <= 0 for step in value):
            raise ValueError("schedule must be one or more positive numbers of seconds")
        return value

    @field_validator("allow_networks")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("endpoints", mode="before")
    @classmethod
    def _parse_endpoints(cls, value: Any) -> Any:
        # Each endpoint is validated here so that an error names the endpoint
        # and the key without echoing the input, which contains secrets.
        if isinstance(value, str):
            raise ValueError(
                "set endpoints in the TOML file as [[webhooks.endpoints]] tables"
            )
        if not isinstance(value, list | tuple):
            raise ValueError("endpoints must be a list of tables")
        parsed: list[WebhookEndpointSettings] = []
        for index, item in enumerate(value):
            if isinstance(item, WebhookEndpointSettings):
                parsed.append(item)
                continue
            label = f"#{index + 1}"
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                label = repr(item["name"])
            try:
                parsed.append(WebhookEndpointSettings.model_validate(item))
            except ValidationError as exc:
                problems = "; ".join(
                    ".".join(str(part) for part in error["loc"])
                    + ": "
                    + error["msg"].removeprefix("Value error, ")
                    for error in exc.errors(include_url=False)
                )
                raise ValueError(f"endpoint {label}: {problems}") from None
        return tuple(parsed)

    @model_validator(mode="after")
    def _check_endpoints(self) -> WebhookSettings:
        names: set[str] = set()
        for endpoint in self.resolved_endpoints():
            if endpoint.name in names:
                raise ValueError(f"two endpoints are named {endpoint.name!r}")
            names.add(endpoint.name)
            if not endpoint.secrets:
                raise ValueError(
                    f"endpoint {endpoint.name!r} has no secrets; set webhooks.secrets "
                    "or the endpoint's secrets to one or more whsec_... values"
                )
            for secret in endpoint.secrets:
                _check_secret(secret)
            _check_webhook_url(
                endpoint.name, endpoint.url, endpoint.allow_http_loopback
            )
        return self

    def resolved_endpoints(self) -> tuple[WebhookEndpoint, ...]:
        """Return every endpoint with section defaults filled in, ``default`` first."""
        configured = list(self.endpoints)
        if self.url is not None:
            configured.insert(0, WebhookEndpointSettings(name="default", url=self.url))
        return tuple(self._resolve(endpoint) for endpoint in configured)

    def _resolve(self, endpoint: WebhookEndpointSettings) -> WebhookEndpoint:
        def pick(own: Any, section: Any) -> Any:
            return section if own is None else own

        networks = pick(endpoint.allow_networks, self.allow_networks)
        return WebhookEndpoint(
            name=endpoint.name,
            url=endpoint.url,
            secrets=pick(endpoint.secrets, self.secrets),
            routes=endpoint.routes or (WebhookRoute(),),
            kinds=pick(endpoint.kinds, self.kinds),
            rate_limit=pick(endpoint.rate_limit, self.rate_limit),
            concurrency=pick(endpoint.concurrency, self.concurrency),
            batch_size=pick(endpoint.batch_size, self.batch_size),
            timeout=pick(endpoint.timeout, self.timeout),
            schedule=pick(endpoint.schedule, self.schedule),
            jitter=self.jitter,
            max_retry_after=self.max_retry_after,
            allow_http_loopback=pick(
                endpoint.allow_http_loopback, self.allow_http_loopback
            ),
            allow_private=pick(endpoint.allow_private, self.allow_private),
            allow_networks=tuple(
                ipaddress.ip_network(network, strict=False) for network in networks
            ),
        )


# --- end webhooks ---


class Settings(_Section):
    """Every setting of the receiver, one attribute per configuration section."""

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    acks: AcksSettings = Field(default_factory=AcksSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)


_SECTIONS: dict[str, type[_Section]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in Settings.model_fields.items()
}


def load_settings(
    config_file: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from defaults, a TOML file, the environment and overrides.

    Args:
        config_file: TOML file to read; when ``None``, the file named by
            ``LEADPARSE_CONFIG`` is read if that variable is set.
        env: environment to read ``LEADPARSE_*`` variables from; defaults to
            ``os.environ``.
        overrides: dotted keys such as ``"smtp.port"`` mapped to values, for
            command-line options; ``None`` values are ignored.

    Raises:
        ConfigError: the file is missing or not TOML, a key is unknown, or a
            value is invalid. The message names the key and where it came from.
    """
    environ = os.environ if env is None else env
    data: dict[str, dict[str, Any]] = {}
    sources: dict[tuple[str, str], str] = {}

    path = config_file if config_file is not None else environ.get(CONFIG_ENV)
    if path:
        for section, values in _read_toml(Path(path)).items():
            if not isinstance(values, dict):
                raise ConfigError(
                    f"invalid configuration in {path}: {section!r} must be a "
                    f"table such as [{section}]; sections are: " + ", ".join(_SECTIONS)
                )
            data.setdefault(section, {}).update(values)
            for key in values:
                sources[(section, key)] = str(path)

    for name, value in environ.items():
        located = _locate_env(name)
        if located is None:
            continue
        section, key = located
        data.setdefault(section, {})[key] = value
        sources[(section, key)] = f"environment variable {name}"

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})[key] = value
        sources[(section, key)] = "command line"

    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file not found: {path}; pass an existing TOML file "
            f"to --config or unset {CONFIG_ENV}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"configuration file {path} is not valid TOML: {exc}"
        ) from None


def _locate_env(name: str) -> tuple[str, str] | None:
    """Map ``LEADPARSE_SMTP_PORT`` to ``("smtp", "port")``.

    Variables that do not start with a section name belong to other parts of
    leadparse and are ignored. An unknown key inside a known section is
    returned as is so validation reports it as unknown.
    """
    if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
        return None
    rest = name[len(ENV_PREFIX) :].lower()
    for section in _SECTIONS:
        if rest.startswith(section + "_"):
            return section, rest[len(section) + 1 :]
    return None


def _describe(exc: ValidationError, sources: Mapping[tuple[str, str], str]) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        location = [str(part) for part in error["loc"]]
        section = location[0] if location else ""
        key = location[1] if len(location) > 1 else ""
        dotted = ".".join(location[:2]) or "configuration"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            known = _known_keys(section)
            message = "unknown key; expected one of: " + ", ".join(known)
        elif key and key not in _SECRET_KEYS and error["type"] != "missing":
            message += f" (got {error['input']!r})"
        if key:
            source = sources.get((section, key), "defaults")
            lines.append(f"{dotted} (from {source}): {message}")
        else:
            # A check across several keys of one section, such as TLS settings.
            lines.append(f"{dotted}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def _known_keys(section: str) -> list[str]:
    model = _SECTIONS.get(section)
    if model is None:
        return list(_SECTIONS)
    return list(model.model_fields)
