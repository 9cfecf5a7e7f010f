"""Policy: the read-only settings every pipeline stage receives."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from leadparse._vocabulary import (
    DEFAULT_FREE_MAIL_DOMAINS,
    DEFAULT_INTENT_VOCABULARY,
    DEFAULT_INTENT_WEIGHTS,
)

__all__ = ["Limits", "Policy"]

MIB = 1024 * 1024


class Limits(BaseModel):
    """Bounds on the work one message may cause.

    A message that crosses a limit is still parsed as far as the limit allows,
    and a defect names the limit, so no input is silently dropped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_message_bytes: int = Field(default=64 * MIB, gt=0)
    """Raw size accepted for MIME parsing; larger input keeps only its headers."""

    max_parts: int = Field(default=1000, gt=0)
    """MIME parts walked; parts past the limit are not read."""

    max_depth: int = Field(default=20, gt=0)
    """Multipart and message/rfc822 nesting levels walked."""

    max_headers: int = Field(default=1000, gt=0)
    """Header fields read from one header block."""

    max_html_bytes: int = Field(default=8 * MIB, gt=0)
    """Size of an HTML body converted to text or sanitized."""

    max_html_depth: int = Field(default=200, gt=0)
    """Element nesting of an HTML body parsed as a tree; deeper markup is read
    by its tags alone."""

    max_text_chars: int = Field(default=2_000_000, gt=0)
    """Characters of body text passed to quote, signature and intent stages."""

    max_seconds: float = Field(default=10.0, gt=0)
    """Wall time for one parse, checked between stages; later stages are skipped."""

    max_intent_chars: int = Field(default=50_000, gt=0)
    """Characters of each source (subject, new text, attachment) read for intent."""

    max_attachment_text_chars: int = Field(default=200_000, gt=0)
    """Characters of text kept from one attachment."""

    max_pdf_pages: int = Field(default=20, gt=0)
    """Pages of a PDF attachment read for text."""

    max_pdf_bytes: int = Field(default=32 * MIB, gt=0)
    """Size of a PDF attachment opened for text, because pdfminer keeps the whole
    file in memory."""

    max_pdf_inflated_bytes: int = Field(default=64 * MIB, gt=0)
    """Total size of a PDF's compressed streams once inflated; a larger PDF
    (a decompression bomb, for one) is not read for text."""

    max_header_chars: int = Field(default=64 * 1024, gt=0)
    """Characters kept of one decoded header value such as the Subject."""


class Policy(BaseModel):
    """Read-only settings for :func:`leadparse.parse_lead` and its stages.

    Build a changed copy with ``policy.model_copy(update={...})``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    limits: Limits = Field(default_factory=Limits)
    default_region: str = "US"
    """ISO 3166 region for phone numbers written without a country code."""

    campaign_aliases: dict[str, str] = Field(default_factory=dict)
    """Recipient address or local part (lower case) mapped to a campaign name."""

    intent_vocabulary: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: dict(DEFAULT_INTENT_VOCABULARY)
    )
    """Intent label mapped to regular expressions (case-insensitive) that signal it."""

    intent_weights: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_INTENT_WEIGHTS)
    )
    """Score points each intent label adds."""

    free_mail_domains: frozenset[str] = DEFAULT_FREE_MAIL_DOMAINS
    """Consumer mailbox domains, never used as a company name."""

    strict: bool = False
    """Raise :class:`leadparse.DefectError` when the message has any defect."""

    attachment_store: Any = None
    """An :class:`leadparse.attachments.AttachmentStore`; ``None`` writes nothing."""
