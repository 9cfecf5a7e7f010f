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
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

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
    "CONFIG_ENV",
    "ENV_PREFIX",
    "ConfigError",
    "EncryptionSettings",
    "LoggingSettings",
    "Settings",
    "SmtpSettings",
    "StorageSettings",
    "WorkerSettings",
    "load_settings",
]

ENV_PREFIX = "LEADPARSE_"
CONFIG_ENV = "LEADPARSE_CONFIG"
MIB = 1024 * 1024

# Keys whose values are secrets: error messages never echo their input.
_SECRET_KEYS = frozenset({"keys"})


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
    """Folder of the SQLite database; created when missing."""

    retention_days: int = Field(default=90, gt=0)
    """Age in days after which ``leadparse purge`` deletes a message and its lead."""


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


class Settings(_Section):
    """Every setting of the receiver, one attribute per configuration section."""

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)


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
