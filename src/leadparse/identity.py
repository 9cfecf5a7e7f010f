"""Identity stage: the idempotency key and provenance of the record."""

from __future__ import annotations

import hashlib
import re

from leadparse._mime import split_header_block
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["idempotency_key", "identity_stage"]

# Headers that identify the message itself. Trace and transport headers
# (Received, Return-Path, Delivered-To, DKIM and ARC signatures, X-* added by
# relays) change on redelivery and are left out on purpose.
_CONTENT_HEADERS = (
    "message-id",
    "from",
    "sender",
    "to",
    "cc",
    "subject",
    "date",
    "in-reply-to",
    "references",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
)
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)
_WHITESPACE = re.compile(rb"[ \t\r\n]+")
_TRAILING_SPACE = re.compile(rb"[ \t]+(?=\n)")


def idempotency_key(raw: bytes, message_id: str | None) -> str:
    """Compute a key that is equal for redeliveries of one message.

    The key hashes the Message-ID with the message's content headers and body,
    so new trace headers do not change it, a missing Message-ID still gives a
    deterministic key, and a reused Message-ID on other content gives another.
    """
    head, body = split_header_block(raw)
    fields: list[bytes] = []
    for match in _FIELD.finditer(head):
        name = match.group(1).lower().decode("ascii", "replace")
        if name in _CONTENT_HEADERS:
            value = _WHITESPACE.sub(b" ", match.group(2)).strip()
            fields.append(name.encode() + b":" + value)
    fields.sort()
    canonical_body = _TRAILING_SPACE.sub(b"", body.replace(b"\r\n", b"\n")).rstrip(
        b"\n"
    )
    digest = hashlib.sha256()
    digest.update(b"leadparse-idempotency-v1\n")
    digest.update((message_id or "").encode("utf-8", "surrogateescape") + b"\n")
    for field in fields:
        digest.update(field + b"\n")
    digest.update(b"\n")
    digest.update(canonical_body)
    return digest.hexdigest()


@stage("identity", always_run=True)
def identity_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Fill ``idempotency_key``."""
    raw = draft.raw
    if raw.startswith((b"From ", b">From ")):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    draft.lead.idempotency_key = idempotency_key(raw, draft.lead.message_id)
    return draft
