"""Identity stage: the idempotency key and provenance of the record."""

from __future__ import annotations

import hashlib
import re

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
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CHUNK_BYTES = 1 << 20


def _strip_trailing_space(body: bytes) -> bytes:
    """Remove the spaces and tabs that end each line before a line feed.

    The last line keeps them when no line feed follows it. This gives the same
    bytes as the regular expression ``[ \\t]+(?=\\n)`` and is several times
    faster on large bodies, so the key is unchanged.
    """
    if b" \n" not in body and b"\t\n" not in body:
        return body
    lines = body.split(b"\n")
    last = lines.pop()
    lines = [line.rstrip(b" \t") for line in lines]
    lines.append(last)
    return b"\n".join(lines)


def idempotency_key(raw: bytes, message_id: str | None) -> str:
    """Compute a key that is equal for redeliveries of one message.

    The key hashes the Message-ID with the message's content headers and body,
    so new trace headers do not change it, a missing Message-ID still gives a
    deterministic key, and a reused Message-ID on other content gives another.
    White space in the body is left out, so line-ending and trailing-space
    changes made by relays do not change the key either.
    """
    match = _HEADER_END.search(raw)
    head_end = match.start() if match else len(raw)
    body_start = match.end() if match else len(raw)
    fields: list[bytes] = []
    for field in _FIELD.finditer(raw, 0, head_end):
        name = field.group(1).lower().decode("ascii", "replace")
        if name in _CONTENT_HEADERS:
            value = _WHITESPACE.sub(b" ", field.group(2)).strip()
            fields.append(name.encode() + b":" + value)
    fields.sort()

    digest = hashlib.sha256()
    digest.update(b"leadparse-idempotency-v2\n")
    digest.update((message_id or "").encode("utf-8", "surrogateescape") + b"\n")
    for item in fields:
        digest.update(item + b"\n")
    digest.update(b"\n")
    # The body is hashed in chunks through a view, never copied whole.
    view = memoryview(raw)
    for start in range(body_start, len(raw), _CHUNK_BYTES):
        chunk = bytes(view[start : min(start + _CHUNK_BYTES, len(raw))])
        digest.update(chunk.translate(None, b" \t\r\n"))
    return digest.hexdigest()


@stage("identity", always_run=True)
def identity_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Fill ``idempotency_key``."""
    raw = draft.raw
    if raw.startswith((b"From ", b">From ")):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    draft.lead.idempotency_key = idempotency_key(raw, draft.lead.message_id)
    return draft
