"""Files and body recovered from Outlook's winmail.dat (application/ms-tnef)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tnefparse import TNEF  # type: ignore[import-untyped]

__all__ = ["TNEF_TYPES", "TnefContent", "is_tnef", "read_tnef"]

logger = logging.getLogger(__name__)

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})


@dataclass
class TnefContent:
    """Contents of a TNEF stream: body text and files, or why it could not be read."""

    body: str | None = None
    files: list[tuple[str | None, bytes]] = field(default_factory=list)
    error: str | None = None


def is_tnef(content_type: str, filename: str | None, head: bytes) -> bool:
    """Tell whether a part is TNEF by its type, its name or its signature."""
    if content_type in TNEF_TYPES:
        return True
    if filename and filename.lower() == "winmail.dat":
        return True
    # MS-OXTNEF section 2.1.3.1: every stream starts with 0x223E9F78, little-endian.
    return head[:4] == b"\x78\x9f\x3e\x22"


def _to_text(value: object, codepage: str) -> str | None:
    if isinstance(value, bytes):
        try:
            text = value.decode(codepage)
        except (LookupError, ValueError):
            text = value.decode("cp1252", "replace")
    elif isinstance(value, str):
        text = value
    else:
        return None
    return text.strip("\x00") or None


def read_tnef(data: bytes) -> TnefContent:
    """Decode a TNEF stream with tnefparse; never raises on bad input.

    Embedded messages inside the stream are not opened. The plain-text body is
    preferred, and the HTML body is returned as is when it is the only one.
    """
    try:
        tnef = TNEF(data, do_checksum=False)
    except Exception as exc:
        # tnefparse raises ValueError on a bad signature but also IndexError,
        # struct.error, AssertionError and UnicodeDecodeError on damaged streams.
        logger.debug("tnefparse failed", exc_info=True)
        return TnefContent(error=f"{type(exc).__name__}: {str(exc)[:200]}")

    codepage = tnef.codepage or "cp1252"
    content = TnefContent(body=_to_text(tnef.body, codepage))
    if content.body is None:
        content.body = _to_text(tnef.htmlbody, codepage)
    for attachment in tnef.attachments:
        try:
            name = _to_text(attachment.long_filename(), codepage)
        except (UnicodeDecodeError, AttributeError):
            name = None
        payload = attachment.data
        if isinstance(payload, bytes):
            content.files.append((name, payload))
    return content
