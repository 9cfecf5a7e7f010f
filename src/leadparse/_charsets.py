"""Charset names and the fallback chain used to turn bytes into text.

The chain is: the declared charset (after mapping labels Python does not know),
then a detected charset, then windows-1252, which decodes any byte sequence
once the five bytes it leaves undefined are replaced.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import chardet

__all__ = ["DecodedText", "decode_bytes", "normalize_charset"]

# Labels seen in mail that Python's codec registry rejects or reads wrongly.
# Mapping supersets is deliberate: GB2312 and GBK text decodes as GB18030,
# and KS C 5601 text as CP949, which is what the sending clients produce.
_ALIASES = {
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cn-gb": "gb18030",
    "euc-cn": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",
    "x-euc-kr": "cp949",
    "windows-949": "cp949",
    "shift-jis": "cp932",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "windows-31j": "cp932",
    "ms_kanji": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "iso-8859-11": "cp874",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "x-unknown": "",
    "unknown-8bit": "",
    "x-user-defined": "",
    "default": "",
    "us-ascii": "ascii",
    "ascii": "ascii",
    # Mail labelled latin-1 is very often windows-1252 (curly quotes, euro sign);
    # the two agree on every byte latin-1 defines as printable.
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
}

_NOT_CHARSETS = frozenset(
    {
        "undefined",
        "idna",
        "punycode",
        "unicode-escape",
        "unicode_escape",
        "raw-unicode-escape",
        "raw_unicode_escape",
        "charmap",
        "mbcs",
        "oem",
        "palmos",
        "unicode-internal",
    }
)
_DETECT_BYTES = 64 * 1024
_MIN_DETECT_CONFIDENCE = 0.5


@dataclass(frozen=True)
class DecodedText:
    """Text decoded from bytes, with the codec used and whether it fell back."""

    text: str
    charset: str
    fallback: str | None = None
    """Why the declared charset was not used: ``unknown``, ``invalid`` or
    ``undeclared``; ``None`` when the declared charset decoded cleanly."""


def normalize_charset(label: str | None) -> str | None:
    """Map a MIME charset label to a Python codec name, or ``None`` if unknown."""
    if not label:
        return None
    cleaned = label.strip().strip("\"'").lower()
    if "*" in cleaned:
        # RFC 2231 section 5: a language tag may follow the charset after "*".
        cleaned = cleaned.split("*", 1)[0]
    if cleaned in _ALIASES:
        cleaned = _ALIASES[cleaned]
        if not cleaned:
            return None
    if cleaned.startswith(("cp-", "ibm-")):
        cleaned = "cp" + cleaned.split("-", 1)[1]
    try:
        info = codecs.lookup(cleaned)
    except (LookupError, ValueError):
        return None
    # Python also registers codecs that are no MIME charset: escape codecs,
    # "undefined", idna, and bytes-to-bytes transforms such as base64.
    if info.name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _detect(data: bytes) -> str | None:
    result = chardet.detect(data[:_DETECT_BYTES])
    encoding = result.get("encoding")
    confidence = result.get("confidence") or 0.0
    if not encoding or confidence < _MIN_DETECT_CONFIDENCE:
        return None
    return normalize_charset(encoding)


def _try(data: bytes, codec: str | None) -> str | None:
    if not codec:
        return None
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError, ValueError):
        return None


def nearly_utf8(data: bytes) -> str | None:
    """Decode UTF-8 with a few broken sequences, as a cut-off multibyte character.

    Returns ``None`` unless there are at least 20 well-formed non-ASCII
    characters for each replaced sequence, since other bytes are more likely
    another charset.
    """
    text = data.decode("utf-8", "replace")
    replaced = text.count("\ufffd")
    well_formed = sum(1 for char in text if ord(char) > 0x7F) - replaced
    if replaced and well_formed >= 20 * replaced:
        return text
    return None


def decode_bytes(data: bytes, declared: str | None) -> DecodedText:
    """Decode *data* by the fallback chain; this never raises."""
    codec = normalize_charset(declared)
    text = _try(data, codec)
    if text is not None:
        return DecodedText(text, codec or "ascii")
    if codec == "cp1252" and normalize_charset(declared) == "cp1252":
        # Declared latin-1 with a byte windows-1252 leaves undefined: latin-1
        # itself maps every byte, so the declaration still holds.
        return DecodedText(data.decode("latin-1"), "latin-1")

    if declared and codec is None:
        reason = "unknown"
    elif declared:
        reason = "invalid"
    else:
        reason = "undeclared"

    if data.isascii():
        return DecodedText(data.decode("ascii"), "ascii", reason)

    # UTF-8 is checked before detection: valid UTF-8 of any length is almost
    # never another charset, and detectors misjudge short UTF-8 strings.
    text = _try(data, "utf-8")
    if text is None:
        text = nearly_utf8(data)
    if text is not None:
        return DecodedText(text, "utf-8", reason)

    detected = _detect(data)
    text = _try(data, detected)
    if text is not None and detected is not None:
        return DecodedText(text, detected, reason)

    return DecodedText(data.decode("cp1252", errors="replace"), "cp1252", reason)
