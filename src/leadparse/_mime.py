"""Byte-level repairs made before MIME parsing, and payload decoding."""

from __future__ import annotations

import binascii
import io
import quopri
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
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
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, False
    head = raw[: match.start()]
    fields = list(_CONTENT_TYPE_FIELD.finditer(head))
    if len(fields) < 2:
        return raw, False
    chosen = None
    for field in fields:
        found = _BOUNDARY_PARAM.search(field.group(0))
        if found is None:
            continue
        boundary = found.group(1) or found.group(2)
        if raw.find(b"--" + boundary, match.end()) >= 0:
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
    {"7bit", "8bit", "binary", "base64", "quoted-printable"}
)
_UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})

# --- large payloads kept outside the parser ---------------------------------

# Runs of base64-looking lines at least this long are cut out of the bytes
# handed to the stdlib parser, which would otherwise hold several copies of a
# large attachment (the text, its line list and the joined payload). The part
# keeps a short token, and readers decode the run straight from the raw bytes.
LARGE_PAYLOAD_BYTES = 1 << 20
# Anchored at line starts, so a long line with no newline costs one attempt,
# not one attempt per byte offset.
_BASE64_LINE = re.compile(rb"^[A-Za-z0-9+/=]{16,998}\r?\n", re.MULTILINE)
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class _Spans:
    raw: bytes
    token: re.Pattern[str]
    offsets: tuple[tuple[int, int], ...]


def _base64_runs(raw: bytes) -> Iterator[tuple[int, int]]:
    # Line by line rather than one repeated group: the regex engine keeps
    # state for every repetition, which costs more memory than the payload.
    run_start = run_end = -1
    for match in _BASE64_LINE.finditer(raw):
        start = match.start()
        if start == run_end:
            run_end = match.end()
            continue
        if run_start >= 0:
            yield run_start, run_end
        at_line_start = start == 0 or raw[start - 1] == 0x0A
        run_start, run_end = (start, match.end()) if at_line_start else (-1, -1)
    if run_start >= 0:
        yield run_start, run_end


def cut_large_payloads(raw: bytes) -> tuple[bytes, _Spans | None]:
    """Replace long base64 runs by tokens; return the bytes to parse and the spans."""
    if len(raw) < LARGE_PAYLOAD_BYTES:
        return raw, None
    nonce = secrets.token_hex(8)
    pieces: list[bytes] = []
    offsets: list[tuple[int, int]] = []
    position = 0
    for begin, end in _base64_runs(raw):
        if end - begin < LARGE_PAYLOAD_BYTES:
            continue
        pieces.append(raw[position:begin])
        pieces.append(f"LEADPARSE-SPAN-{nonce}-{len(offsets)}\n".encode())
        offsets.append((begin, end))
        position = end
    if not offsets:
        return raw, None
    pieces.append(raw[position:])
    # The parser drops the line break before a boundary, so the token may end
    # its payload with no newline.
    token = re.compile(rf"LEADPARSE-SPAN-{nonce}-(\d+)(?:\r?\n|\Z)")
    return b"".join(pieces), _Spans(raw, token, tuple(offsets))


def attach_spans(message: Message, spans: _Spans | None) -> None:
    """Mark each part whose payload contains a span token, so readers find its bytes."""
    if spans is None:
        return
    stack = [message]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(child for child in payload if isinstance(child, Message))
        elif isinstance(payload, str) and spans.token.search(payload):
            part._leadparse_spans = spans  # type: ignore[attr-defined]


def payload_chunks(part: Message) -> Iterator[bytes]:
    """Yield a leaf part's undecoded payload as bytes, in chunks of at most 1 MiB."""
    # The stored payload, not get_payload(): for 8-bit parts compat32's
    # get_payload() already decodes the escaped bytes with the declared
    # charset, and encoding that text again would change the bytes.
    payload = getattr(part, "_payload", None)
    if not isinstance(payload, str):
        return
    spans: _Spans | None = getattr(part, "_leadparse_spans", None)
    texts = [payload] if spans is None else spans.token.split(payload)
    for index, piece in enumerate(texts):
        if index % 2 == 0:
            data = piece.encode("utf-8", "surrogateescape")
            for start in range(0, len(data), _CHUNK_BYTES):
                yield data[start : start + _CHUNK_BYTES]
            continue
        assert spans is not None
        begin, end = spans.offsets[int(piece)]
        view = memoryview(spans.raw)
        for start in range(begin, end, _CHUNK_BYTES):
            yield bytes(view[start : min(start + _CHUNK_BYTES, end)])


def payload_size(part: Message) -> int:
    """Return the undecoded payload size in bytes without joining it."""
    return sum(len(chunk) for chunk in payload_chunks(part))


# --- transfer decoding --------------------------------------------------------

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BASE64_DROP = bytes(byte for byte in range(256) if byte not in _BASE64_ALPHABET)
_BASE64_ALLOWED = _BASE64_ALPHABET + b"= \t\r\n"
# A payload with more than this share of characters outside base64 is taken
# to be mislabelled plain bytes and kept as sent.
_NOT_BASE64_SHARE = 0.1


def decode_base64_chunks(part: Message) -> tuple[bytes, str | None]:
    """Decode a base64 payload chunk by chunk, skipping invalid characters."""
    stray = 0
    total = 0
    for chunk in payload_chunks(part):
        stray += len(chunk.translate(None, _BASE64_ALLOWED))
        total += len(chunk.strip())
    if stray > _NOT_BASE64_SHARE * max(total, 1):
        # Mostly not base64 at all: the sender mislabelled plain bytes, which
        # are kept as they are rather than decoded into noise.
        return (
            b"".join(payload_chunks(part)),
            "payload declared base64 is not base64; kept the bytes as sent",
        )

    problem = "base64 payload has invalid characters; skipped them" if stray else None
    output = io.BytesIO()
    carry = b""
    for chunk in payload_chunks(part):
        cleaned = carry + chunk.translate(None, _BASE64_DROP)
        usable = len(cleaned) - len(cleaned) % 4
        output.write(binascii.a2b_base64(cleaned[:usable]))
        carry = cleaned[usable:]
    if len(carry) == 1:
        problem = "base64 payload is truncated; dropped the last character"
    elif carry:
        output.write(binascii.a2b_base64(carry + b"=" * (4 - len(carry))))
    return output.getvalue(), problem


def _decode_uu(data: bytes) -> tuple[bytes, str | None]:
    lines = data.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.startswith(b"begin ")), None
    )
    if start is None:
        return data, "uuencoded payload has no begin line; kept as sent"
    output = bytearray()
    damaged = 0
    for line in lines[start + 1 :]:
        if line.strip() == b"end":
            break
        try:
            output += binascii.a2b_uu(line)
        except binascii.Error:
            damaged += 1
    problem = f"uuencoded payload has {damaged} damaged line(s)" if damaged else None
    return bytes(output), problem


def part_payload(part: Message) -> tuple[bytes, str | None]:
    """Decode a leaf part's transfer encoding, and return a problem if any.

    Invalid base64 characters are skipped, and a payload that is mostly not
    base64 is kept as sent; this never raises.
    """
    encoding = str(part.get("content-transfer-encoding", "7bit")).strip().lower()
    if not isinstance(part.get_payload(decode=False), str):
        return b"", "part has no leaf payload"
    if encoding == "base64":
        return decode_base64_chunks(part)
    problem = None
    if encoding not in _TRANSFER_ENCODINGS and encoding not in _UU_ENCODINGS:
        problem = f"unknown Content-Transfer-Encoding {encoding[:40]!r}; read as 8bit"
    # The payload is decoded here rather than by Message.get_payload(decode=True),
    # which encodes non-ASCII text with the declared charset and raises on a
    # charset name the codec registry rejects (one containing NUL, say).
    data = b"".join(payload_chunks(part))
    if encoding == "quoted-printable":
        return quopri.decodestring(data), problem
    if encoding in _UU_ENCODINGS:
        return _decode_uu(data)
    return data, problem


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
