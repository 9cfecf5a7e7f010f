"""Standard Webhooks signatures: sign outgoing requests and verify incoming ones.

The scheme follows the Standard Webhooks specification (standardwebhooks.com).
Every request carries three headers:

- ``webhook-id``: a unique id of the message; the same id is sent again on
  every retry, so receivers deduplicate on it.
- ``webhook-timestamp``: the sending time in integer Unix seconds.
- ``webhook-signature``: space-separated signatures of the form
  ``v1,<base64>``. Each is the base64 of HMAC-SHA256 over
  ``f"{id}.{timestamp}.".encode() + body`` with one secret's key. The sender
  signs with every active secret, so a receiver that has any of them can
  verify while secrets rotate.

A secret is written ``whsec_<base64 key>``. The key is the base64-decoded
text after the prefix; HMAC takes it as is.

This module needs only the standard library, so a receiving application can
verify leadparse webhooks without the ``server`` extra::

    from leadparse.webhooks import WebhookVerificationError, verify

    try:
        webhook_id = verify(request.headers, request.body, ["whsec_..."])
    except WebhookVerificationError as exc:
        return 400, exc.reason
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from leadparse.errors import LeadparseError

__all__ = [
    "DEFAULT_TOLERANCE",
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SECRET_PREFIX",
    "SIGNATURE_VERSION",
    "BadSignatureError",
    "InvalidSecretError",
    "MalformedHeaderError",
    "MissingHeaderError",
    "Reason",
    "TimestampError",
    "UnsupportedSignatureVersionError",
    "WebhookVerificationError",
    "batch_webhook_id",
    "decode_secret",
    "generate_secret",
    "sign",
    "signature",
    "verify",
]

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"

DEFAULT_TOLERANCE = 300
"""Seconds a timestamp may lie before or after the receiver's clock. Older
requests are rejected, so a captured request cannot be replayed later."""

_MAX_ID_LENGTH = 256
# Visible ASCII without space and comma: the id is part of the signed text
# and must survive header transport unchanged.
_ID_PATTERN = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")


class Reason(StrEnum):
    """The check a webhook request failed, with stable values for logs and metrics."""

    MISSING_HEADER = "missing_header"
    MALFORMED_ID = "malformed_id"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    MALFORMED_SIGNATURE = "malformed_signature"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_SIGNATURE = "bad_signature"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    TIMESTAMP_TOO_NEW = "timestamp_too_new"


class WebhookVerificationError(LeadparseError, ValueError):
    """A webhook request failed verification; reject it (HTTP 400 or 401).

    Attributes:
        reason: the failed check, one of :class:`Reason`.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class MissingHeaderError(WebhookVerificationError):
    """A required ``webhook-*`` header is absent or empty."""


class MalformedHeaderError(WebhookVerificationError):
    """The id, timestamp or signature header does not have the required syntax."""


class UnsupportedSignatureVersionError(WebhookVerificationError):
    """The signature header contains no ``v1`` signature."""


class BadSignatureError(WebhookVerificationError):
    """No signature matches any of the receiver's secrets."""


class TimestampError(WebhookVerificationError):
    """The timestamp is further from the receiver's clock than the tolerance."""


class InvalidSecretError(LeadparseError, ValueError):
    """A signing secret is not ``whsec_`` followed by base64; the message omits it."""


def generate_secret(size: int = 32) -> str:
    """Return a new random secret ``whsec_<base64 of size bytes>``."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(size)).decode("ascii")


def decode_secret(secret: str | bytes) -> bytes:
    """Return the HMAC key of a secret.

    Args:
        secret: ``whsec_<base64>``, bare base64 text, or the raw key as bytes.

    Raises:
        InvalidSecretError: the text is not valid base64 or decodes to nothing.
            The message never contains the secret.
    """
    if isinstance(secret, bytes):
        key = secret
    else:
        encoded = secret.strip().removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSecretError(
                "webhook secret is not valid base64 after the 'whsec_' prefix; "
                "generate one with leadparse.webhooks.generate_secret()"
            ) from None
    if not key:
        raise InvalidSecretError("webhook secret is empty")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature of one request under one key."""
    digest = _digest(key, webhook_id, timestamp, body).decode("ascii")
    return f"{SIGNATURE_VERSION},{digest}"


def _digest(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> bytes:
    """Return the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def sign(
    secrets: str | bytes | Sequence[str | bytes],
    webhook_id: str,
    timestamp: int | datetime,
    body: bytes,
) -> dict[str, str]:
    """Return the three ``webhook-*`` headers for one request body.

    Args:
        secrets: one secret or several; the signature header gets one
            signature per secret, in the order given.
        webhook_id: the message id, equal on every retry of the message.
        timestamp: sending time, as Unix seconds or an aware datetime.
        body: the exact bytes of the request body.

    Raises:
        InvalidSecretError: a secret does not decode.
        ValueError: the id is not 1 to 256 visible ASCII characters without
            comma, or no secret is given.
    """
    _check_id(webhook_id)
    keys = [decode_secret(secret) for secret in _as_list(secrets)]
    if not keys:
        raise ValueError("sign() needs at least one secret")
    seconds = _unix_seconds(timestamp)
    signatures = " ".join(signature(key, webhook_id, seconds, body) for key in keys)
    return {
        HEADER_ID: webhook_id,
        HEADER_TIMESTAMP: str(seconds),
        HEADER_SIGNATURE: signatures,
    }


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secrets: str | bytes | Sequence[str | bytes],
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: datetime | float | None = None,
) -> str:
    """Check the signature and timestamp of a received webhook request.

    Header names are matched case-insensitively. The request passes when any
    ``v1`` signature in the header matches any of *secrets*, so it keeps
    passing while the sender rotates secrets. Signatures of other versions
    are ignored. Comparison is constant-time (:func:`hmac.compare_digest`).

    Args:
        headers: the request headers (a dict or any mapping, such as aiohttp's).
        body: the raw request body exactly as received, before JSON parsing.
        secrets: the receiver's secret or secrets, ``whsec_...``.
        tolerance: seconds the timestamp may differ from *now*.
        now: the receiver's clock, as an aware datetime or Unix seconds;
            the current time when ``None``.

    Returns:
        The ``webhook-id``, for deduplication: retries and replays of one
        message carry the same id.

    Raises:
        WebhookVerificationError: a header is missing or malformed, the
            timestamp is outside the tolerance, or no signature matches. The
            ``reason`` attribute and the subclass name the check that failed.
        InvalidSecretError: one of *secrets* does not decode.
    """
    webhook_id = _header(headers, HEADER_ID)
    timestamp_text = _header(headers, HEADER_TIMESTAMP)
    signature_text = _header(headers, HEADER_SIGNATURE)
    keys = [decode_secret(secret) for secret in _as_list(secrets)]
    if not keys:
        raise ValueError("verify() needs at least one secret")

    try:
        _check_id(webhook_id)
    except ValueError:
        raise MalformedHeaderError(
            Reason.MALFORMED_ID,
            f"{HEADER_ID} must be 1 to {_MAX_ID_LENGTH} visible ASCII characters "
            "without comma",
        ) from None
    if not _TIMESTAMP_PATTERN.fullmatch(timestamp_text):
        raise MalformedHeaderError(
            Reason.MALFORMED_TIMESTAMP,
            f"{HEADER_TIMESTAMP} must be integer Unix seconds, got "
            f"{timestamp_text[:40]!r}",
        )
    timestamp = int(timestamp_text)
    _check_timestamp(timestamp, tolerance, now)

    candidates = _v1_signatures(signature_text)
    body_bytes = body.encode("utf-8") if isinstance(body, str) else body
    for key in keys:
        expected = _digest(key, webhook_id, timestamp, body_bytes)
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return webhook_id
    raise BadSignatureError(
        Reason.BAD_SIGNATURE,
        f"no signature in {HEADER_SIGNATURE} matches any of the "
        f"{len(keys)} configured secrets; check the secret and that the body "
        "is verified before any parsing or re-encoding",
    )


def batch_webhook_id(member_ids: Iterable[str]) -> str:
    """Return the ``webhook-id`` of a batch: ``batch_`` and 32 hex digits of SHA-256.

    The digest covers the member ids in order, one per line, so the same
    members in the same order always get the same batch id.
    """
    digest = hashlib.sha256("\n".join(member_ids).encode("ascii")).hexdigest()
    return "batch_" + digest[:32]


def _as_list(secrets: str | bytes | Sequence[str | bytes]) -> list[str | bytes]:
    if isinstance(secrets, str | bytes):
        return [secrets]
    return list(secrets)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                value = candidate
                break
    if value is None or not value.strip():
        raise MissingHeaderError(
            Reason.MISSING_HEADER, f"missing required header {name}"
        )
    return value.strip()


def _check_id(webhook_id: str) -> None:
    if len(webhook_id) > _MAX_ID_LENGTH or not _ID_PATTERN.fullmatch(webhook_id):
        raise ValueError(
            f"webhook id must be 1 to {_MAX_ID_LENGTH} visible ASCII characters "
            "without comma"
        )


def _unix_seconds(moment: int | float | datetime) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp())
    return int(moment)


def _check_timestamp(
    timestamp: int, tolerance: int, now: datetime | float | None
) -> None:
    current = _unix_seconds(datetime.now(UTC) if now is None else now)
    if timestamp < current - tolerance:
        raise TimestampError(
            Reason.TIMESTAMP_TOO_OLD,
            f"{HEADER_TIMESTAMP} is {current - timestamp} s old, more than the "
            f"tolerance of {tolerance} s; a replayed request or a wrong clock",
        )
    if timestamp > current + tolerance:
        raise TimestampError(
            Reason.TIMESTAMP_TOO_NEW,
            f"{HEADER_TIMESTAMP} is {timestamp - current} s in the future, more "
            f"than the tolerance of {tolerance} s; check the sender's clock",
        )


def _v1_signatures(header: str) -> list[bytes]:
    """Return the base64 parts of the ``v1`` entries of a signature header."""
    found: list[bytes] = []
    for entry in header.split():
        version, comma, value = entry.partition(",")
        if not comma or not version or not value:
            raise MalformedHeaderError(
                Reason.MALFORMED_SIGNATURE,
                f"{HEADER_SIGNATURE} entries must be 'version,base64', got an "
                f"entry of {len(entry)} characters without that form",
            )
        if version == SIGNATURE_VERSION:
            # Non-ASCII text cannot match and compare_digest rejects it, so
            # it is replaced rather than raising a different error.
            found.append(value.encode("ascii", "replace"))
    if not found:
        raise UnsupportedSignatureVersionError(
            Reason.UNSUPPORTED_VERSION,
            f"{HEADER_SIGNATURE} has no {SIGNATURE_VERSION} signature; this "
            f"receiver verifies {SIGNATURE_VERSION} (HMAC-SHA256) only",
        )
    return found
