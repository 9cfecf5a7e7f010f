"""Attachment filenames: decode MIME parameters and make them safe to show or store."""

from __future__ import annotations

import re
import unicodedata
from email.errors import MessageError
from email.header import decode_header
from email.message import Message

from leadparse._charsets import nearly_utf8

__all__ = ["decode_filename", "part_filename", "sanitize_filename"]

# RFC 2047 encoded-word, searched anywhere in a parameter value because Gmail
# and Outlook put encoded-words inside quoted filename="..." parameters, which
# RFC 2047 section 5 forbids but every mail client accepts.
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=")
_FOLD = re.compile(r"\r?\n[ \t]*")
_MAX_FILENAME_CHARS = 255


def part_filename(part: Message) -> str | None:
    """Return the sanitized filename of a MIME part, or ``None`` when it has none.

    The Content-Disposition ``filename`` parameter wins; the Content-Type
    ``name`` parameter is the fallback that older clients send alone. RFC 2231
    continuations and charsets are collapsed by the stdlib before decoding.
    """
    part = _with_decoded_8bit_params(part)
    try:
        raw = part.get_filename()
    except (ValueError, LookupError, MessageError):
        # collapse_rfc2231_value() raises on a charset name the codec registry
        # rejects; the undecoded parameter value is still a name.
        raw = _raw_param(part, "filename", "content-disposition")
    if raw is None:
        name = part.get_param("name")
        if isinstance(name, tuple):
            # An RFC 2231 (charset, language, value) triple.
            charset, _language, value = name
            raw = _decode_rfc2231_value(str(value), charset)
        elif isinstance(name, str):
            raw = name
    if raw is None:
        return None
    return sanitize_filename(decode_filename(raw))


def _raw_param(part: Message, name: str, header: str) -> str | None:
    value = part.get_param(name, header=header)
    if isinstance(value, tuple):
        return str(value[2])
    return value if isinstance(value, str) else None


def _with_decoded_8bit_params(part: Message) -> Message:
    # compat32 replaces raw 8-bit bytes in a header with U+FFFD before its
    # parameter parser sees them. Senders that put UTF-8 straight into
    # filename= are common, so those headers are decoded by the charset chain
    # into a stand-in message that carries only the two parameter headers.
    shadow: Message | None = None
    for name in ("content-disposition", "content-type"):
        for key, value in part.raw_items():
            if key.lower() != name or not isinstance(value, str):
                continue
            if not any("\udc80" <= ch <= "\udcff" for ch in value):
                continue
            if shadow is None:
                shadow = Message()
                for keep in ("content-disposition", "content-type"):
                    original = part.get(keep)
                    if original is not None:
                        shadow[keep] = str(original)
            data = value.encode("utf-8", "surrogateescape")
            del shadow[name]
            shadow[name] = _decode_8bit(data)
            break
    return shadow if shadow is not None else part


def _decode_rfc2231_value(value: str, charset: str | None) -> str:
    try:
        data = value.encode("latin-1", "surrogateescape")
    except UnicodeEncodeError:
        return value
    try:
        return data.decode(charset or "us-ascii")
    except (LookupError, ValueError):
        return _decode_8bit(data)


def _decode_8bit(data: bytes) -> str:
    # Unencoded 8-bit header bytes are UTF-8 in practice, else a Windows code page.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    nearly = nearly_utf8(data)
    return nearly if nearly is not None else data.decode("cp1252", "replace")


def decode_filename(value: str) -> str:
    """Decode RFC 2047 encoded-words and raw 8-bit bytes in a filename parameter.

    Args:
        value: the parameter value as the compat32 parser returns it, which may
            hold surrogate escapes for undecoded 8-bit bytes and folding
            whitespace between encoded-words.
    """
    if any("\udc80" <= char <= "\udcff" for char in value):
        value = _decode_8bit(value.encode("utf-8", "surrogateescape"))
    value = _FOLD.sub(" ", value)
    if not _ENCODED_WORD.search(value):
        return value

    pieces: list[str] = []
    try:
        decoded = decode_header(value)
    except (ValueError, LookupError, MessageError):
        return value
    for chunk, charset in decoded:
        if isinstance(chunk, str):
            pieces.append(chunk)
            continue
        try:
            pieces.append(chunk.decode(charset or "us-ascii"))
        except (LookupError, ValueError):
            pieces.append(_decode_8bit(chunk))
    return "".join(pieces)


def sanitize_filename(value: str) -> str | None:
    """Reduce a filename to its last path component without control characters.

    ``../../etc/passwd`` becomes ``passwd`` and ``C:\\Temp\\a.txt`` becomes
    ``a.txt``. Returns ``None`` when nothing usable is left.
    """
    value = unicodedata.normalize("NFC", value)
    value = "".join(
        char
        for char in value
        if unicodedata.category(char) not in {"Cc", "Cf", "Cs", "Zl", "Zp"}
    )
    value = re.split(r"[/\\]", value)[-1]
    value = value.strip()
    if not value.strip("."):
        # Empty, "." or "..": nothing that names a file.
        return None
    if len(value) > _MAX_FILENAME_CHARS:
        stem, dot, suffix = value.rpartition(".")
        if dot and 0 < len(suffix) <= 16:
            value = stem[: _MAX_FILENAME_CHARS - len(suffix) - 1] + "." + suffix
        else:
            value = value[:_MAX_FILENAME_CHARS]
    return value
