"""Decode stage: parse MIME, decode headers and sort parts into body and others."""

from __future__ import annotations

import email.parser
import re
from email import policy as email_policy
from email.message import Message
from typing import Any

from leadparse._headers import (
    header_text,
    parse_addresses,
    parse_date,
    parse_message_ids,
    raw_header,
)
from leadparse._mime import (
    attach_spans,
    cut_large_payloads,
    decode_part_text,
    find_used_boundary,
    repair_duplicate_content_type,
)
from leadparse.model import Sender
from leadparse.pipeline import BodyCandidate, MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["decode_stage", "parse_mime"]

_MAX_BOUNDARY_CHARS = 70
_MBOX_FROM = re.compile(rb"^>?From [^\r\n]*\r?\n")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class _TolerantMessage(Message):
    """A compat32 message whose get_payload() never raises on a bad charset name.

    For 8-bit parts compat32 re-decodes the payload with the declared charset,
    and a name the codec registry rejects (one containing NUL, say) raises
    ValueError from deep inside the stdlib. The stored payload is returned
    instead: text for decode=False, its bytes for decode=True.
    """

    def get_payload(self, i: int | None = None, decode: bool = False) -> Any:
        try:
            return super().get_payload(i, decode)  # type: ignore[call-overload]
        except (ValueError, LookupError):
            payload = self._payload  # type: ignore[attr-defined]
            if decode and isinstance(payload, str):
                return payload.encode("utf-8", "surrogateescape")
            return payload


def parse_mime(raw: bytes) -> Message:
    """Parse raw bytes with the stdlib compat32 policy.

    compat32 records malformed MIME as defects on each part instead of
    raising, and parses faster than ``policy.default`` (figures in
    ``docs/design.md``). Deep nesting can still raise ``RecursionError``,
    which the decode stage catches.
    """
    parser = email.parser.BytesParser(_TolerantMessage, policy=email_policy.compat32)
    return parser.parsebytes(raw)


def _defect_code(defect: object) -> str:
    name = type(defect).__name__.removesuffix("Defect")
    return "mime_" + _CAMEL.sub("_", name).lower()


def _is_attachment(part: Message) -> bool:
    disposition = str(part.get("content-disposition", "")).split(";", 1)[0]
    if disposition.strip().lower() == "attachment":
        return True
    return bool(part.get_param("filename", header="content-disposition")) or bool(
        part.get_param("name")
    )


def _unfolded_boundary(part: Message, text: str) -> str | None:
    """Return the declared boundary with line folds removed, if the body uses it.

    A boundary folded inside its quotes keeps the CRLF in the parsed value, so
    no delimiter line matches. RFC 5322 section 2.2.3 unfolding removes only
    the CRLF; the whitespace after it stays part of the boundary.
    """
    declared = part.get_boundary()
    if not declared or ("\n" not in declared and "\r" not in declared):
        return None
    unfolded = declared.replace("\r", "").replace("\n", "")
    return unfolded if "--" + unfolded in text else None


class _Walker:
    """Walk the MIME tree once, within the policy's part and depth limits."""

    def __init__(self, draft: MessageDraft, policy: Policy) -> None:
        self.draft = draft
        self.limits = policy.limits
        self.parts_seen = 0
        self.stopped_at_parts = False

    def walk(self, part: Message, path: str, depth: int, in_body: bool) -> None:
        self.parts_seen += 1
        if self.parts_seen > self.limits.max_parts:
            if not self.stopped_at_parts:
                self.stopped_at_parts = True
                self.draft.add_defect(
                    "too_many_parts",
                    f"message has more than limits.max_parts={self.limits.max_parts} "
                    "MIME parts; the rest were not read",
                    path,
                )
            return
        if depth > self.limits.max_depth:
            self.draft.add_defect(
                "nesting_too_deep",
                f"MIME nesting passes limits.max_depth={self.limits.max_depth}; "
                "deeper parts were not read",
                path,
            )
            return
        for defect in getattr(part, "defects", []):
            self.draft.add_defect(
                _defect_code(defect), str(defect) or type(defect).__name__, path or None
            )

        maintype = part.get_content_maintype()
        subtype = part.get_content_subtype()
        if maintype == "multipart":
            self._walk_multipart(part, path, depth, in_body, subtype)
        elif maintype == "message" and subtype in (
            "rfc822",
            "global",
            "delivery-status",
            "disposition-notification",
            "feedback-report",
        ):
            self.draft.attachment_parts.append((path or "1", part))
        elif (
            in_body
            and maintype == "text"
            and subtype in ("plain", "html")
            and not _is_attachment(part)
        ):
            self._add_body(part, path or "1", subtype)
        else:
            self.draft.attachment_parts.append((path or "1", part))

    def _children(self, part: Message, path: str) -> list[Message]:
        boundary = part.get_boundary()
        if boundary is not None and not 0 < len(boundary) <= _MAX_BOUNDARY_CHARS:
            self.draft.add_defect(
                "invalid_boundary",
                f"multipart boundary has {len(boundary)} characters; RFC 2046 "
                f"section 5.1.1 allows 1 to {_MAX_BOUNDARY_CHARS}",
                path or None,
            )
        payload = part.get_payload()
        if isinstance(payload, list):
            children = [child for child in payload if isinstance(child, Message)]
            return children + self._epilogue_parts(part, path)
        # No part was found: the boundary is missing or wrong. Look for the
        # boundary the body really uses and parse again with it.
        text = payload if isinstance(payload, str) else ""
        boundary = _unfolded_boundary(part, text) or find_used_boundary(text)
        if boundary:
            header = f'Content-Type: {part.get_content_type()}; boundary="{boundary}"'
            clone = parse_mime(
                header.encode() + b"\n\n" + text.encode("utf-8", "surrogateescape")
            )
            parsed = clone.get_payload()
            children = (
                [c for c in parsed if isinstance(c, Message)]
                if isinstance(parsed, list)
                else []
            )
            if children:
                self.draft.add_defect(
                    "boundary_recovered",
                    f"declared boundary not found; used {boundary[:60]!r} from body",
                    path or None,
                )
                return children
        if text.strip():
            self.draft.add_defect(
                "multipart_without_parts",
                "multipart body has no part boundary; read it as plain text",
                path or None,
            )
            fallback = Message()
            fallback.set_payload(text)
            fallback.set_type("text/plain")
            return [fallback]
        return []

    def _epilogue_parts(self, part: Message, path: str) -> list[Message]:
        """Return parts that follow a premature close delimiter.

        A nested multipart that reuses its parent's boundary closes the parent
        early; the parser then puts the parent's remaining parts, attachments
        included, in the epilogue.
        """
        boundary = part.get_boundary()
        epilogue = part.epilogue
        if not boundary or not epilogue:
            return []
        delimiter = re.compile(rf"^--{re.escape(boundary)}[ \t]*\r?$", re.MULTILINE)
        if not delimiter.search(epilogue):
            return []
        header = f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
        clone = parse_mime(
            header.encode() + epilogue.encode("utf-8", "surrogateescape")
        )
        parsed = clone.get_payload()
        found = (
            [c for c in parsed if isinstance(c, Message)]
            if isinstance(parsed, list)
            else []
        )
        if found:
            self.draft.add_defect(
                "epilogue_parts_recovered",
                f"{len(found)} part(s) followed the close delimiter; read them",
                path or None,
            )
        return found

    def _walk_multipart(
        self, part: Message, path: str, depth: int, in_body: bool, subtype: str
    ) -> None:
        children = self._children(part, path)

        def child_path(index: int) -> str:
            return f"{path}.{index + 1}" if path else str(index + 1)

        if not in_body or subtype == "encrypted":
            for index, child in enumerate(children):
                self.walk(child, child_path(index), depth + 1, False)
            return
        if subtype == "alternative":
            self._walk_alternative(children, child_path, depth)
            return
        if subtype == "related":
            root_index = self._related_root(part, children)
            for index, child in enumerate(children):
                self.walk(child, child_path(index), depth + 1, index == root_index)
            return
        if subtype in ("report", "signed"):
            # RFC 6522 section 3 and RFC 1847 section 2.1: the first part is the
            # human-readable text; the others are machine data.
            for index, child in enumerate(children):
                self.walk(child, child_path(index), depth + 1, index == 0)
            return
        # multipart/mixed and unknown subtypes (RFC 2046 section 5.1.7): every
        # inline text part is shown in order, so each belongs to the body.
        for index, child in enumerate(children):
            self.walk(child, child_path(index), depth + 1, True)

    def _walk_alternative(
        self, children: list[Message], child_path: object, depth: int
    ) -> None:
        assert callable(child_path)
        # RFC 2046 section 5.1.4: alternatives are in increasing order of
        # faithfulness. One text/plain and one HTML rendering are kept for the
        # body; other alternatives (calendar invites, for example) are parts.
        plain_index = html_index = None
        for index, child in enumerate(children):
            ctype = child.get_content_type()
            if (
                ctype == "text/plain"
                and plain_index is None
                and not _is_attachment(child)
            ):
                plain_index = index
            elif ctype == "text/html" and not _is_attachment(child):
                html_index = index
            elif child.get_content_maintype() == "multipart":
                html_index = index if html_index is None else html_index
        for index, child in enumerate(children):
            in_body = index in (plain_index, html_index)
            self.walk(child, child_path(index), depth + 1, in_body)

    @staticmethod
    def _related_root(part: Message, children: list[Message]) -> int:
        start = part.get_param("start")
        if isinstance(start, str) and start:
            wanted = start.strip("<> ")
            for index, child in enumerate(children):
                if str(child.get("content-id", "")).strip("<> ") == wanted:
                    return index
        return 0

    def _add_body(self, part: Message, path: str, subtype: str) -> None:
        decoded, problems = decode_part_text(part)
        for problem in problems:
            code = (
                "charset_fallback"
                if "charset" in problem or "8-bit" in problem or "not valid" in problem
                else "payload_decoding"
            )
            self.draft.add_defect(code, problem, path)
        candidate = BodyCandidate(
            path=path, content_type=f"text/{subtype}", text=decoded.text
        )
        if subtype == "plain":
            self.draft.plain_parts.append(candidate)
        else:
            self.draft.html_parts.append(candidate)


def _bound_header_values(draft: MessageDraft, message: Message, limit: int) -> None:
    # A header value longer than the limit is cut before anything decodes it,
    # so one 10 MB Subject cannot cost hundreds of megabytes downstream.
    headers = getattr(message, "_headers", None)
    if not isinstance(headers, list):
        return
    for index, (name, value) in enumerate(headers):
        if isinstance(value, str) and len(value) > limit:
            headers[index] = (name, value[:limit])
            draft.add_defect(
                "header_too_long",
                f"{name[:40]} header has {len(value)} characters, more than "
                f"limits.max_header_chars={limit}; the rest was dropped",
            )


def _fill_headers(draft: MessageDraft, message: Message, policy: Policy) -> None:
    lead = draft.lead
    _bound_header_values(draft, message, policy.limits.max_header_chars)
    header_count = len(message.keys())
    if header_count > policy.limits.max_headers:
        draft.add_defect(
            "too_many_headers",
            f"header block has {header_count} fields, more than "
            f"limits.max_headers={policy.limits.max_headers}",
        )

    ids = parse_message_ids(raw_header(message, "message-id"))
    lead.message_id = ids[0] if ids else None
    if raw_header(message, "message-id") is not None and not ids:
        draft.add_defect("invalid_message_id", "Message-ID header is empty")

    lead.threading.in_reply_to = next(
        iter(parse_message_ids(raw_header(message, "in-reply-to"))), None
    )
    lead.threading.references = parse_message_ids(raw_header(message, "references"))
    lead.threading.thread_id = (
        lead.threading.references[0]
        if lead.threading.references
        else lead.threading.in_reply_to or lead.message_id
    )

    senders, problems = parse_addresses(raw_header(message, "from"))
    if senders:
        first = senders[0]
        domain = (
            first.email.rsplit("@", 1)[1]
            if first.email and "@" in first.email
            else None
        )
        lead.from_ = Sender(name=first.name, email=first.email, domain=domain)
    elif raw_header(message, "from") is None:
        draft.add_defect("missing_from", "message has no From header")
    for problem in problems:
        draft.add_defect("invalid_address", f"From has an invalid address: {problem!r}")

    for name, target in (("to", lead.to), ("cc", lead.cc), ("reply-to", lead.reply_to)):
        addresses, problems = parse_addresses(
            ", ".join(_all_raw(message, name)) or None
        )
        target.extend(addresses)
        for problem in problems:
            draft.add_defect(
                "invalid_address", f"{name.title()} has an invalid address: {problem!r}"
            )

    lead.subject = header_text(message, "subject")

    date, date_problem = parse_date(raw_header(message, "date"))
    lead.date = date
    if date_problem:
        draft.add_defect("invalid_date", date_problem)

    language = header_text(message, "content-language")
    lead.language = language.split(",")[0].strip() or None if language else None


def _all_raw(message: Message, name: str) -> list[str]:
    from leadparse._headers import raw_headers

    return raw_headers(message, name)


@stage("decode")
def decode_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Parse the MIME tree, fill header fields and collect body and other parts."""
    raw = draft.raw
    mbox = _MBOX_FROM.match(raw)
    if mbox:
        raw = raw[mbox.end() :]

    too_large = len(raw) > policy.limits.max_message_bytes
    headers_only = too_large
    if too_large:
        draft.add_defect(
            "message_too_large",
            f"message is {len(raw)} bytes, more than limits.max_message_bytes="
            f"{policy.limits.max_message_bytes}; only the headers were parsed",
        )
        message = email.parser.BytesHeaderParser(
            _TolerantMessage, policy=email_policy.compat32
        ).parsebytes(raw)
    else:
        raw, repaired = repair_duplicate_content_type(raw)
        if repaired:
            draft.add_defect(
                "duplicate_content_type",
                "message has several Content-Type headers; kept the one whose "
                "boundary occurs in the body",
            )
        parse_input, spans = cut_large_payloads(raw)
        try:
            message = parse_mime(parse_input)
            attach_spans(message, spans)
        except RecursionError:
            draft.add_defect(
                "nesting_too_deep",
                "MIME nesting too deep for the parser; only the headers were parsed",
            )
            message = email.parser.BytesHeaderParser(
                _TolerantMessage, policy=email_policy.compat32
            ).parsebytes(raw)
            headers_only = True

    draft.message = message
    _fill_headers(draft, message, policy)
    if not headers_only:
        _Walker(draft, policy).walk(message, "", 0, True)
    return draft
