"""Byte-level repairs made before MIME parsing, and payload decoding."""

from __future__ import annotations

import binascii
import re
from email.message import Message

from leadparse._charsets import DecodedText, decode_bytes

__all__ = [
    "decode_part_text",
    "find_used_boundary",
    "part_payload",
    "repair_duplicate_content_type",
    "split_header_block",
    "unflow",
]

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_TYPE_FIELD = re.compile(
    rb"^content-type[ \t]*:.*(?:\r?\n[ \t].*)*", re.IGNORECASE | re.MULTILINE
)
_BOUNDARY_PARAM = re.compile(
    rb"""boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;"]{1,200}))""", re.I
)
_BOUNDARY_LINE = re.compile(r"^--([^\s]{1,200}?)(?:--)?[ \t\r]*$", re.MULTILINE)


def split_header_block(raw: bytes) -> tuple[bytes, bytes]:
    """Split raw message bytes into the header block and the body."""
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    return raw[: match.start()], raw[match.end() :]


def repair_duplicate_content_type(raw: bytes) -> tuple[bytes, bool]:
    """Keep the top-level Content-Type whose boundary really delimits the body.

    Some relays add a second Content-Type header with another boundary. The
    stdlib parser takes the first one and then finds no parts, so the header
    whose boundary occurs in the body is kept and the others are removed.
    Returns the bytes to parse and whether anything was removed.
    """
    head, body = split_header_block(raw)
    fields = list(_CONTENT_TYPE_FIELD.finditer(head))
    if len(fields) < 2:
        return raw, False
    chosen = None
    for field in fields:
        found = _BOUNDARY_PARAM.search(field.group(0))
        if found is None:
            continue
        boundary = found.group(1) or found.group(2)
        if b"--" + boundary in body:
            chosen = field
            break
    if chosen is None:
        return raw, False
    pieces = []
    position = 0
    for field in fields:
        if field is chosen:
            continue
        pieces.append(head[position : field.start()])
        position = (
            field.end() + 1
            if head[field.end() : field.end() + 1] == b"\n"
            else field.end()
        )
    pieces.append(head[position:])
    new_head = b"".join(pieces)
    return new_head + raw[len(head) :], True


def find_used_boundary(body: str) -> str | None:
    """Return a boundary that delimits *body* at least twice, if one does."""
    counts: dict[str, int] = {}
    for match in _BOUNDARY_LINE.finditer(body):
        boundary = match.group(1)
        counts[boundary] = counts.get(boundary, 0) + 1
    best = [b for b, n in counts.items() if n >= 2]
    return max(best, key=lambda b: counts[b]) if best else None


_TRANSFER_ENCODINGS = frozenset(
    {
        "7bit",
        "8bit",
        "binary",
        "base64",
        "quoted-printable",
        "x-uuencode",
        "uuencode",
        "x-uue",
        "uue",
    }
)


def part_payload(part: Message) -> tuple[bytes, str | None]:
    """Decode a leaf part's transfer encoding, and return a problem if any."""
    encoding = str(part.get("content-transfer-encoding", "7bit")).strip().lower()
    problem = None
    if encoding not in _TRANSFER_ENCODINGS:
        problem = f"unknown Content-Transfer-Encoding {encoding[:40]!r}; read as 8bit"
    raw = part.get_payload(decode=False)
    if not isinstance(raw, str):
        return b"", "part has no leaf payload"
    if encoding == "base64":
        return _decode_base64(raw.encode("utf-8", "surrogateescape"))
    decoded = part.get_payload(decode=True)
    if not isinstance(decoded, bytes):
        return raw.encode("utf-8", "surrogateescape"), problem
    return decoded, problem


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=\s]")
_NOT_BASE64_SHARE = 0.1


def _decode_base64(data: bytes) -> tuple[bytes, str | None]:
    stray = len(_NOT_BASE64.findall(data))
    if stray > _NOT_BASE64_SHARE * max(len(data.strip()), 1):
        # Mostly not base64 at all: the sender mislabelled plain bytes, which
        # are kept as they are rather than decoded into noise.
        return data, "payload declared base64 is not base64; kept the bytes as sent"
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    problem = "base64 payload has invalid characters; skipped them" if stray else None
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
        problem = "base64 payload is truncated; dropped the last character"
    try:
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4)), problem
    except binascii.Error:
        return data, "invalid base64 payload; kept the bytes as sent"


def decode_part_text(part: Message) -> tuple[DecodedText, list[str]]:
    """Decode a text part to str through the charset chain."""
    data, problem = part_payload(part)
    problems = [problem] if problem else []
    charset = part.get_param("charset")
    if isinstance(charset, tuple):
        charset = charset[2]
    declared = str(charset) if charset else None
    decoded = decode_bytes(data, declared)
    if decoded.fallback == "unknown":
        problems.append(f"unknown charset {declared!r}; read as {decoded.charset}")
    elif decoded.fallback == "invalid":
        problems.append(f"text is not valid {declared}; read as {decoded.charset}")
    elif decoded.fallback == "undeclared" and not data.isascii():
        problems.append(f"8-bit text with no charset; read as {decoded.charset}")
    text = decoded.text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    params = {k.lower(): str(v).lower() for k, v in part.get_params() or [] if v}
    if params.get("format") == "flowed":
        text = unflow(text, delsp=params.get("delsp") == "yes")
    return DecodedText(text, decoded.charset, decoded.fallback), problems


def unflow(text: str, *, delsp: bool = False) -> str:
    """Join RFC 3676 format=flowed lines.

    A line ending in a space continues on the next line (section 4.2), except
    the signature separator "-- " (section 4.3); a leading space added for
    stuffing is removed (section 4.4). Quote depth is preserved.
    """
    out: list[str] = []
    pending = ""
    pending_depth = -1
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]
        if pending and depth != pending_depth:
            out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
            pending = ""
        flowed = content.endswith(" ") and content != "-- "
        if flowed:
            pending += content[:-1] if delsp else content
            pending_depth = depth
            continue
        full = pending + content
        pending = ""
        out.append(">" * depth + (" " if depth and full else "") + full)
    if pending:
        out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
    return "\n".join(out)
