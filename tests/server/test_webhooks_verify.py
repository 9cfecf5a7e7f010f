"""Standard Webhooks signing and verification in leadparse.webhooks."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from leadparse.errors import LeadparseError
from leadparse.webhooks import (
    BadSignatureError,
    InvalidSecretError,
    MalformedHeaderError,
    MissingHeaderError,
    Reason,
    TimestampError,
    UnsupportedSignatureVersionError,
    WebhookVerificationError,
    batch_webhook_id,
    decode_secret,
    generate_secret,
    sign,
    verify,
)

# The example request published with the svix libraries, which implement
# the same scheme under svix-* header names.
SVIX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SVIX_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SVIX_TIMESTAMP = 1614265330
SVIX_BODY = b'{"test": 2432232314}'
SVIX_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
NOW = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)
BODY = b'{"subject":"Quote request"}'


def _headers(**changes: str) -> dict[str, str]:
    headers = sign([OLD_SECRET], "msg_0123", NOW, BODY)
    headers.update(changes)
    return headers


def test_sign_matches_published_example() -> None:
    headers = sign(SVIX_SECRET, SVIX_ID, SVIX_TIMESTAMP, SVIX_BODY)

    assert headers == {
        "webhook-id": SVIX_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": SVIX_SIGNATURE,
    }


def test_verify_accepts_published_example() -> None:
    headers = {
        "Webhook-Id": SVIX_ID,
        "Webhook-Timestamp": str(SVIX_TIMESTAMP),
        "Webhook-Signature": SVIX_SIGNATURE,
    }

    assert verify(headers, SVIX_BODY, SVIX_SECRET, now=SVIX_TIMESTAMP) == SVIX_ID
    assert verify(headers, SVIX_BODY.decode(), [SVIX_SECRET], now=SVIX_TIMESTAMP + 300)


def test_sign_every_secret_in_order() -> None:
    headers = sign([OLD_SECRET, NEW_SECRET], "msg_1", NOW, BODY)
    signatures = headers["webhook-signature"].split(" ")

    assert len(signatures) == 2
    assert signatures[0] == sign(OLD_SECRET, "msg_1", NOW, BODY)["webhook-signature"]
    assert signatures[1] == sign(NEW_SECRET, "msg_1", NOW, BODY)["webhook-signature"]
    assert headers["webhook-timestamp"] == str(int(NOW.timestamp()))


def test_verify_rotation_either_side() -> None:
    both = sign([OLD_SECRET, NEW_SECRET], "msg_1", NOW, BODY)
    only_new = sign([NEW_SECRET], "msg_1", NOW, BODY)

    # A receiver that still has only the old secret.
    assert verify(both, BODY, [OLD_SECRET], now=NOW) == "msg_1"
    # A receiver that already has both secrets, and a sender that dropped the old.
    assert verify(only_new, BODY, [OLD_SECRET, NEW_SECRET], now=NOW) == "msg_1"
    with pytest.raises(BadSignatureError):
        verify(only_new, BODY, [OLD_SECRET], now=NOW)


def test_verify_ignores_other_versions() -> None:
    headers = _headers()
    headers["webhook-signature"] = "v1a,c29tZXRoaW5n " + headers["webhook-signature"]

    assert verify(headers, BODY, OLD_SECRET, now=NOW) == "msg_0123"


@pytest.mark.parametrize(
    "name", ["webhook-id", "webhook-timestamp", "webhook-signature"]
)
def test_verify_missing_header(name: str) -> None:
    headers = _headers()
    del headers[name]

    with pytest.raises(MissingHeaderError) as caught:
        verify(headers, BODY, OLD_SECRET, now=NOW)
    assert caught.value.reason is Reason.MISSING_HEADER
    assert str(caught.value) == f"missing required header {name}"


def test_verify_empty_header_is_missing() -> None:
    with pytest.raises(MissingHeaderError):
        verify(_headers(**{"webhook-id": "  "}), BODY, OLD_SECRET, now=NOW)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"webhook-id": "msg 1"}, Reason.MALFORMED_ID),
        ({"webhook-id": "msg,1"}, Reason.MALFORMED_ID),
        ({"webhook-id": "m" * 257}, Reason.MALFORMED_ID),
        ({"webhook-id": "msg_é"}, Reason.MALFORMED_ID),
        ({"webhook-timestamp": "1717495200.5"}, Reason.MALFORMED_TIMESTAMP),
        ({"webhook-timestamp": "-5"}, Reason.MALFORMED_TIMESTAMP),
        ({"webhook-timestamp": "soon"}, Reason.MALFORMED_TIMESTAMP),
        ({"webhook-signature": "v1"}, Reason.MALFORMED_SIGNATURE),
        ({"webhook-signature": "v1,"}, Reason.MALFORMED_SIGNATURE),
        ({"webhook-signature": ",abc"}, Reason.MALFORMED_SIGNATURE),
    ],
)
def test_verify_malformed_header(changes: dict[str, str], reason: Reason) -> None:
    with pytest.raises(MalformedHeaderError) as caught:
        verify(_headers(**changes), BODY, OLD_SECRET, now=NOW)
    assert caught.value.reason is reason


def test_verify_unsupported_version_only() -> None:
    headers = _headers(**{"webhook-signature": "v2,abc v1a,def"})

    with pytest.raises(UnsupportedSignatureVersionError) as caught:
        verify(headers, BODY, OLD_SECRET, now=NOW)
    assert caught.value.reason is Reason.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    ("body", "secret", "changes"),
    [
        (BODY + b" ", OLD_SECRET, {}),
        (BODY, NEW_SECRET, {}),
        (BODY, OLD_SECRET, {"webhook-id": "msg_0124"}),
        (BODY, OLD_SECRET, {"webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"}),
        (BODY, OLD_SECRET, {"webhook-signature": "v1,ñ"}),
    ],
)
def test_verify_bad_signature(
    body: bytes, secret: str, changes: dict[str, str]
) -> None:
    with pytest.raises(BadSignatureError) as caught:
        verify(_headers(**changes), body, secret, now=NOW)
    assert caught.value.reason is Reason.BAD_SIGNATURE
    assert secret not in str(caught.value)


def test_verify_timestamp_changed_fails_signature() -> None:
    headers = _headers(**{"webhook-timestamp": str(int(NOW.timestamp()) + 1)})

    with pytest.raises(BadSignatureError):
        verify(headers, BODY, OLD_SECRET, now=NOW)


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(301, Reason.TIMESTAMP_TOO_OLD), (-301, Reason.TIMESTAMP_TOO_NEW)],
)
def test_verify_timestamp_outside_tolerance(offset: int, reason: Reason) -> None:
    now = int(NOW.timestamp()) + offset

    with pytest.raises(TimestampError) as caught:
        verify(_headers(), BODY, OLD_SECRET, now=now)
    assert caught.value.reason is reason
    assert verify(_headers(), BODY, OLD_SECRET, now=now, tolerance=301) == "msg_0123"


def test_verify_timestamp_at_tolerance_edge() -> None:
    stamp = int(NOW.timestamp())

    assert verify(_headers(), BODY, OLD_SECRET, now=stamp + 300) == "msg_0123"
    assert verify(_headers(), BODY, OLD_SECRET, now=stamp - 300) == "msg_0123"


def test_verification_error_types() -> None:
    error = BadSignatureError(Reason.BAD_SIGNATURE, "x")

    assert isinstance(error, WebhookVerificationError)
    assert isinstance(error, LeadparseError)
    assert isinstance(error, ValueError)


def test_decode_secret_forms() -> None:
    raw = bytes(range(24))
    encoded = base64.b64encode(raw).decode()

    assert decode_secret("whsec_" + encoded) == raw
    assert decode_secret(encoded) == raw
    assert decode_secret(raw) == raw
    assert len(decode_secret(generate_secret())) == 32
    assert generate_secret().startswith("whsec_")


@pytest.mark.parametrize("secret", ["whsec_not*base64", "whsec_", ""])
def test_decode_secret_invalid_hides_value(secret: str) -> None:
    with pytest.raises(InvalidSecretError) as caught:
        decode_secret(secret)
    assert "not*base64" not in str(caught.value)


def test_batch_id_depends_on_members_and_order() -> None:
    first = batch_webhook_id(["msg_a", "msg_b"])

    assert first.startswith("batch_")
    assert len(first) == len("batch_") + 32
    assert batch_webhook_id(["msg_a", "msg_b"]) == first
    assert batch_webhook_id(["msg_b", "msg_a"]) != first
    assert batch_webhook_id(["msg_a"]) != first


def test_webhooks_module_needs_no_server_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import leadparse.webhooks; "
        "print([m for m in ('aiohttp', 'aiosmtpd') if m in sys.modules])"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert output.strip() == "[]"
