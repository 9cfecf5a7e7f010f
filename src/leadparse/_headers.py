"""Header decoding: RFC 2047 encoded words, addresses, message ids and dates."""

from __future__ import annotations

import base64
import binascii
import email.utils
import quopri
import re
from datetime import UTC, datetime
from email.header import Header
from email.message import Message

from leadparse._charsets import decode_bytes, normalize_charset
from leadparse.model import Address

__all__ = [
    "decode_header_value",
    "header_text",
    "parse_addresses",
    "parse_date",
    "parse_message_ids",
    "raw_header",
]

# RFC 2047 section 2: =?charset?encoding?encoded-text?=, with an optional
# RFC 2231 section 5 language suffix on the charset.
_ENCODED_WORD = re.compile(
    r"=\?(?P<charset>[^?\s]{1,64})\?(?P<encoding>[bBqQ])\?(?P<text>[^?]*?)\?="
)
_BETWEEN_WORDS = re.compile(r"[ \t\r\n]*")
_FOLD = re.compile(r"\r?\n[ \t]")
_SURROGATE = re.compile("[\udc80-\udcff]")


def raw_header(message: Message, name: str) -> str | None:
    """Return the first *name* header as the original text, undecoded.

    Non-ASCII bytes, which compat32 carries as surrogate escapes, are decoded
    by the charset fallback chain so that raw UTF-8 headers read correctly.
    """
    lowered_name = name.lower()
    for key, value in message.raw_items():
        if key.lower() == lowered_name:
            return _unescape(value)
    return None


def raw_headers(message: Message, name: str) -> list[str]:
    """Return every *name* header as original text, in order."""
    lowered_name = name.lower()
    return [
        _unescape(value)
        for key, value in message.raw_items()
        if key.lower() == lowered_name
    ]


def _unescape(value: str | Header) -> str:
    if isinstance(value, Header):
        value = str(value)
    # compat32 carries non-ASCII header bytes as surrogates U+DC80..U+DCFF, so
    # an ASCII value needs no scan.
    if not value.isascii() and _SURROGATE.search(value):
        data = value.encode("utf-8", "surrogateescape")
        return decode_bytes(data, None).text
    return value


def _decode_word(charset: str, encoding: str, text: str) -> str | None:
    if encoding in "bB":
        padded = text + "=" * (-len(text) % 4)
        try:
            data = base64.b64decode(padded, validate=False)
        except (binascii.Error, ValueError):
            return None
    else:
        # RFC 2047 section 4.2: "_" stands for a space in Q-encoded text.
        data = quopri.decodestring(_q_text_bytes(text.replace("_", " "), charset))
    # An unknown charset label still yields text through the fallback chain.
    return decode_bytes(data, charset).text


def _q_text_bytes(text: str, charset: str) -> bytes:
    if text.isascii():
        return text.encode("ascii")
    # Senders put raw 8-bit characters in Q-encoded text. Encoding them in
    # the word's own charset gives back the bytes that charset decodes.
    codec = normalize_charset(charset) or "utf-8"
    pieces = []
    for char in text:
        try:
            pieces.append(char.encode("ascii" if char.isascii() else codec))
        except UnicodeEncodeError:
            pieces.append(char.encode("utf-8"))
    return b"".join(pieces)


def decode_header_value(value: str | None) -> str:
    """Decode RFC 2047 encoded words in a header value and unfold it.

    Whitespace between two adjacent encoded words is dropped (RFC 2047
    section 6.2); other whitespace is kept. Encoded words inside quoted
    strings and words not separated by whitespace, which RFC 2047 forbids but
    mail clients send, are decoded too. Malformed words are left as written.
    """
    if not value:
        return ""
    value = _FOLD.sub(" ", value).replace("\r", "").replace("\n", " ")
    pieces: list[str] = []
    position = 0
    previous_was_word = False
    for match in _ENCODED_WORD.finditer(value):
        gap = value[position : match.start()]
        decoded = _decode_word(
            match.group("charset"), match.group("encoding"), match.group("text")
        )
        if decoded is None:
            pieces.append(gap + match.group(0))
            previous_was_word = False
        else:
            if not (previous_was_word and _BETWEEN_WORDS.fullmatch(gap)):
                pieces.append(gap)
            pieces.append(decoded)
            previous_was_word = True
        position = match.end()
    pieces.append(value[position:])
    return "".join(pieces).strip()


def header_text(message: Message, name: str) -> str | None:
    """Return the first *name* header decoded to text, or ``None`` if absent."""
    raw = raw_header(message, name)
    if raw is None:
        return None
    return decode_header_value(raw)


_ADDR_SPEC = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$"
)


# A display name written without quotes although it contains "@", as in
# ``alice@example.com <bob@example.com>``. RFC 5322 section 3.4 requires a
# quoted string there; the stdlib parser otherwise takes the name for the
# address.
_BARE_PHRASE = re.compile(r"^(\s*)([^\"<>(),;:\\]*@[^\"<>(),;:\\]*?)(\s*<[^<>]*>\s*)$")


def _split_top_level(value: str) -> list[str]:
    """Split an address list at commas outside quotes, comments and brackets."""
    pieces: list[str] = []
    start = 0
    depth = 0
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char in "(<":
            depth += 1
        elif char in ")>" and depth:
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append(value[start:index])
            start = index + 1
    pieces.append(value[start:])
    return pieces


def _quote_bare_phrases(value: str) -> str:
    if "@" not in value or "<" not in value:
        return value
    pieces = _split_top_level(value)
    for index, piece in enumerate(pieces):
        match = _BARE_PHRASE.match(piece)
        if match and match.group(2).strip():
            lead, phrase, rest = match.groups()
            pieces[index] = f'{lead}"{phrase.strip()}"{rest}'
    return ",".join(pieces)


def parse_addresses(raw: str | None) -> tuple[list[Address], list[str]]:
    """Parse an address-list header into addresses, and return problems found.

    Parsing runs on the raw value, before RFC 2047 decoding, so a display name
    that decodes to text containing commas or quotes cannot split an address.
    Addresses are lower-cased; display names are decoded.
    """
    if not raw:
        return [], []
    unfolded = _quote_bare_phrases(_FOLD.sub(" ", raw))
    problems: list[str] = []
    result: list[Address] = []
    for name, addr in email.utils.getaddresses([unfolded]):
        addr = addr.strip().strip("<>").strip()
        display = decode_header_value(name).strip().strip('"').strip() or None
        if not addr and not display:
            continue
        if addr and not _ADDR_SPEC.match(addr):
            problems.append(addr[:80])
            if "@" not in addr:
                # A bare word such as "undisclosed" is no mailbox: it is
                # reported, and kept only as the name when a name came with it.
                if display:
                    result.append(Address(name=display, email=None))
                continue
        if display and display.lower() == addr.lower():
            display = None
        result.append(Address(name=display, email=addr.lower() or None))
    if not result and unfolded.strip() and not problems:
        problems.append(unfolded.strip()[:80])
    return result, problems


_MSG_ID = re.compile(r"<([^<>]{1,998})>")


def parse_message_ids(raw: str | None) -> list[str]:
    """Return the ids in a Message-ID, In-Reply-To or References value.

    Ids lose their angle brackets. A value with no bracketed id, or an id that
    is not RFC 5322 syntax such as ``<[abc@host]>``, is kept as written, so
    threading still works on what the sender produced.
    """
    if not raw:
        return []
    value = _FOLD.sub(" ", raw).strip()
    found = [m.group(1).strip() for m in _MSG_ID.finditer(value)]
    found = [item for item in found if item]
    if found:
        return list(dict.fromkeys(found))
    return [part for part in value.split() if part]


def parse_date(raw: str | None) -> tuple[datetime | None, str | None]:
    """Parse an RFC 5322 date into aware UTC, and return a problem if any."""
    if not raw or not raw.strip():
        return None, None
    value = _FOLD.sub(" ", raw).strip()
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None, f"unparseable Date header: {value[:80]!r}"
    if parsed is None:
        return None, f"unparseable Date header: {value[:80]!r}"
    if parsed.tzinfo is None:
        # RFC 5322 section 3.3: "-0000" means no zone information; treat as UTC.
        return parsed.replace(
            tzinfo=UTC
        ), f"Date header has no time zone: {value[:80]!r}"
    try:
        return parsed.astimezone(UTC), None
    except (OverflowError, ValueError):
        return None, f"Date header out of range: {value[:80]!r}"
