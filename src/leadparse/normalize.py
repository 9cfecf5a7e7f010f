"""Normalize stage: canonical addresses, E.164 phones, company and website."""

from __future__ import annotations

import re

from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["company_from_domain", "normalize_stage"]

# Second-level labels under which companies register (example.co.uk).
_SECOND_LEVEL = frozenset(
    {
        "co",
        "com",
        "net",
        "org",
        "gov",
        "ac",
        "edu",
        "ltd",
        "plc",
        "or",
        "ne",
        "go",
        "gob",
        "gouv",
        "nom",
        "biz",
        "info",
        "mil",
        "sch",
    }
)
_WEBSITE = re.compile(r"^(?:https?://)?(?:www\.)?", re.IGNORECASE)


# RFC 2606 and RFC 6761 reserve these names for documentation and testing.
_RESERVED_SECOND_LEVEL = frozenset({"example.com", "example.net", "example.org"})
_RESERVED_TLDS = frozenset({"example", "test", "invalid", "localhost", "local"})


def _is_reserved(labels: list[str]) -> bool:
    return (
        labels[-1] in _RESERVED_TLDS or ".".join(labels[-2:]) in _RESERVED_SECOND_LEVEL
    )


def company_from_domain(domain: str, free_mail: frozenset[str]) -> str | None:
    """Guess a company name from a mail domain, or ``None`` for free mail.

    The registrable label is used ("mail.northwind-traders.co.uk" gives
    "Northwind Traders"): hyphens become spaces and each word is capitalized.
    """
    domain = domain.lower().strip(".")
    labels = domain.split(".")
    if len(labels) < 2 or domain in free_mail or _is_reserved(labels):
        return None
    if any(domain.endswith("." + free) for free in free_mail):
        return None
    index = len(labels) - 2
    if index > 0 and labels[index] in _SECOND_LEVEL and len(labels[-1]) == 2:
        index -= 1
    label = labels[index]
    if not label or label.isdigit():
        return None
    return " ".join(word.capitalize() for word in re.split(r"[-_]+", label) if word)


@stage("normalize")
def normalize_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Lower-case addresses, order phones, fill company from a business domain."""
    extracted = draft.lead.extracted
    if extracted.email:
        extracted.email = extracted.email.strip().lower()
    extracted.phones = list(dict.fromkeys(extracted.phones))
    if extracted.phones and extracted.phone_e164 is None:
        extracted.phone_e164 = extracted.phones[0]
        extracted.sources.setdefault(
            "phone_e164", extracted.sources.get("phones", "signature")
        )
    if extracted.website:
        extracted.website = extracted.website.strip().rstrip("/.,;")
        if not extracted.website.lower().startswith(("http://", "https://")):
            extracted.website = "https://" + extracted.website

    domain = (
        extracted.email.rsplit("@", 1)[1]
        if extracted.email and "@" in extracted.email
        else None
    )
    if extracted.company is None and domain:
        company = company_from_domain(domain, policy.free_mail_domains)
        if company:
            extracted.company = company
            extracted.sources["company"] = "domain"
    return draft
