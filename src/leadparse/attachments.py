"""Attachment stage: list non-body parts with checksums, text, contacts and URLs.

Every part the decode stage did not choose as the body becomes one
:class:`~leadparse.model.Attachment`. The stage also opens what hides more
parts: attached messages (message/rfc822), Outlook's winmail.dat
(application/ms-tnef) and uuencoded blocks pasted into the body text.
"""

from __future__ import annotations

import email.errors
import hashlib
import io
import logging
import mimetypes
import re
import time
import zipfile
from dataclasses import dataclass
from email.message import Message
from typing import Protocol, runtime_checkable
from urllib.parse import unquote

from leadparse._charsets import decode_bytes
from leadparse._filenames import part_filename, sanitize_filename
from leadparse._headers import header_text, parse_addresses, raw_header
from leadparse._html import html_to_text
from leadparse._mime import decode_base64_chunks, part_payload
from leadparse._pdf import extract_pdf_text, is_pdf
from leadparse._phones import region_for_domain
from leadparse._tnef import is_tnef, read_tnef
from leadparse._uuencode import find_uuencoded
from leadparse._vcard import is_vcard, parse_vcard
from leadparse.decode import parse_mime
from leadparse.model import Address, Attachment, Contact, Forwarded
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["AttachmentStore", "attachments_stage", "decode_transfer_encoding"]

logger = logging.getLogger(__name__)


@runtime_checkable
class AttachmentStore(Protocol):
    """Storage for attachment bytes, used when ``Policy.attachment_store`` is set.

    :class:`leadparse.store.FileSystemStore` implements it. A store must accept
    the same bytes twice without error, and must never derive a storage path
    from *filename*, which comes from the sender.
    """

    def put(
        self, data: bytes, *, sha256: str, filename: str | None, content_type: str
    ) -> str:
        """Store *data*, whose SHA-256 hex digest is *sha256*, and return its URL."""
        ...

    def open(self, url: str) -> bytes:
        """Return the bytes stored at a URL that :meth:`put` returned.

        This returns the whole object as ``bytes``, not a file object.
        """
        ...


# Message types whose payload is another message (RFC 2046 section 5.2.1,
# RFC 6532 section 3.5).
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})

# Characters kept from an attached message's body in its summary.
_SUMMARY_BODY_CHARS = 1000

# An outer message whose own text is at most this long only introduces the
# message it forwards as an attachment.
_SHORT_NEW_TEXT_CHARS = 300

# Forward prefixes: English "Fwd"/"Fw", German "WG", French "TR", Spanish "RV",
# Portuguese "Enc", Dutch "Doorst", Swedish "VB", Finnish "VS", Italian "I".
_FORWARD_SUBJECT = re.compile(
    r"^\s*(?:\[\s*)?(?:(?:re|aw|sv|antw)\s*:\s*)*"
    r"(?:fwd?|wg|tr|rv|enc|doorst|vb|vs|i)\s*:",
    re.IGNORECASE,
)

_CID_REFERENCE = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)

# Text attachments read for text; other types are kept as bytes only.
_TEXT_TYPES = frozenset(
    {
        "text/plain",
        "text/csv",
        "text/tab-separated-values",
        "text/markdown",
        "text/calendar",
        "text/rtf",
        "text/xml",
        "application/json",
        "application/xml",
    }
)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

# Magic numbers, checked in order; the first match names the type.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x78\x9f\x3e\x22", "application/ms-tnef"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"\x1f\x8b", "application/gzip"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"MZ", "application/x-msdownload"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
_OOXML_FOLDERS = (
    (
        "word/",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    (
        "ppt/",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
)
# Declared types that name the same format as a detected one.
_SAME_FORMAT = {
    "image/jpeg": {"image/jpg", "image/pjpeg"},
    "application/pdf": {"application/x-pdf", "application/acrobat"},
    "application/zip": {"application/x-zip-compressed", "application/x-zip"},
    "text/vcard": {"text/x-vcard", "text/directory"},
    "application/ms-tnef": {"application/vnd.ms-tnef"},
    "image/png": {"image/x-png"},
    "application/gzip": {"application/x-gzip"},
    "application/x-msdownload": {
        "application/x-msdos-program",
        "application/x-dosexec",
        "application/vnd.microsoft.portable-executable",
    },
    "application/x-ole-storage": {
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.ms-outlook",
        "application/x-msg",
    },
}


def detect_type(data: bytes) -> str | None:
    """Name the file format of *data* from its first bytes, if known."""
    head = data[:16]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            if name == "application/zip":
                return _zip_flavour(data)
            return name
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if is_pdf(data):
        return "application/pdf"
    start = data[:64].lstrip().upper()
    if start.startswith(b"BEGIN:VCARD"):
        return "text/vcard"
    if start.startswith(b"BEGIN:VCALENDAR"):
        return "text/calendar"
    return None


def _zip_flavour(data: bytes) -> str:
    # OOXML files are ZIP archives; the folder names tell Word, Excel and
    # PowerPoint apart (ECMA-376 part 2). Opening reads only the directory.
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, EOFError, OSError):
        return "application/zip"
    if "[Content_Types].xml" in names:
        for folder, name in _OOXML_FOLDERS:
            if any(entry.startswith(folder) for entry in names):
                return name
    return "application/zip"


def _disagreeing_type(declared: str, detected: str | None) -> str | None:
    if detected is None or detected == declared:
        return None
    if declared in _SAME_FORMAT.get(detected, ()):
        return None
    if detected == "application/zip" and declared.startswith(
        ("application/vnd.openxmlformats", "application/vnd.oasis.opendocument")
    ):
        return None
    return detected


# --- transfer decoding ------------------------------------------------------

_UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})


def decode_transfer_encoding(part: Message) -> tuple[bytes, str | None]:
    """Decode a leaf part's Content-Transfer-Encoding; never raises.

    Returns:
        The decoded bytes and a problem description, or ``None`` when the
        payload decoded cleanly. Invalid base64 characters are skipped;
        a payload that is mostly not base64 is kept as sent.
    """
    encoding = str(part.get("content-transfer-encoding", "7bit")).strip().lower()
    payload = part.get_payload(decode=False)
    if not isinstance(payload, str):
        return b"", "part has no leaf payload"
    if encoding == "base64":
        return decode_base64_chunks(part)
    if encoding in _UU_ENCODINGS:
        blocks = find_uuencoded(payload, max_blocks=1)
        if blocks:
            problem = (
                "uuencoded payload has damaged lines"
                if blocks[0].damaged_lines
                else None
            )
            return blocks[0].data, problem
        return payload.encode(
            "utf-8", "surrogateescape"
        ), "uuencoded payload has no begin line; kept as sent"
    return part_payload(part)


# --- the stage --------------------------------------------------------------


@dataclass
class _Source:
    """One attachment's bytes and what the MIME headers declared about them."""

    data: bytes
    content_type: str
    filename: str | None
    disposition: str
    part: str
    content_id: str | None = None
    charset: str | None = None


class _Collector:
    """Build the attachment list of one draft within the policy's limits."""

    def __init__(self, draft: MessageDraft, policy: Policy) -> None:
        self.draft = draft
        self.policy = policy
        self.limits = policy.limits
        self.store: AttachmentStore | None = policy.attachment_store
        self.cids = _referenced_cids(draft)
        self.listed_paths = {path for path, _part in draft.attachment_parts}
        self.count = 0
        self.first_message: tuple[Message, str] | None = None

    # Limits ---------------------------------------------------------------

    def admit(self, path: str) -> bool:
        """Count one more entry, or record why it is not read."""
        if self.count >= self.limits.max_parts:
            self.draft.add_defect(
                "too_many_parts",
                f"message has more than limits.max_parts={self.limits.max_parts} "
                "parts; the rest were not read",
            )
            return False
        if path.count(".") + 1 > self.limits.max_depth:
            self.draft.add_defect(
                "nesting_too_deep",
                f"MIME nesting passes limits.max_depth={self.limits.max_depth}; "
                "deeper parts were not read",
                path,
            )
            return False
        self.count += 1
        return True

    # MIME parts -------------------------------------------------------------

    def add_part(self, path: str, part: Message) -> None:
        """List one MIME part, opening attached messages and winmail.dat."""
        if not self.admit(path):
            return
        content_type = part.get_content_type()
        if content_type in _MESSAGE_TYPES:
            self.add_message(path, part)
            return
        if content_type.startswith("message/") or content_type == "text/rfc822-headers":
            # Report parts (message/delivery-status, rfc822-headers and the
            # like) are one attachment, although compat32 splits some of
            # them into header blocks.
            self.add_report_part(path, part)
            return
        if part.is_multipart():
            # A multipart among the attachment parts (an attached message's
            # body, multipart/appledouble): list its leaves.
            self.count -= 1
            for index, child in enumerate(_children(part), start=1):
                self.add_part(f"{path}.{index}", child)
            return

        data, problem = decode_transfer_encoding(part)
        if problem:
            self.draft.add_defect("payload_decoding", problem, path)
        charset = part.get_content_charset()
        source = _Source(
            data=data,
            content_type=content_type,
            filename=part_filename(part),
            disposition=_disposition(part, self.cids),
            part=path,
            content_id=_content_id(part),
            charset=charset,
        )
        attachment = self.add(source)
        if attachment is not None and is_tnef(content_type, source.filename, data[:4]):
            self.add_tnef(source, attachment)

    def add(self, source: _Source) -> Attachment:
        """Describe, read and store one attachment, and append it to the lead."""
        data = source.data
        digest = hashlib.sha256(data).hexdigest()
        declared = source.content_type
        detected = detect_type(data)
        attachment = Attachment(
            filename=source.filename,
            content_type=declared,
            detected_type=_disagreeing_type(declared, detected),
            size=len(data),
            sha256=digest,
            disposition="inline" if source.disposition == "inline" else "attachment",
            content_id=source.content_id,
            part=source.part,
        )
        self.read_content(source, attachment, detected)
        attachment.url = self.put(data, digest, source.filename, declared, source.part)
        self.draft.lead.attachments.append(attachment)
        return attachment

    def read_content(
        self, source: _Source, attachment: Attachment, detected: str | None
    ) -> None:
        """Fill ``text`` and ``contact`` from the formats that carry them."""
        data = source.data
        limit = self.limits.max_attachment_text_chars
        effective = detected or source.content_type
        if is_vcard(source.content_type, source.filename, data[:64]):
            attachment.contact, text = self.read_vcard(source)
            attachment.text = _bounded(text, limit)
        elif effective == "application/pdf":
            self.read_pdf(source, attachment)
        elif effective in _HTML_TYPES and source.content_type in _HTML_TYPES:
            html = decode_bytes(data[: self.limits.max_html_bytes], source.charset).text
            attachment.text = _bounded(html_to_text(html).text, limit)
        elif source.content_type in _TEXT_TYPES and detected in (None, "text/calendar"):
            text = decode_bytes(data[: limit * 4], source.charset).text
            attachment.text = _bounded(text, limit)

    def read_vcard(self, source: _Source) -> tuple[Contact | None, str]:
        domain = self.draft.lead.from_.domain
        regions = [region_for_domain(domain), self.policy.default_region]
        result = parse_vcard(
            source.data, source.charset, [region for region in regions if region]
        )
        if result.dropped_lines:
            self.draft.add_defect(
                "vcard_invalid_lines",
                f"vCard has {result.dropped_lines} line(s) that are not properties; "
                "dropped them",
                source.part,
            )
        for error in result.errors:
            self.draft.add_defect(
                "vcard_invalid", f"vCard could not be read: {error}", source.part
            )
        return result.contact, result.text

    def read_pdf(self, source: _Source, attachment: Attachment) -> None:
        deadline = min(self.draft.deadline, time.monotonic() + self.limits.max_seconds)
        result = extract_pdf_text(
            source.data,
            max_pages=self.limits.max_pdf_pages,
            max_chars=self.limits.max_attachment_text_chars,
            deadline=deadline,
            max_bytes=self.limits.max_pdf_bytes,
            max_inflated_bytes=self.limits.max_pdf_inflated_bytes,
        )
        for code, message in result.defects:
            self.draft.add_defect(code, message, source.part)
        attachment.text = result.text.replace("\x0c", "\n") or None

    def put(
        self,
        data: bytes,
        digest: str,
        filename: str | None,
        content_type: str,
        path: str | None,
    ) -> str | None:
        """Store bytes when a store is configured; a failing store is a defect."""
        if self.store is None:
            return None
        try:
            return self.store.put(
                data, sha256=digest, filename=filename, content_type=content_type
            )
        except Exception as exc:
            # Any store (disk, object storage) can fail; the lead is still useful.
            logger.warning("attachment store failed on part %s", path, exc_info=True)
            self.draft.add_defect(
                "attachment_store_failed",
                f"storing {content_type} failed: "
                f"{type(exc).__name__}: {str(exc)[:200]}",
                path,
            )
            return None

    # Containers -------------------------------------------------------------

    def add_message(self, path: str, part: Message) -> None:
        """List an attached message with a summary, then its own parts."""
        inner, data = _inner_message(part)
        subject = header_text(inner, "subject")
        filename = part_filename(part)
        if filename is None and subject:
            filename = sanitize_filename(f"{subject}.eml")
        body = _message_body(inner, self.limits.max_html_bytes)
        attachment = self.add(
            _Source(
                data=data,
                content_type=part.get_content_type(),
                filename=filename,
                disposition=_disposition(part, self.cids),
                part=path,
                content_id=_content_id(part),
            )
        )
        attachment.text = _bounded(
            _summary(inner, body), self.limits.max_attachment_text_chars
        )
        if self.first_message is None:
            self.first_message = (inner, body)

        # An attached message whose own body is a message (Content-Type
        # message/rfc822 in its header) wraps that message in turn.
        if inner.get_content_type() in _MESSAGE_TYPES:
            if path.count(".") + 1 > self.limits.max_depth:
                self.admit(f"{path}.1")  # records the depth defect
                return
            self.add_message(f"{path}.1", inner)
            return

        # IMAP numbering (RFC 3501 section 6.4.5): the parts of an attached
        # multipart message are PATH.1, PATH.2 and so on.
        if inner.is_multipart():
            children = _children(inner)
            for index, child in enumerate(children, start=1):
                self.add_inner(f"{path}.{index}", child)

    def add_report_part(self, path: str, part: Message) -> None:
        """List a machine-readable report part as one text attachment."""
        payload = part.get_payload()
        if isinstance(payload, list):
            data = b"\n".join(
                _serialize(child)
                if isinstance(child, Message)
                else str(child).encode("utf-8", "surrogateescape")
                for child in payload
            )
        else:
            text = payload if isinstance(payload, str) else ""
            data = text.encode("utf-8", "surrogateescape")
        self.draft.lead.attachments.append(
            Attachment(
                filename=part_filename(part),
                content_type=part.get_content_type(),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                disposition=_disposition(part, self.cids),
                content_id=_content_id(part),
                text=_bounded(
                    decode_bytes(data, "utf-8").text,
                    self.limits.max_attachment_text_chars,
                ),
                part=path,
            )
        )

    def add_inner(self, path: str, part: Message) -> None:
        """List the non-body parts inside an attached message."""
        if path in self.listed_paths:
            return
        if part.is_multipart() and part.get_content_type() not in _MESSAGE_TYPES:
            if path.count(".") + 1 > self.limits.max_depth:
                self.admit(path)  # records the depth defect
                return
            for index, child in enumerate(_children(part), start=1):
                self.add_inner(f"{path}.{index}", child)
            return
        if _is_inner_body(part):
            return
        self.add_part(path, part)

    def add_tnef(self, source: _Source, attachment: Attachment) -> None:
        """List the files inside winmail.dat, each as its own attachment."""
        content = read_tnef(source.data)
        if content.error:
            self.draft.add_defect(
                "tnef_invalid",
                f"winmail.dat could not be read: {content.error}",
                source.part,
            )
            return
        # NOTE: the recovered body stays on the winmail.dat entry; it does not
        # become lead.body_text when the MIME body is empty.
        if content.body:
            attachment.text = _bounded(
                content.body, self.limits.max_attachment_text_chars
            )
        for index, (name, data) in enumerate(content.files, start=1):
            path = f"{source.part}:tnef:{index}"
            if not self.admit(source.part):
                return
            filename = sanitize_filename(name) if name else None
            guessed = mimetypes.guess_type(filename or "")[0]
            self.add(
                _Source(
                    data=data,
                    content_type=(
                        guessed or detect_type(data) or "application/octet-stream"
                    ),
                    filename=filename,
                    disposition="attachment",
                    part=path,
                )
            )

    def add_uuencoded(self) -> None:
        """List uuencoded blocks found in the body text."""
        text = self.draft.uuencoded_text
        if "begin " not in text:
            return
        blocks = find_uuencoded(text, max_blocks=self.limits.max_parts)
        for index, block in enumerate(blocks, start=1):
            path = f"uuencode:{index}"
            if not self.admit("uuencode"):
                return
            if block.damaged_lines:
                self.draft.add_defect(
                    "uuencode_damaged",
                    f"uuencoded block has {block.damaged_lines} damaged line(s); "
                    "skipped them",
                    path,
                )
            filename = sanitize_filename(block.name)
            guessed = mimetypes.guess_type(filename or "")[0]
            self.add(
                _Source(
                    data=block.data,
                    content_type=guessed
                    or detect_type(block.data)
                    or "application/octet-stream",
                    filename=filename,
                    disposition="attachment",
                    part=path,
                )
            )

    # Provenance and forwards -------------------------------------------------

    def store_raw(self) -> None:
        """Store the raw message and record its URL in the provenance."""
        provenance = self.draft.lead.provenance
        digest = provenance.raw_sha256 or hashlib.sha256(self.draft.raw).hexdigest()
        provenance.raw_mime_url = self.put(
            self.draft.raw, digest, None, "message/rfc822", None
        )

    def unwrap_forward(self) -> None:
        """Unwrap an attached message that the outer mail only passes on."""
        if self.first_message is None or self.draft.lead.forwarded is not None:
            return
        lead = self.draft.lead
        new_text = (lead.stripped_text or lead.message_text or lead.body_text).strip()
        forwarded_subject = bool(_FORWARD_SUBJECT.match(lead.subject or ""))
        if new_text and not (
            forwarded_subject and len(new_text) <= _SHORT_NEW_TEXT_CHARS
        ):
            return
        inner, body = self.first_message
        senders, _problems = parse_addresses(raw_header(inner, "from"))
        sender = (
            Address(name=senders[0].name, email=senders[0].email) if senders else None
        )
        lead.forwarded = Forwarded(
            from_=sender,
            date=header_text(inner, "date"),
            subject=header_text(inner, "subject"),
        )
        if sender is not None and sender.email:
            self.draft.forwarded_sender = sender
        self.draft.forwarded_text = body


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return (
        [child for child in payload if isinstance(child, Message)]
        if isinstance(payload, list)
        else []
    )


def _serialize(message: Message) -> bytes:
    # The stdlib generator re-encodes headers and can raise on what the
    # parser accepted (8-bit text in a charset that cannot hold it, a header
    # that looks like two). The raw header lines and payload are the fallback.
    try:
        return message.as_bytes()
    except (UnicodeError, LookupError, ValueError, email.errors.MessageError):
        pass
    head = "".join(f"{name}: {value}\n" for name, value in message.raw_items())
    payload = getattr(message, "_payload", None)
    if isinstance(payload, list):
        body = b"\n".join(
            _serialize(child) for child in payload if isinstance(child, Message)
        )
    elif isinstance(payload, str):
        body = payload.encode("utf-8", "surrogateescape")
    else:
        body = b""
    return head.encode("utf-8", "surrogateescape") + b"\n" + body


def _inner_message(part: Message) -> tuple[Message, bytes]:
    """Return the message inside a message/rfc822 part and its bytes."""
    children = _children(part)
    if children:
        inner = children[0]
        return inner, _serialize(inner)
    # RFC 2046 section 5.2.1 allows only 7bit, 8bit or binary here, but
    # senders base64-encode attached messages; the parser then leaves a string.
    data, _problem = decode_transfer_encoding(part)
    return parse_mime(data), data


def _is_inner_body(part: Message) -> bool:
    if part.get_content_type() not in ("text/plain", "text/html"):
        return False
    if (
        str(part.get("content-disposition", "")).split(";", 1)[0].strip().lower()
        == "attachment"
    ):
        return False
    return part.get_filename() is None and part.get_param("name") is None


def _message_body(message: Message, max_html_bytes: int) -> str:
    """Return the text body of an attached message: its plain part, else its HTML."""
    html: str | None = None
    for part in message.walk():
        if part.is_multipart() or not _is_inner_body(part):
            continue
        data, _problem = decode_transfer_encoding(part)
        text = decode_bytes(data, part.get_content_charset()).text
        if part.get_content_type() == "text/plain":
            return text.replace("\r\n", "\n").strip()
        if html is None:
            html = text[:max_html_bytes]
    return html_to_text(html).text.strip() if html else ""


def _summary(message: Message, body: str) -> str:
    lines = [
        f"{label}: {value}"
        for label, value in (
            ("From", header_text(message, "from")),
            ("Subject", header_text(message, "subject")),
            ("Date", header_text(message, "date")),
        )
        if value
    ]
    if body:
        lines += ["", body[:_SUMMARY_BODY_CHARS]]
    return "\n".join(lines)


def _bounded(text: str, limit: int) -> str | None:
    text = text.strip()
    return text[:limit] if text else None


def _content_id(part: Message) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    cleaned = str(value).strip().strip("<>").strip()
    return cleaned or None


def _disposition(part: Message, cids: set[str]) -> str:
    # An image the HTML shows through cid: is part of the body, whatever its
    # Content-Disposition declares (Outlook marks such images as attachments).
    content_id = _content_id(part)
    if content_id and content_id.lower() in cids:
        return "inline"
    declared = part.get_content_disposition()
    return "inline" if declared == "inline" else "attachment"


def _referenced_cids(draft: MessageDraft) -> set[str]:
    """Return the Content-IDs that the HTML body references, lower-cased."""
    sources = [candidate.text for candidate in draft.html_parts]
    if draft.lead.body_html:
        sources.append(draft.lead.body_html)
    found: set[str] = set()
    for html in sources:
        for match in _CID_REFERENCE.finditer(html):
            # RFC 2392 section 2: a cid URL is the Content-ID, URL-encoded.
            found.add(unquote(match.group(1)).strip("<>").lower())
    return found


@stage("attachments")
def attachments_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """List attachments with checksums, text and contacts, and store their bytes."""
    collector = _Collector(draft, policy)
    collector.store_raw()
    for path, part in draft.attachment_parts:
        collector.add_part(path, part)
    collector.add_uuencoded()
    collector.unwrap_forward()
    return draft
