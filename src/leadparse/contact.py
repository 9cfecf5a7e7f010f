"""Contact stage: merge who the lead is from every source, best first."""

from __future__ import annotations

import re

from leadparse.model import Contact, Extracted
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["contact_stage", "split_name"]

_NAME_FIELDS = ("full_name", "company", "role", "website")
_ROLE_ADDRESS = re.compile(
    r"^(?:no-?reply|do-?not-?reply|mailer-daemon|postmaster|forms?|webforms?|"
    r"notifications?|wordpress|info|sales|contact|support|hello|team)\b",
    re.IGNORECASE,
)


def split_name(full_name: str | None) -> tuple[str | None, str | None]:
    """Split a display name into first and last name.

    "Last, First" is read in that order; otherwise the last word is the last
    name. A single word is a first name.
    """
    if not full_name:
        return None, None
    name = " ".join(full_name.split())
    if "," in name:
        last, _, first = name.partition(",")
        return first.strip() or None, last.strip() or None
    words = name.split(" ")
    if len(words) == 1:
        return words[0], None
    return " ".join(words[:-1]), words[-1]


def _vcard_contacts(draft: MessageDraft) -> list[Contact]:
    return [item.contact for item in draft.lead.attachments if item.contact is not None]


def _set(extracted: Extracted, field: str, value: str | None, source: str) -> None:
    if value and getattr(extracted, field) is None:
        setattr(extracted, field, value)
        extracted.sources[field] = source


def _merge_contact(extracted: Extracted, contact: Contact, source: str) -> None:
    for field in _NAME_FIELDS:
        _set(extracted, field, getattr(contact, field), source)
    if contact.given_name or contact.family_name:
        _set(extracted, "first_name", contact.given_name, source)
        _set(extracted, "last_name", contact.family_name, source)
    if contact.emails:
        _set(extracted, "email", contact.emails[0].lower(), source)
    for phone in contact.phones:
        if phone not in extracted.phones:
            extracted.phones.append(phone)
            extracted.sources.setdefault("phones", source)


@stage("contact")
def contact_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Fill ``extracted`` contact fields from form, forward, signature, vCard and
    headers, in that order of trust; each field records its source."""
    lead = draft.lead
    extracted = lead.extracted

    if draft.form_contact is not None:
        _merge_contact(extracted, draft.form_contact, "form")
        if not extracted.email and lead.reply_to and lead.reply_to[0].email:
            _set(extracted, "email", lead.reply_to[0].email, "header")

    forwarded = draft.forwarded_sender
    if forwarded is not None and draft.form_contact is None:
        _set(extracted, "email", forwarded.email, "forwarded")
        _set(extracted, "full_name", forwarded.name, "forwarded")

    if draft.signature_contact is not None:
        source = "forwarded" if forwarded is not None else "signature"
        signature = draft.signature_contact
        # The header's display name is the fuller form of a signed first name.
        if (
            forwarded is None
            and signature.full_name
            and lead.from_.name
            and lead.from_.name.lower().startswith(signature.full_name.lower())
        ):
            signature = signature.model_copy(
                update={"full_name": None, "given_name": None, "family_name": None}
            )
        _merge_contact(extracted, signature, source)

    for contact in _vcard_contacts(draft):
        _merge_contact(extracted, contact, "vcard")

    sender = lead.from_
    automated_sender = bool(sender.email and _ROLE_ADDRESS.match(sender.email))
    if not (draft.form_contact is not None and automated_sender):
        _set(extracted, "email", sender.email, "header")
        if extracted.email == sender.email:
            _set(extracted, "full_name", sender.name, "header")

    if extracted.full_name and not (extracted.first_name or extracted.last_name):
        first, last = split_name(extracted.full_name)
        source = extracted.sources.get("full_name", "header")
        _set(extracted, "first_name", first, source)
        _set(extracted, "last_name", last, source)
    return draft
