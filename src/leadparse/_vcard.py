"""vCard 2.1, 3.0 and 4.0 attachments read into a :class:`Contact` with vobject."""

from __future__ import annotations

import logging
import quopri
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import vobject

from leadparse._phones import region_for_domain, to_e164
from leadparse.model import Contact

__all__ = ["VCardResult", "is_vcard", "parse_vcard"]

logger = logging.getLogger(__name__)

VCARD_TYPES = frozenset({"text/vcard", "text/x-vcard", "text/directory"})

# A content line: optional group (Apple writes "item1."), a name, parameters, colon.
# RFC 6350 section 3.3 and RFC 2425 section 5.8.2.
_CONTENT_LINE = re.compile(r"^(?:[A-Za-z0-9-]+\.)?[A-Za-z0-9-]+(?:;[^:]*)?:", re.ASCII)
_QP_PARAMS = re.compile(r";(?:ENCODING=)?QUOTED-PRINTABLE", re.IGNORECASE)
_CHARSET_PARAM = re.compile(r";CHARSET=([^;:]+)", re.IGNORECASE)


@dataclass
class VCardResult:
    """A parsed vCard: the contact, if any field was read, and problems found."""

    contact: Contact | None = None
    text: str = ""
    """The vCard with quoted-printable values decoded and bad lines dropped."""
    dropped_lines: int = 0
    errors: list[str] = field(default_factory=list)


def is_vcard(content_type: str, filename: str | None, head: bytes) -> bool:
    """Tell whether a part is a vCard by its type, its name or its first bytes."""
    if content_type in VCARD_TYPES:
        return True
    if filename and filename.lower().endswith((".vcf", ".vcard")):
        return True
    return head.lstrip()[:11].upper() == b"BEGIN:VCARD"


def decode_vcard_bytes(data: bytes, charset: str | None) -> str:
    """Decode vCard bytes: the declared charset, else UTF-8, else Windows-1252."""
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, ValueError):
            # ValueError covers UnicodeDecodeError and a charset name the
            # codec registry rejects outright (one containing NUL).
            continue
    return data.decode("cp1252", "replace")


def _decode_qp_value(value: str, charset: str | None) -> str:
    raw = quopri.decodestring(value.encode("utf-8", "replace"))
    text = decode_vcard_bytes(raw, charset)
    # A decoded line break inside a value is written as the vCard 3.0 escape
    # so that vobject sees one content line.
    return text.replace("\r\n", "\\n").replace("\n", "\\n")


def normalize_lines(text: str) -> tuple[str, int]:
    """Join quoted-printable soft line breaks and drop lines that are no property.

    vCard 2.1 writers (Android, older Outlook) end a quoted-printable line with
    ``=`` and start the continuation at column 0, without the leading space
    that folding needs, so a parser would read the continuation as a new
    property. Each such value is decoded here with its CHARSET parameter and
    written back without the ENCODING parameter.

    Returns:
        The cleaned vCard text and the number of lines dropped as unreadable.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    dropped = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip():
            continue
        if line[0] in " \t":
            if out:
                out.append(line)
            else:
                dropped += 1
            continue
        if not _CONTENT_LINE.match(line):
            dropped += 1
            continue

        head, _, value = line.partition(":")
        if not _QP_PARAMS.search(head):
            out.append(line)
            continue

        # RFC 2045 section 6.7 rule 5: "=" at the end of a line is a soft break.
        while value.endswith("=") and index < len(lines):
            value = value[:-1] + lines[index].lstrip(" \t")
            index += 1
        charset_match = _CHARSET_PARAM.search(head)
        charset = charset_match.group(1).strip('"') if charset_match else None
        head = _CHARSET_PARAM.sub("", _QP_PARAMS.sub("", head))
        out.append(f"{head}:{_decode_qp_value(value, charset)}")
    return "\n".join(out) + "\n", dropped


def parse_vcard(
    data: bytes, charset: str | None, regions: Iterable[str]
) -> VCardResult:
    """Read the first vCard in *data* into a :class:`Contact`.

    Args:
        data: the decoded attachment bytes.
        charset: the part's declared charset, if any.
        regions: ISO regions to try, in order, for phone numbers without a
            country code.
    """
    text, dropped = normalize_lines(decode_vcard_bytes(data, charset))
    result = VCardResult(text=text.strip(), dropped_lines=dropped)
    try:
        for component in vobject.readComponents(text, ignoreUnreadable=True):
            if getattr(component, "name", "").upper() != "VCARD":
                continue
            contact = _contact_from_component(component, list(regions))
            if contact is not None:
                result.contact = contact
                break
    except Exception as exc:
        # vobject raises ParseError, but also ValueError, KeyError and
        # AttributeError from its behaviours on malformed values.
        logger.debug("vobject failed on a vCard", exc_info=True)
        result.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    return result


def _text(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        value = " ".join(str(item) for item in value if item)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _contact_from_component(component: Any, regions: list[str]) -> Contact | None:
    contact = Contact()
    raw_phones: list[str] = []
    for child in component.getChildren():
        name = str(getattr(child, "name", "")).upper()
        value = getattr(child, "value", None)
        if name == "FN":
            contact.full_name = contact.full_name or _text(value)
        elif name == "N":
            contact.family_name = contact.family_name or _name_part(value, "family")
            contact.given_name = contact.given_name or _name_part(value, "given")
        elif name == "ORG":
            # ORG is "company;unit;unit" (RFC 6350 section 6.6.4): keep the company.
            first = value[0] if isinstance(value, list | tuple) and value else value
            contact.company = contact.company or _text(first)
        elif name == "TITLE" or (name == "ROLE" and contact.role is None):
            contact.role = _text(value) or contact.role
        elif name == "EMAIL":
            email = _text(value)
            if email:
                email = email.removeprefix("mailto:").lower()
                if "@" in email and email not in contact.emails:
                    contact.emails.append(email)
        elif name == "TEL":
            phone = _text(value)
            if phone:
                raw_phones.append(phone.removeprefix("tel:"))
        elif name == "URL":
            contact.website = contact.website or _text(value)

    if contact.full_name is None and (contact.given_name or contact.family_name):
        parts = [contact.given_name, contact.family_name]
        contact.full_name = " ".join(part for part in parts if part)

    email_regions = [
        region_for_domain(email.rpartition("@")[2]) for email in contact.emails
    ]
    tried = [region for region in [*email_regions, *regions] if region]
    for phone in raw_phones:
        e164 = to_e164(phone, tried)
        if e164 and e164 not in contact.phones:
            contact.phones.append(e164)

    if contact == Contact():
        return None
    return contact


def _name_part(value: Any, which: str) -> str | None:
    # vobject gives a vobject.vcard.Name for VERSION 3.0 and 2.1, but a plain
    # string when the N line did not parse as structured.
    if isinstance(value, str):
        pieces = value.split(";")
        index = 0 if which == "family" else 1
        return _text(pieces[index]) if len(pieces) > index else None
    return _text(getattr(value, which, None))
