"""The Lead record and its parts.

Field names in the JSON form (``Lead.model_dump(mode="json")``) are a stable
contract: fields may be added, but none is renamed or removed within a major
version. ``docs/schema.json`` contains the JSON Schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Address",
    "Attachment",
    "Bounce",
    "Channel",
    "Classification",
    "Contact",
    "Defect",
    "Extracted",
    "Forwarded",
    "Lead",
    "Provenance",
    "ScoreReason",
    "Sender",
    "Threading",
]

Kind = Literal["lead", "auto_reply", "bounce", "bulk"]
BodySource = Literal["text/plain", "text/html"]


class _Model(BaseModel):
    # JSON names such as "from" are the contract, so dumps use aliases by default.
    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class Address(_Model):
    """A mailbox from an address header: display name and lower-cased address."""

    name: str | None = None
    email: str | None = None


class Sender(Address):
    """The From mailbox, with the domain of its address."""

    domain: str | None = None


class Threading(_Model):
    """Message ids that place the message in a conversation, without brackets."""

    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    thread_id: str | None = None
    """The first id in References, else In-Reply-To, else the Message-ID."""


class Forwarded(_Model):
    """The header block of a forwarded message found in the body."""

    from_: Address | None = Field(default=None, alias="from")
    date: str | None = None
    subject: str | None = None


class ScoreReason(_Model):
    """One contribution to the lead score."""

    code: str
    points: int
    detail: str | None = None


class Extracted(_Model):
    """Contact details and qualification of the person behind the lead."""

    email: str | None = None
    full_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    role: str | None = None
    phone_e164: str | None = None
    phones: list[str] = Field(default_factory=list)
    website: str | None = None
    intent: list[str] = Field(default_factory=list)
    lead_score: int = Field(default=0, ge=0, le=100)
    score_reasons: list[ScoreReason] = Field(default_factory=list)
    sources: dict[str, str] = Field(default_factory=dict)
    """Field name mapped to where it came from: header, signature, vcard, form,
    forwarded or domain."""


class Bounce(_Model):
    """Delivery-failure facts from a bounce (RFC 3464 or plain text)."""

    type: Literal["hard", "soft"] | None = None
    recipient: str | None = None
    status: str | None = None
    """Enhanced status code (RFC 3463), for example ``5.1.1``."""
    diagnostic: str | None = None
    original_message_id: str | None = None


class Classification(_Model):
    """The kind of mail and the reason codes behind that decision."""

    kind: Kind = "lead"
    subkind: str | None = None
    reasons: list[str] = Field(default_factory=list)
    bounce: Bounce | None = None


class Channel(_Model):
    """The inbound address the message reached and the campaign it maps to."""

    source_address: str | None = None
    campaign: str | None = None
    plus_tag: str | None = None


class Contact(_Model):
    """Contact details read from a vCard attachment."""

    full_name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    company: str | None = None
    role: str | None = None
    emails: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)
    website: str | None = None


class Attachment(_Model):
    """A non-body MIME part: its metadata, checksum and any text read from it."""

    filename: str | None = None
    content_type: str
    detected_type: str | None = None
    size: int
    sha256: str
    disposition: Literal["inline", "attachment"]
    content_id: str | None = None
    url: str | None = None
    text: str | None = None
    contact: Contact | None = None
    part: str | None = None
    """Position in the MIME tree, for example ``1.2``."""


class Provenance(_Model):
    """Origin of the record: the raw message hash, parser version and stages run."""

    raw_sha256: str
    parser_version: str
    raw_mime_url: str | None = None
    stages: list[str] = Field(default_factory=list)


class Defect(_Model):
    """A problem found in the message; parsing went on past it."""

    code: str
    message: str
    part: str | None = None
    """Position in the MIME tree, when the defect belongs to one part."""


class Lead(_Model):
    """A parsed inbound email as a sales-lead record."""

    message_id: str | None = None
    threading: Threading = Field(default_factory=Threading)
    from_: Sender = Field(default_factory=Sender, alias="from")
    to: list[Address] = Field(default_factory=list)
    cc: list[Address] = Field(default_factory=list)
    reply_to: list[Address] = Field(default_factory=list)
    subject: str | None = None
    date: datetime | None = None
    received_at: datetime
    body_text: str = ""
    body_source: BodySource | None = None
    message_text: str = ""
    stripped_text: str = ""
    signature: str | None = None
    quoted_text: str = ""
    body_html: str | None = None
    forwarded: Forwarded | None = None
    extracted: Extracted = Field(default_factory=Extracted)
    classification: Classification = Field(default_factory=Classification)
    channel: Channel = Field(default_factory=Channel)
    attachments: list[Attachment] = Field(default_factory=list)
    language: str | None = None
    """Content-Language of the message, when declared."""
    idempotency_key: str = ""
    provenance: Provenance
    defects: list[Defect] = Field(default_factory=list)
