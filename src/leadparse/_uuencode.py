"""uuencoded files pasted into a text body ("begin 644 name" ... "end")."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

__all__ = ["UuBlock", "find_uuencoded"]

# POSIX uuencode output: a "begin MODE NAME" line, encoded lines, a line of a
# single backquote or space, then "end".
_BLOCK = re.compile(
    r"^begin[ \t]+[0-7]{3,4}[ \t]+(?P<name>[^\r\n]+?)[ \t]*\r?\n"
    r"(?P<body>(?:[^\r\n]*\r?\n)*?)"
    r"end[ \t]*$",
    re.MULTILINE,
)


@dataclass
class UuBlock:
    """One decoded block: its declared name, bytes and whether lines were damaged."""

    name: str
    data: bytes
    damaged_lines: int


def _decode_line(line: str) -> bytes | None:
    if not line or line in {"`", " "}:
        return b""
    try:
        return binascii.a2b_uu(line)
    except (binascii.Error, ValueError):
        pass
    # Some encoders pad lines wrongly: cut the line to the length its first
    # character announces and retry, as uudecode implementations do.
    length = (ord(line[0]) - 32) & 63
    try:
        return binascii.a2b_uu(line[: (length * 4 + 5) // 3])
    except (binascii.Error, ValueError):
        return None


def split_uuencoded(text: str) -> tuple[str, str]:
    """Split *text* into its prose and its uuencoded blocks, both in order."""
    blocks = [match.group(0) for match in _BLOCK.finditer(text)]
    if not blocks:
        return text, ""
    prose = _BLOCK.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", prose).strip("\n"), "\n".join(blocks)


def find_uuencoded(text: str, max_blocks: int) -> list[UuBlock]:
    """Decode up to *max_blocks* uuencoded blocks found in *text*, in order."""
    blocks: list[UuBlock] = []
    for match in _BLOCK.finditer(text):
        if len(blocks) >= max_blocks:
            break
        chunks: list[bytes] = []
        damaged = 0
        for line in match.group("body").splitlines():
            decoded = _decode_line(line.rstrip("\r"))
            if decoded is None:
                damaged += 1
            else:
                chunks.append(decoded)
        blocks.append(UuBlock(match.group("name"), b"".join(chunks), damaged))
    return blocks
