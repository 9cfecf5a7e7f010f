"""Quote stage: split the sender's new text from quoted history.

The stage works line by line on ``lead.body_text`` and recognizes:

* lines quoted with ``>`` (RFC 3676 section 4.5). They are removed wherever
  they are, and new text written between quoted blocks is kept.
* attribution lines ("On <date>, <name> wrote:") in the languages listed in
  :mod:`leadparse._quote_patterns`, also when wrapped over two or three lines.
  An attribution directly above ``>`` lines belongs to that quoted block.
  Otherwise everything from the attribution down is quoted history, because
  Outlook and Apple Mail do not prefix the old message with ``>``.
* "Original Message" separators, Outlook's rule line above a header block,
  and Outlook header blocks with no separator at all (a From-like line with
  at least two of Sent, Date, To, Cc and Subject close below it). Everything
  from there down is quoted history.
* the offset where HTML quote markup began, for HTML bodies.

A forwarded message is not a quote: it is the lead. The forward marker, the
forwarded header block and the forwarded body stay in ``message_text``, and
only quotes inside the forwarded body are removed.

Every removed line goes to ``quoted_text``, so no text is lost. When the
whole body would be removed, the stage keeps it as new text and records a
``quote_detection_ambiguous`` defect.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.utils import parseaddr

from leadparse._quote_patterns import (
    ATTRIBUTION_ADDRESS_END,
    ATTRIBUTION_DATE,
    ATTRIBUTION_STARTER,
    ATTRIBUTION_VERB_END,
    ATTRIBUTION_VERB_MID,
    FORWARD_MARKER,
    FORWARD_SUBJECT,
    HEADER_KEYS,
    INLINE_HEADER_FIELD,
    MAX_LINE_CHARS,
    ORIGINAL_SEPARATOR,
    QUOTED_LINE,
    RULE_LINE,
    header_field,
)
from leadparse.model import Address, Forwarded
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = [
    "FORWARD_BODY_START_KEY",
    "FORWARD_START_KEY",
    "QuoteSplit",
    "is_forward_subject",
    "quotes_stage",
    "split_quotes",
]

logger = logging.getLogger(__name__)

FORWARD_START_KEY = "leadparse.forward_start"
"""``draft.extras`` key: offset in ``message_text`` where the forward begins."""

FORWARD_BODY_START_KEY = "leadparse.forward_body_start"
"""``draft.extras`` key: offset in ``message_text`` of the forwarded body."""

_MAX_ATTRIBUTION_LINES = 3
_HEADER_WINDOW = 8
"""Lines after a header-like line searched for the rest of its block."""

_MAX_FORWARD_HEADER_LINES = 16
_MAILTO_BRACKET = re.compile(r"\[mailto:([^\]\s]{1,200})\]", re.IGNORECASE)
_MAILTO_ANGLE = re.compile(r"<mailto:[^>\s]{1,200}>", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+'-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")


@dataclass(frozen=True)
class QuoteSplit:
    """The result of :func:`split_quotes`.

    Attributes:
        message_text: the new text, with any signature and forwarded message.
        quoted_text: every removed line, in order.
        forwarded: the forwarded message's header block, for a forward.
        forwarded_text: the forwarded body without its own quotes.
        forward_start: offset in ``message_text`` of the forward marker or
            forwarded header block.
        forward_body_start: offset in ``message_text`` of the forwarded body.
        ambiguous: the whole body looked quoted, so all of it was kept.
    """

    message_text: str
    quoted_text: str = ""
    forwarded: Forwarded | None = None
    forwarded_text: str | None = None
    forward_start: int | None = None
    forward_body_start: int | None = None
    ambiguous: bool = False


@dataclass(frozen=True)
class _ForwardSpan:
    start: int
    """First line of the marker or header block."""
    body_start: int
    """First line of the forwarded body."""
    header: Forwarded | None


def is_forward_subject(subject: str | None) -> bool:
    """Return whether *subject* starts with a forward prefix such as ``Fwd:``."""
    return bool(subject) and FORWARD_SUBJECT.match(subject or "") is not None


def split_quotes(
    text: str,
    *,
    subject: str | None = None,
    html_quote_start: int | None = None,
    max_chars: int | None = None,
) -> QuoteSplit:
    """Split *text* into the sender's new text and the quoted history.

    Args:
        text: the message body as text with ``\\n`` line endings.
        subject: the message subject. With a forward prefix, a header block
            or "Original Message" separator marks a forward, not a quote.
        html_quote_start: offset in *text* where HTML quote markup began.
        max_chars: characters of *text* scanned. Text past the limit is
            quoted when a cut was found and new text otherwise.

    Returns:
        The split. ``message_text`` is *text* unchanged when nothing is quoted.
    """
    return _split(text, subject, html_quote_start, max_chars, allow_forward=True)


def _split(
    text: str,
    subject: str | None,
    html_quote_start: int | None,
    max_chars: int | None,
    *,
    allow_forward: bool,
) -> QuoteSplit:
    head, tail = text, ""
    if max_chars is not None and len(text) > max_chars:
        head, tail = text[:max_chars], text[max_chars:]

    lines = head.split("\n")
    html_line = _line_of_offset(head, html_quote_start)
    forward_subject = allow_forward and is_forward_subject(subject)

    keep = [True] * len(lines)
    cut: int | None = None
    forward: _ForwardSpan | None = None
    index = 0
    while index < len(lines):
        if html_line is not None and index >= html_line:
            # Gmail and Outlook wrap forwarded messages in the same markup as
            # quotes, so a forward right at the markup is kept.
            if allow_forward:
                start = _next_filled(lines, index)
                forward = _forward_at(lines, start, forward_subject)
            if forward is None:
                cut = index
            break

        line = lines[index]
        if QUOTED_LINE.match(line):
            index = _drop_quoted_block(lines, index, keep)
            continue

        span = _attribution_span(lines, index)
        if span:
            after = _next_filled(lines, index + span)
            if after < len(lines) and QUOTED_LINE.match(lines[after]):
                for position in range(index, after):
                    keep[position] = False
                index = after
                continue
            cut = index
            break

        if allow_forward:
            forward = _forward_at(lines, index, forward_subject)
            if forward is not None:
                break

        if _starts_history(lines, index):
            cut = index
            break
        index += 1

    if forward is not None:
        return _assemble_forward(lines, keep, forward, tail, max_chars, text)

    if cut is not None:
        for position in range(cut, len(lines)):
            keep[position] = False

    if all(keep):
        return QuoteSplit(message_text=text)

    message_text, quoted_text = _assemble(lines, keep)
    if cut is None:
        message_text += tail
    else:
        quoted_text += tail

    if not message_text.strip() and text.strip():
        return QuoteSplit(message_text=text, ambiguous=True)
    return QuoteSplit(message_text=message_text, quoted_text=quoted_text)


def _line_of_offset(text: str, offset: int | None) -> int | None:
    if offset is None or offset < 0 or offset >= len(text):
        return None
    line = text.count("\n", 0, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    # Markup that begins mid-line leaves new text before it on that line.
    if text[line_start:offset].strip():
        line += 1
    return line


def _next_filled(lines: list[str], index: int) -> int:
    while index < len(lines) and not lines[index].strip():
        index += 1
    return index


def _drop_quoted_block(lines: list[str], index: int, keep: list[bool]) -> int:
    """Mark a run of ``>`` lines, with blank lines inside it, as removed."""
    while index < len(lines):
        if QUOTED_LINE.match(lines[index]):
            keep[index] = False
            index += 1
            continue
        after = _next_filled(lines, index)
        if after > index and after < len(lines) and QUOTED_LINE.match(lines[after]):
            for position in range(index, after):
                keep[position] = False
            index = after
            continue
        break
    return index


def _is_attribution(text: str) -> bool:
    text = text.strip()
    if not text or text[-1] not in ":：":
        return False
    if ATTRIBUTION_ADDRESS_END.search(text):
        return True
    if not ATTRIBUTION_VERB_END.search(text) and not ATTRIBUTION_VERB_MID.search(text):
        return False
    if ATTRIBUTION_STARTER.match(text):
        return True
    return ATTRIBUTION_DATE.search(text) is not None


def _opens_attribution(line: str) -> bool:
    """Return whether *line* may be the first line of a wrapped attribution."""
    line = line[:MAX_LINE_CHARS]
    return bool(ATTRIBUTION_STARTER.match(line) or ATTRIBUTION_DATE.search(line))


def _join(lines: list[str], start: int, stop: int) -> str:
    return " ".join(
        lines[position][:MAX_LINE_CHARS].strip() for position in range(start, stop)
    )


def _attribution_span(lines: list[str], index: int) -> int:
    """Return how many lines the attribution starting at *index* spans, or 0."""
    if not lines[index].strip():
        return 0
    for count in range(1, _MAX_ATTRIBUTION_LINES + 1):
        last = index + count - 1
        if last >= len(lines):
            return 0
        line = lines[last]
        if count > 1 and (not line.strip() or QUOTED_LINE.match(line)):
            return 0
        if not line.rstrip().endswith((":", "：")):
            continue
        if not _is_attribution(_join(lines, index, last + 1)):
            continue
        if count > 1 and not _opens_attribution(lines[index]):
            return 0
        # Prose above a one-line attribution must not be joined into it: when
        # a lower line opens an attribution by itself ("Meeting at 10:30 is
        # fine" above "On Tue, Ana wrote:"), the scan finds it there.
        for later in range(index + 1, last + 1):
            opens = (
                ATTRIBUTION_STARTER.match(lines[later]) or lines[later][:1].isdigit()
            )
            if opens and _is_attribution(_join(lines, later, last + 1)):
                return 0
        return count
    return 0


def _header_block_at(lines: list[str], index: int) -> bool:
    """Return whether an Outlook-style header block starts at *index*.

    The block needs a From-like field within its first four lines and at least
    two other fields (date, to, cc, subject) within ``_HEADER_WINDOW`` lines.
    """
    # NOTE: a typed list such as "From: ...", "Date: ...", "Subject: ..." in
    # the sender's own text also matches, and the text below it is then
    # moved to quoted_text.
    first = header_field(lines[index])
    if first is None:
        return False
    if first[0] == "from" and _inline_header_fields(lines[index]) >= 2:
        return True

    fields: set[str] = set()
    from_seen = False
    stop = min(len(lines), index + _HEADER_WINDOW + 1)
    for position in range(index, stop):
        found = header_field(lines[position])
        if found is None:
            continue
        if found[0] == "from" and position - index < 4:
            from_seen = True
        fields.add(found[0])
    fields.discard("from")
    return from_seen and len(fields) >= 2


def _inline_header_fields(line: str) -> int:
    """Count the distinct non-From fields written inline on one line."""
    names = {
        HEADER_KEYS[match.group("key").casefold()]
        for match in INLINE_HEADER_FIELD.finditer(line[:MAX_LINE_CHARS])
    }
    names.discard("from")
    return len(names)


def _starts_history(lines: list[str], index: int) -> bool:
    """Return whether quoted history (not a forward) starts at *index*."""
    line = lines[index][:MAX_LINE_CHARS]
    if ORIGINAL_SEPARATOR.match(line):
        return True
    if RULE_LINE.match(line):
        after = _next_filled(lines, index + 1)
        return (
            after <= index + 3 and after < len(lines) and _header_block_at(lines, after)
        )
    return _header_block_at(lines, index)


def _forward_at(
    lines: list[str], index: int, forward_subject: bool
) -> _ForwardSpan | None:
    """Return the forward that starts at *index*, if one does."""
    if index >= len(lines):
        return None
    line = lines[index][:MAX_LINE_CHARS]
    header_start: int | None = None
    separator = forward_subject and ORIGINAL_SEPARATOR.match(line) is not None
    if separator or FORWARD_MARKER.match(line):
        header_start = _next_filled(lines, index + 1)
    elif forward_subject and RULE_LINE.match(line):
        after = _next_filled(lines, index + 1)
        if after <= index + 3 and after < len(lines) and _header_block_at(lines, after):
            header_start = after
    elif forward_subject and _header_block_at(lines, index):
        header_start = index
    if header_start is None:
        return None

    header, body_start = _read_forward_header(lines, header_start)
    return _ForwardSpan(start=index, body_start=body_start, header=header)


def _read_forward_header(lines: list[str], start: int) -> tuple[Forwarded | None, int]:
    """Parse the forwarded header block at *start*; return it and the body line."""
    values: dict[str, str] = {}
    position = start
    last_field: str | None = None
    while position < len(lines) and position - start < _MAX_FORWARD_HEADER_LINES:
        line = lines[position]
        found = header_field(line)
        if found is not None:
            field, value = found
            values.setdefault(field, value)
            last_field = field
            position += 1
            continue
        if not line.strip():
            after = _next_filled(lines, position)
            if values and after < len(lines) and header_field(lines[after]):
                position = after
                continue
            break
        # A wrapped recipient list continues the field above it.
        if last_field in ("to", "cc") and line[:1] in (" ", "\t"):
            position += 1
            continue
        break

    body_start = _next_filled(lines, position)
    if not values:
        return None, body_start
    sender = _parse_address(values["from"]) if values.get("from") else None
    forwarded = Forwarded(
        from_=sender,
        date=values.get("date") or None,
        subject=values.get("subject") or None,
    )
    return forwarded, body_start


def _parse_address(value: str) -> Address:
    value = value.replace("*", "").strip()
    value = _MAILTO_ANGLE.sub("", value)
    value = _MAILTO_BRACKET.sub(r"<\1>", value)
    if "@" not in value:
        return Address(name=value.strip(" \"'") or None, email=None)

    name, email = parseaddr(value)
    if "@" not in email:
        found = _EMAIL.search(value)
        email = found.group(0) if found else ""
        name = value[: found.start()].strip(" <[\"'") if found else value
    name = name.strip().strip("\"'").strip()
    if name.lower() == email.lower():
        name = ""
    return Address(name=name or None, email=email.lower() or None)


def _assemble(lines: list[str], keep: list[bool]) -> tuple[str, str]:
    """Join kept and removed lines, moving blank lines at cuts to the removed side.

    Removing a block from between two paragraphs would otherwise leave two
    blank lines, and removing the end of the text would leave trailing ones.
    """
    keep = list(keep)
    count = len(lines)
    for index in range(count):
        if not keep[index] or lines[index].strip():
            continue
        previous = index - 1
        if previous < 0 or keep[previous]:
            continue
        # A blank kept line right after a removed run: drop it when the kept
        # text before the run already ends in a blank line, or is empty.
        before = previous
        while before >= 0 and not keep[before]:
            before -= 1
        if before < 0 or not lines[before].strip():
            keep[index] = False
            # Following blank lines go too, so the kept text starts cleanly.
            after = index + 1
            while after < count and keep[after] and not lines[after].strip():
                keep[after] = False
                after += 1

    last = count - 1
    while last >= 0 and (not keep[last] or not lines[last].strip()):
        keep[last] = False
        last -= 1

    kept = [line for line, flag in zip(lines, keep, strict=True) if flag]
    removed = [line for line, flag in zip(lines, keep, strict=True) if not flag]
    return "\n".join(kept), "\n".join(removed).strip("\n")


def _assemble_forward(
    lines: list[str],
    keep: list[bool],
    forward: _ForwardSpan,
    tail: str,
    max_chars: int | None,
    text: str,
) -> QuoteSplit:
    before_lines = lines[: forward.start]
    before_text, before_quoted = ("", "")
    if any(line.strip() for line in before_lines):
        before_keep = keep[: forward.start]
        if all(before_keep):
            before_text = "\n".join(before_lines).strip("\n").rstrip()
        else:
            before_text, before_quoted = _assemble(before_lines, before_keep)

    header_text = "\n".join(lines[forward.start : forward.body_start]).strip("\n")
    body = "\n".join(lines[forward.body_start :]) + tail
    budget = None if max_chars is None else max(max_chars - len(text) + len(body), 0)
    inner = _split(body, None, None, budget, allow_forward=False)

    parts = [part for part in (before_text.rstrip(), header_text.rstrip()) if part]
    prefix = "\n\n".join(parts)
    forward_start = len(before_text.rstrip()) + 2 if before_text.strip() else 0
    body_start = len(prefix) + 2 if inner.message_text.strip() else len(prefix)
    message_text = (
        prefix + "\n\n" + inner.message_text if inner.message_text.strip() else prefix
    )
    quoted = "\n".join(part for part in (before_quoted, inner.quoted_text) if part)
    return QuoteSplit(
        message_text=message_text,
        quoted_text=quoted,
        forwarded=forward.header,
        forwarded_text=inner.message_text.strip("\n"),
        forward_start=forward_start,
        forward_body_start=body_start,
    )


@stage("quotes")
def quotes_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Set ``message_text``, ``quoted_text`` and the forwarded message's details.

    ``html_quote_start`` is honoured only for HTML bodies, because the offset
    comes from HTML markup.
    """
    lead = draft.lead
    html_start = draft.html_quote_start if lead.body_source == "text/html" else None
    result = split_quotes(
        lead.body_text,
        subject=lead.subject,
        html_quote_start=html_start,
        max_chars=policy.limits.max_text_chars,
    )
    lead.message_text = result.message_text
    lead.quoted_text = result.quoted_text
    if len(lead.body_text) > policy.limits.max_text_chars:
        draft.add_defect(
            "text_limit_exceeded",
            f"quote detection scanned the first {policy.limits.max_text_chars} "
            "characters of the body (limits.max_text_chars)",
        )
    if result.ambiguous:
        draft.add_defect(
            "quote_detection_ambiguous",
            "the whole body looked like quoted history, so all of it was kept "
            "as the sender's text",
        )
    if result.forwarded_text is not None:
        lead.forwarded = result.forwarded
        draft.forwarded_text = result.forwarded_text
        if result.forwarded is not None and result.forwarded.from_ is not None:
            draft.forwarded_sender = result.forwarded.from_
        draft.extras[FORWARD_START_KEY] = result.forward_start
        draft.extras[FORWARD_BODY_START_KEY] = result.forward_body_start
    return draft
