"""The main entry point: :func:`parse_lead`."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic_core import PydanticSerializationError

from leadparse._version import __version__
from leadparse.errors import DefectError, NotEmailError
from leadparse.model import Defect, Lead, Provenance
from leadparse.pipeline import Envelope, MessageDraft, Pipeline, replace_surrogates
from leadparse.policy import Policy

__all__ = ["parse_lead"]

_DEFAULT_POLICY = Policy()
_DEFAULT_PIPELINE: Pipeline | None = None

# RFC 5322 section 3.6.8: a field name is printable ASCII except the colon.
_FIRST_FIELD = re.compile(rb"^[!-9;-~]{1,200}[ \t]*:")
_MBOX_FROM = re.compile(rb"^>?From \S")


def _check_is_email(raw: bytes) -> None:
    if not raw:
        raise NotEmailError(raw, "input is empty")
    start = raw.lstrip(b"\r\n\t ")
    if start.startswith(b"\xef\xbb\xbf"):
        start = start[3:]
    if _MBOX_FROM.match(start):
        start = start.split(b"\n", 1)[1] if b"\n" in start else b""
    if not _FIRST_FIELD.match(start):
        raise NotEmailError(
            raw, "it does not begin with a header field such as 'From:'"
        )


def _envelope(value: Envelope | Mapping[str, Any] | None) -> Envelope | None:
    if value is None:
        return None
    if isinstance(value, Envelope):
        return Envelope(
            mail_from=_clean_text(value.mail_from) if value.mail_from else None,
            rcpt_tos=tuple(_clean_text(item) for item in value.rcpt_tos),
        )
    rcpt = value.get("rcpt_tos") or value.get("rcpt_to") or ()
    if isinstance(rcpt, str):
        rcpt = (rcpt,)
    mail_from = value.get("mail_from")
    return Envelope(
        mail_from=_clean_text(mail_from) if isinstance(mail_from, str) else None,
        rcpt_tos=tuple(_clean_text(str(item)) for item in rcpt),
    )


def _clean_text(value: str) -> str:
    # Envelope strings decoded with surrogateescape carry lone surrogates for
    # bytes that were not UTF-8; they would make the lead unserializable.
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return replace_surrogates(value)
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    return value


def _serializable(lead: Lead) -> Lead:
    """Return *lead* unchanged if it encodes as JSON, else with lone surrogates
    (undecodable input bytes that a stage let through) replaced by U+FFFD."""
    try:
        lead.model_dump_json()
    except (UnicodeError, PydanticSerializationError):
        scrubbed = _scrub(lead.model_dump(mode="python", by_alias=True))
        lead = Lead.model_validate(scrubbed)
        lead.defects.append(
            Defect(
                code="undecodable_text",
                message="text with undecodable bytes was replaced by U+FFFD",
            )
        )
    return lead


def parse_lead(
    raw: bytes,
    *,
    policy: Policy | None = None,
    envelope: Envelope | Mapping[str, Any] | None = None,
    received_at: datetime | None = None,
    pipeline: Pipeline | Iterable[Any] | None = None,
) -> Lead:
    """Parse one raw RFC 5322 message into a :class:`~leadparse.model.Lead`.

    Args:
        raw: the message bytes as received, headers first.
        policy: limits and settings; the defaults when ``None``.
        envelope: the SMTP envelope (``Envelope`` or a mapping with
            ``mail_from`` and ``rcpt_tos``), used for the channel.
        received_at: when the message arrived; now (UTC) when ``None``.
        pipeline: the stages to run; ``Pipeline.default()`` when ``None``.

    Returns:
        The lead. Malformed mail is parsed as far as possible and each problem
        is listed in ``lead.defects``.

    Raises:
        NotEmailError: the input has no header block at all.
        DefectError: ``policy.strict`` is set and the message has defects.
        TypeError: *raw* is not bytes.
    """
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise TypeError(
            f"parse_lead() needs the raw message as bytes, got {type(raw).__name__}; "
            "read files in binary mode or encode str input first"
        )
    _check_is_email(raw)
    policy = policy or _DEFAULT_POLICY
    if received_at is None:
        received_at = datetime.now(UTC)
    elif received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    else:
        received_at = received_at.astimezone(UTC)

    lead = Lead(
        received_at=received_at,
        provenance=Provenance(
            raw_sha256=hashlib.sha256(raw).hexdigest(), parser_version=__version__
        ),
    )
    draft = MessageDraft(
        raw=raw,
        lead=lead,
        envelope=_envelope(envelope),
        deadline=time.monotonic() + policy.limits.max_seconds,
    )
    if pipeline is None:
        global _DEFAULT_PIPELINE
        if _DEFAULT_PIPELINE is None:
            _DEFAULT_PIPELINE = Pipeline.default()
        pipeline = _DEFAULT_PIPELINE
    elif not isinstance(pipeline, Pipeline):
        pipeline = Pipeline(pipeline)

    lead = pipeline.run(draft, policy).lead
    lead = _serializable(lead)
    if policy.strict and lead.defects:
        raise DefectError(list(lead.defects), lead)
    return lead
