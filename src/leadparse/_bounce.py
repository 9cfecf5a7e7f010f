"""Delivery-failure parsing: RFC 3464 delivery-status reports and plain-text bounces.

The entry point is :func:`read_bounce`. It reads the machine-readable
``message/delivery-status`` part when there is one. Otherwise it scans a
bounded prefix of the notification text for SMTP replies, enhanced status
codes (RFC 3463) and the failed recipient. The patterns cover the styles of
Exchange, Lotus Domino, qmail, Postfix, Exim and Sendmail.

Hard and soft follow what a sender should do next. A hard bounce means the
address itself is gone (unknown user, unknown or unroutable domain, address
moved, domain that accepts no mail), so the address should not be mailed
again. Every other failure (full mailbox, disabled account, spam or policy
rejection, expiry, network trouble) is soft, even with a 5.x.x status,
because mail to the same address may succeed later or from another sender.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Literal

from leadparse._caseless import FoldedText, caseless
from leadparse.model import Bounce

__all__ = [
    "SCAN_CHARS",
    "BounceReport",
    "bounce_type",
    "decode_bytes",
    "message_text",
    "read_bounce",
    "read_delivery_status",
    "read_ses_notification",
]

logger = logging.getLogger(__name__)

SCAN_CHARS = 64 * 1024
"""Characters of notification text scanned for bounce facts."""

_MAX_PARTS = 200
_MAX_DSN_FIELDS = 200

# RFC 3463 enhanced status code: class.subject.detail. The look-arounds keep
# version numbers and IP addresses ("2.5.1.3", "10.5.1.1") from matching.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")

# An SMTP reply code followed by an enhanced status code, as in
# "550 5.1.1 <x@example.org>: unknown" or "550-5.1.1 The email account".
_REPLY_WITH_STATUS = re.compile(
    r"(?<![\d.])([45]\d\d)[ -]['\"#]?([45])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)"
)

# A bare SMTP reply code after wording that reports a server reply.
_REPLY_CODE = re.compile(
    r"(?:said|replied|response|error|reply|returned|failed|reason|deliver)"
    r"[^\n\d]{0,40}?(?<!\d)([45][0-5]\d)(?![\d.])",
    re.IGNORECASE,
)

_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")

# Lines that name the failed recipient, in the styles of common MTAs.
_RECIPIENT_LINES = (
    # "Recipient: x@y", "Final-Recipient: rfc822; x@y", "Original-Recipient: ..."
    re.compile(
        r"^[ \t]*(?:final-|original-)?recipient(?:\s+address)?(?:\(s\))?[ \t]*:"
        r"[ \t]*(?:rfc822;)?[ \t]*<?([^\s<>;]+@[^\s<>;]+)>?",
        re.IGNORECASE | re.MULTILINE,
    ),
    # qmail and Postfix: "<x@y>:" at the start of a line.
    re.compile(r"^[ \t]*<([^\s<>]+@[^\s<>]+)>[ \t]*:", re.MULTILINE),
    # Exim, Gmail, Domino: the address alone on an indented line.
    re.compile(r"^[ \t]+<?([^\s<>]+@[^\s<>]+?)>?[ \t]*$", re.MULTILINE),
)

# Markers that start the returned copy of the original message. Addresses
# after them belong to the original message, not to the failure report.
_ORIGINAL_MARKER = re.compile(
    r"^.{0,20}(?:original message|copy of (?:the |your )?message|"
    r"returned message|message headers follow|undelivered message|"
    r"content-type:\s*message/rfc822|text/rfc822-headers|"
    r"below this line|unsent message|original headers|"
    r"headers of the original|your message reads)",
    re.IGNORECASE | re.MULTILINE,
)

_MESSAGE_ID_LINE = re.compile(
    r"^[ \t>]*message-id:[ \t]*<?([^\s<>]{1,250}?@[^\s<>]{1,250}?)>?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)

# Phrases mapped to a failure reason, checked in order against the
# diagnostic and report text. Each reason is hard or soft (see module docs).
_REASON_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "mailbox_full",
        re.compile(
            r"mailbox (?:is )?full|over ?quota|quota exceeded|exceeded (?:the |its )?"
            r"(?:storage|quota)|insufficient (?:system )?storage|mailbox size limit|"
            r"not enough (?:disk )?space|user is over|disk quota|mailfolder is full|"
            r"full mailbox|mailbox has exceeded|storage quota|"
            r"メールボックスが一杯|容量",
            re.IGNORECASE,
        ),
    ),
    (
        "suspended",
        re.compile(
            r"account (?:has been |is )?(?:disabled|suspended|inactive|deactivated|"
            r"locked|blocked)|mailbox (?:is )?(?:disabled|inactive|suspended)|"
            r"account (?:is )?expired|inactive (?:user|account|mailbox)|"
            r"disabled (?:user|account|mailbox)|suspended (?:user|account)|"
            r"(?:account|mailbox) (?:that you tried to reach )?is (?:disabled|"
            r"inactive|suspended)",
            re.IGNORECASE,
        ),
    ),
    (
        # Refusals about the sender, the content or the sending rate; these
        # outrank address wording such as "Recipient address rejected".
        "policy",
        re.compile(
            r"black ?list|block ?list|spamhaus|\bspam\b|too many (?:recipients|"
            r"messages|connections)|rate limit|reputation|not accepting "
            r"connections|relay access denied|message (?:is )?too (?:big|large)|"
            r"size limit|mailer error|internal system error|on hold|"
            r"sender address rejected|virus",
            re.IGNORECASE,
        ),
    ),
    (
        "host_unknown",
        re.compile(
            r"host (?:or domain name )?not found|domain not found|unknown host|"
            r"no such domain|host unknown|unrouteable (?:mail )?domain|"
            r"unroutable domain|domain (?:does not|doesn't) exist|name or service not"
            r" known|nxdomain|domain name not found|no mx|bad destination system|"
            r"unknown domain|domain (?:is )?(?:not|no longer) (?:valid|exist)|"
            r"invalid domain|dns error|domain is not reachable",
            re.IGNORECASE,
        ),
    ),
    (
        "user_unknown",
        re.compile(
            r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|"
            r"account)|(?:user|mailbox|recipient|address|account)"
            r"(?: name)? (?:does not|doesn't|did not) exist|"
            r"(?:mailbox|recipient|user|address) (?:is )?(?:not found|unknown|"
            r"invalid|unavailable)|invalid (?:recipient|mailbox|address|user)|"
            r"unknown (?:recipient|mailbox|address|local[- ]part)|"
            r"recipient (?:address )?rejected: (?:user|undeliverable|access denied"
            r"|unknown)|not (?:a )?valid (?:recipient|mailbox|user)|"
            r"no mailbox|mailbox not available|"
            r"not listed in (?:domino directory|public name & address book)|"
            r"address (?:lookup )?failed|RecipientNotFound|unknown or illegal alias|"
            r"user not found|account (?:that you tried to reach )?does not exist|"
            r"no account by that name|addressee unknown|bad address|"
            r"recipient not found|not our customer|user doesn't have a|"
            r"email account that you tried to reach does not exist|"
            r"destination (?:address|mailbox) (?:unknown|invalid)|"
            r"mailbox unavailable|no valid recipients|"
            r"unknown address|invalid address|recipient name is not recognized|"
            r"unrouteable address|check if (?:the )?address is correct|"
            r"user not exist|requested user mailbox not found|"
            r"invalid final delivery userid|"
            r"ディレクトリ.{0,12}(?:ありません|見つかりません)|宛先不明|存在しません",
            re.IGNORECASE,
        ),
    ),
    (
        "has_moved",
        re.compile(r"has moved|user has moved|address (?:has )?changed", re.I),
    ),
)

_REASON_CASELESS = tuple(
    (reason, caseless(pattern)) for reason, pattern in _REASON_PATTERNS
)

# RFC 3463 section 3: X.1.1 bad mailbox, X.1.2 bad system, X.1.6 mailbox
# moved, X.1.10 null MX (RFC 7505), X.4.4 unable to route. These name an
# address that cannot receive mail.
_HARD_STATUSES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.4.4"})
# X.2.2 mailbox full and X.2.1 mailbox disabled can recover.
_SOFT_STATUSES = frozenset({"5.2.2", "5.2.1", "5.2.3", "5.3.4"})
# X.1.7 and X.1.8 name a bad sender address, not the recipient.
_SENDER_STATUSES = frozenset({"5.1.7", "5.1.8"})
_HARD_REASONS = frozenset({"user_unknown", "host_unknown", "has_moved"})

BounceType = Literal["hard", "soft"]


@dataclass
class BounceReport:
    """Bounce facts with the evidence codes that produced them."""

    bounce: Bounce
    reasons: list[str] = field(default_factory=list)
    action: str | None = None
    """RFC 3464 Action of the chosen recipient (failed, delayed, delivered...)."""


def failure_reason(status: str | None, text: str) -> str | None:
    """Name the cause of a failure from its diagnostic text.

    Args:
        status: the enhanced status code, when known.
        text: the diagnostic or report text, already bounded by the caller.

    Returns:
        One of ``mailbox_full``, ``suspended``, ``policy``, ``host_unknown``,
        ``user_unknown``, ``has_moved``, or ``None`` when no phrase matched.
    """
    folded = FoldedText(text)
    for reason, pattern in _REASON_CASELESS:
        if pattern.found_in(folded):
            return reason
    return None


def bounce_type(status: str | None, text: str) -> BounceType:
    """Decide hard or soft for a failure (see the module docs for the meaning).

    Args:
        status: the enhanced status code, for example ``5.1.1``.
        text: the diagnostic and report text, bounded by the caller.
    """
    reason = failure_reason(status, text)
    if status and status.startswith("4"):
        return "soft"

    if reason in ("mailbox_full", "suspended", "policy"):
        return "soft"

    if status and (status.startswith("5.7") or status in _SENDER_STATUSES):
        # Policy, security and spam refusals (RFC 3463 X.7.x) and bad-sender
        # codes are about the message or the sender, not the recipient.
        return "soft"

    if reason in _HARD_REASONS:
        return "hard"

    if status in _SOFT_STATUSES:
        return "soft"

    return "hard" if status in _HARD_STATUSES else "soft"


def message_text(message: Message, limit: int = SCAN_CHARS) -> str:
    """Collect the text of a notification's own parts, up to *limit* characters.

    Text parts inside an attached ``message/rfc822`` are skipped because they
    belong to the returned original. ``text/rfc822-headers`` parts are kept
    so the original Message-ID can be read from them.
    """
    chunks: list[str] = []
    size = 0
    for part in _walk_own_parts(message):
        ctype = part.get_content_type()
        # A multipart whose boundary was lost (a broken header fold) keeps its
        # whole body as one string; its text is still the report.
        broken = ctype.startswith("multipart/") and isinstance(part.get_payload(), str)
        if not (
            ctype.startswith("text/") or ctype == "message/delivery-status" or broken
        ):
            continue

        # Line-anchored patterns below expect "\n" line ends only.
        text = _part_text(part).replace("\r\n", "\n").replace("\r", "\n")
        if ctype == "text/html":
            text = _strip_tags(text)
        chunks.append(text)
        size += len(text)
        if size >= limit:
            break
    return "\n".join(chunks)[:limit]


def read_delivery_status(message: Message) -> BounceReport | None:
    """Read the first ``message/delivery-status`` part (RFC 3464 section 2).

    Returns:
        The facts of the first failed recipient (else the first delayed one,
        else the first recipient), or ``None`` when the message has no such
        part or the part names no recipient.
    """
    for part in _walk_own_parts(message):
        ctype = part.get_content_type()
        if ctype not in (
            "message/delivery-status",
            "message/global-delivery-status",
            "text/delivery-status",
        ):
            continue

        blocks = _dsn_blocks(part)
        recipients = [
            block
            for block in blocks
            if "final-recipient" in block
            or "original-recipient" in block
            or "action" in block
        ]
        if not recipients:
            continue

        chosen = _choose_recipient(recipients)
        return _report_from_fields(chosen)
    return None


def read_bounce(message: Message, text: str) -> BounceReport:
    """Read bounce facts from a delivery-status part, else from plain text.

    Args:
        message: the parsed notification.
        text: the notification's text, bounded by the caller (see
            :func:`message_text`).

    Returns:
        The facts found; fields stay ``None`` where nothing was found.
    """
    report = read_delivery_status(message)
    head = _report_section(text)
    if report is None:
        report = _read_plain(head)
    else:
        report.reasons.append("dsn_fields")
        _refine_class_only_status(report, head)

    bounce = report.bounce
    if bounce.status is None:
        found = _status_in_text(head)
        if found is not None:
            bounce.status = found
            report.reasons.append("smtp_status_in_body")

    if bounce.recipient is None:
        bounce.recipient = _recipient_in_text(head, message)

    if bounce.original_message_id is None:
        bounce.original_message_id = _original_message_id(message, text)

    evidence = " ".join(filter(None, [bounce.diagnostic, head[:8192]]))
    if bounce.status is None:
        bounce.status = _status_from_reply(head, evidence)

    # The diagnostic is the best evidence when it names a cause; otherwise
    # the human-readable report around it may.
    basis = bounce.diagnostic or ""
    if failure_reason(bounce.status, basis) is None:
        basis = evidence
    bounce.type = bounce_type(bounce.status, basis)
    return report


def _refine_class_only_status(report: BounceReport, text: str) -> None:
    """Read the remote reply from the text when the DSN gives only a class.

    Some MTAs (OpenSMTPD among them) write ``Status: 5.0.0`` without a
    Diagnostic-Code and put the remote server's reply in the human-readable
    part, one line per recipient ("rcpt: 550 5.1.1 <rcpt>: User unknown").
    The reply is taken only from a line that names the chosen recipient and
    only when its class matches the DSN's (RFC 3463 section 3.1).
    """
    bounce = report.bounce
    if bounce.diagnostic or bounce.recipient is None:
        return
    if bounce.status is not None and not bounce.status.endswith(".0.0"):
        return

    for line in text.splitlines():
        if bounce.recipient not in line.lower():
            continue
        match = _REPLY_WITH_STATUS.search(line)
        if match is None:
            continue
        status = _status_of(match)
        if bounce.status is not None and status[0] != bounce.status[0]:
            continue
        bounce.status = status
        bounce.diagnostic = " ".join(line.split())[:1000]
        report.reasons.append("smtp_status_in_body")
        return


def _walk_own_parts(message: Message) -> list[Message]:
    """List the parts of *message*, not descending into attached messages."""
    found: list[Message] = []
    stack = [message]
    while stack and len(found) < _MAX_PARTS:
        part = stack.pop()
        found.append(part)
        ctype = part.get_content_type()
        if ctype == "message/rfc822" or not part.is_multipart():
            continue

        payload = part.get_payload()
        if isinstance(payload, list) and ctype.startswith("multipart/"):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return found


def _part_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        # compat32 parses message/delivery-status into one Message per block.
        return "\n\n".join(
            "\n".join(f"{k}: {v}" for k, v in block.items())
            for block in payload
            if isinstance(block, Message)
        )

    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return str(payload)

    return decode_bytes(raw, part.get_content_charset())


def decode_bytes(raw: bytes, charset: str | None) -> str:
    """Decode *raw* with its declared charset, falling back to UTF-8.

    Mislabelled parts are common in bounces (UTF-8 text declared as
    ISO-2022-JP, for example), so a strict decode is tried first.
    """
    # A charset name with a NUL character makes the codec lookup raise
    # ValueError rather than LookupError. UnicodeDecodeError is a ValueError.
    for candidate in (charset or "us-ascii", "utf-8"):
        try:
            return raw.decode(candidate)
        except (LookupError, ValueError):
            continue
    try:
        return raw.decode(charset or "us-ascii", errors="replace")
    except (LookupError, ValueError):
        return raw.decode("latin-1", errors="replace")


_TAG = re.compile(r"<[^<>]{0,2000}>")
_BREAK_TAG = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)\b[^<>]{0,200}>", re.IGNORECASE)


def _strip_tags(html: str) -> str:
    text = _BREAK_TAG.sub("\n", html[:SCAN_CHARS])
    text = _TAG.sub(" ", text)
    return text.replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">")


def _dsn_blocks(part: Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                fields = {k.lower(): str(v) for k, v in block.items()[:_MAX_DSN_FIELDS]}
                blocks.append(fields)
        return blocks

    return _parse_field_blocks(_part_text(part)[:SCAN_CHARS])


def _parse_field_blocks(text: str) -> list[dict[str, str]]:
    """Parse RFC 3464 field blocks separated by blank lines."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue

        if line[0] in " \t" and last is not None:
            current[last] += " " + line.strip()
            continue

        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            last = name.strip().lower()
            current[last] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _choose_recipient(blocks: list[dict[str, str]]) -> dict[str, str]:
    for action in ("failed", "delayed"):
        for block in blocks:
            if block.get("action", "").strip().lower().startswith(action):
                return block
    return blocks[0]


def _strip_type(value: str) -> str:
    """Remove an RFC 3464 address or diagnostic type such as ``rfc822;``."""
    kind, sep, rest = value.partition(";")
    if sep and len(kind) <= 20 and " " not in kind.strip():
        return rest.strip()
    return value.strip()


def _report_from_fields(fields: dict[str, str]) -> BounceReport:
    recipient = None
    for name in ("final-recipient", "original-recipient", "x-actual-recipient"):
        if name in fields:
            match = _ADDRESS.search(_strip_type(fields[name]))
            if match:
                recipient = match.group(0).lower()
                break

    diagnostic = None
    if fields.get("diagnostic-code"):
        diagnostic = " ".join(_strip_type(fields["diagnostic-code"]).split())[:1000]

    status = None
    match = _STATUS.search(fields.get("status", ""))
    if match:
        status = match.group(0)
    if diagnostic:
        # The remote server's own reply ("550 5.7.1 ...") is more specific than
        # the reporting MTA's Status, which often only restates the class. The
        # last reply wins because MTAs append the final server's reply.
        replies = list(_REPLY_WITH_STATUS.finditer(diagnostic))
        if replies:
            status = _status_of(replies[-1])
        elif status is None or status.endswith(".0.0"):
            bare = _STATUS.search(diagnostic)
            if bare is not None and bare.group(1) != "2":
                status = bare.group(0)

    action = fields.get("action", "").strip().lower() or None
    bounce = Bounce(recipient=recipient, status=status, diagnostic=diagnostic)
    return BounceReport(bounce=bounce, reasons=[], action=action)


def _status_of(match: re.Match[str]) -> str:
    groups = match.groups()
    return ".".join(groups[-3:])


def _report_section(text: str) -> str:
    """Return the text before the returned copy of the original message."""
    marker = _ORIGINAL_MARKER.search(text)
    if marker is not None and marker.start() > 40:
        return text[: marker.start()]
    return text


def _read_plain(text: str) -> BounceReport:
    report = BounceReport(bounce=Bounce())
    match = _REPLY_WITH_STATUS.search(text)
    if match is not None:
        report.bounce.status = _status_of(match)
        report.bounce.diagnostic = _line_around(text, match.start())
        report.reasons.append("smtp_status_in_body")
        return report

    match = _STATUS.search(text)
    if match is not None and match.group(1) != "2":
        report.bounce.status = match.group(0)
        report.bounce.diagnostic = _line_around(text, match.start())
        report.reasons.append("smtp_status_in_body")
        return report

    match = _REPLY_CODE.search(text)
    if match is not None:
        report.bounce.diagnostic = _line_around(text, match.start(1))
        report.reasons.append("smtp_reply_in_body")
    return report


def _line_around(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    if end == -1:
        end = len(text)
    return " ".join(text[start:end].split())[:1000]


def _status_in_text(text: str) -> str | None:
    match = _REPLY_WITH_STATUS.search(text)
    if match is not None:
        return _status_of(match)

    match = _STATUS.search(text)
    if match is not None and match.group(1) != "2":
        return match.group(0)
    return None


def _status_from_reply(text: str, evidence: str) -> str | None:
    """Derive an enhanced status from a bare SMTP reply code and the text."""
    match = _REPLY_CODE.search(text)
    if match is None:
        return None

    klass = match.group(1)[0]
    reason = failure_reason(None, evidence)
    detail = {
        "user_unknown": "1.1",
        "host_unknown": "1.2",
        "has_moved": "1.6",
        "mailbox_full": "2.2",
        "suspended": "2.1",
    }.get(reason or "", "0.0")
    return f"{klass}.{detail}"


def _recipient_in_text(text: str, message: Message) -> str | None:
    own = {
        address.lower()
        for name in ("to", "from", "delivered-to", "x-original-to")
        for address in _ADDRESS.findall(str(message.get(name, "")))
    }
    for pattern in _RECIPIENT_LINES:
        for match in pattern.finditer(text):
            candidate = match.group(1).strip(".,;:").lower()
            if _ADDRESS.fullmatch(candidate) and candidate not in own:
                return candidate

    for match in _ADDRESS.finditer(text):
        candidate = match.group(0).strip(".").lower()
        local = candidate.partition("@")[0]
        if candidate in own or local in ("mailer-daemon", "postmaster"):
            continue
        return candidate
    return None


def _original_message_id(message: Message, text: str) -> str | None:
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message) and inner.get("Message-ID"):
                return _bare_id(str(inner["Message-ID"]))

    marker = _ORIGINAL_MARKER.search(text)
    tail = text[marker.start() :] if marker is not None else text
    match = _MESSAGE_ID_LINE.search(tail)
    if match is None and marker is not None:
        match = _MESSAGE_ID_LINE.search(text)
    if match is None:
        return None
    return _bare_id(match.group(1))


def _bare_id(value: str) -> str | None:
    value = value.strip().strip("<>").strip()
    return value or None


# Amazon SES notification types, from the "notificationType" field of its
# JSON notification contents (Amazon SES Developer Guide, "Contents of
# notifications for Amazon SES").
SES_NOTIFICATION_TYPES = frozenset({"Bounce", "Complaint", "Delivery"})


@dataclass
class SesNotification:
    """An Amazon SES notification read from the JSON in a message body."""

    notification_type: str
    """``Bounce``, ``Complaint`` or ``Delivery``."""
    report: BounceReport | None = None
    """The first bounced recipient's facts; set for every ``Bounce``."""


def read_ses_notification(text: str) -> SesNotification | None:
    """Read an Amazon SES notification that an SNS e-mail subscription sent.

    The body is the SES JSON document, or the SNS envelope whose ``Message``
    field holds that document as a string. Bounce recipients carry the same
    facts as RFC 3464 fields (address, action, status, diagnostic code), so
    they are read like a delivery-status part.

    Args:
        text: the notification's text, bounded by the caller (see
            :func:`message_text`).

    Returns:
        The notification, or ``None`` when the text does not start with one.
    """
    document = _json_object(text)
    envelope_message = document.get("Message") if document is not None else None
    if isinstance(envelope_message, str):
        document = _json_object(envelope_message)
    if document is None:
        return None

    notification_type = document.get("notificationType")
    if notification_type not in SES_NOTIFICATION_TYPES:
        return None

    notification = SesNotification(notification_type=str(notification_type))
    if notification_type != "Bounce":
        return notification

    details = document.get("bounce")
    if not isinstance(details, dict):
        details = {}

    recipients = details.get("bouncedRecipients")
    first = recipients[0] if isinstance(recipients, list) and recipients else {}
    if not isinstance(first, dict):
        first = {}
    fields = {
        "final-recipient": first.get("emailAddress"),
        "action": first.get("action"),
        "status": first.get("status"),
        "diagnostic-code": first.get("diagnosticCode"),
    }
    report = _report_from_fields(
        {name: value for name, value in fields.items() if isinstance(value, str)}
    )
    bounce = report.bounce
    if details.get("bounceType") == "Transient":
        # SES marks failures that may succeed on a later attempt as Transient.
        bounce.type = "soft"
    else:
        bounce.type = bounce_type(bounce.status, bounce.diagnostic or "")
    mail = document.get("mail")
    headers = mail.get("commonHeaders") if isinstance(mail, dict) else None
    if isinstance(headers, dict) and isinstance(headers.get("messageId"), str):
        bounce.original_message_id = _bare_id(headers["messageId"])
    report.reasons.append("ses_bounce_fields")
    notification.report = report
    return notification


def _json_object(text: str) -> dict[str, object] | None:
    """Decode the JSON object at the start of *text*, ignoring what follows."""
    text = text.lstrip()
    if not text.startswith("{"):
        return None
    try:
        # strict=False accepts raw line breaks inside strings: SNS folds the
        # long JSON line of a notification when it sends it as mail.
        value, _end = json.JSONDecoder(strict=False).raw_decode(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
