"""Faster case-insensitive searches of ASCII text.

Python's regular-expression engine compares every character case-insensitively
under ``re.IGNORECASE``, and it cannot skip ahead to a literal prefix, so a
long case-insensitive alternation is several times slower than the same
search without the flag. For ASCII text the same matches come from a
case-sensitive twin of the pattern searched in the lower-cased text.

:func:`caseless` builds the twin only after checking that it matches exactly
what the original matches on every ASCII input. The parsed patterns must have
the same shape. Every character test (a literal, a negated literal or a
character class) must accept an ASCII character under ``re.IGNORECASE``
exactly when the twin's test accepts the character lower-cased. Zero-width
tests (``\\b``, ``^``, look-arounds) and classes such as ``\\w`` see the same
word and line characters after ASCII lower-casing, and lower-casing keeps
ASCII text the same length, so the match positions are the same too. Patterns
that fail the check, and text that is not ASCII, use the original pattern.

A pattern that starts with ``\\b`` is slow even without the flag, because the
engine then tries every position. So the twin also lists literal strings of
which every match contains one, and the search is skipped when the lower-cased
text contains none of them.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from typing import Any

__all__ = ["CaselessPattern", "FoldedText", "caseless"]

try:
    # The parser is private to the re module, so without it no twin is built.
    _PARSER: Any = importlib.import_module("re._parser")
    _CONSTANTS: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - present in CPython 3.11 to 3.13
    _PARSER = None
    _CONSTANTS = None

_ASCII = [chr(code) for code in range(128)]


class FoldedText:
    """A text with its lower-cased form when it is ASCII."""

    __slots__ = ("lowered", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.lowered = text.lower() if text.isascii() else None


class CaselessPattern:
    """A case-insensitive pattern with a case-sensitive twin for ASCII text."""

    __slots__ = ("pattern", "required", "twin")

    def __init__(
        self,
        pattern: re.Pattern[str],
        twin: re.Pattern[str] | None,
        required: tuple[str, ...] | None,
    ) -> None:
        self.pattern = pattern
        self.twin = twin
        self.required = required
        """Strings of which every match of the twin contains one, or ``None``."""

    def found_in(self, folded: FoldedText) -> bool:
        """Return whether the pattern matches anywhere in the text."""
        lowered = folded.lowered
        if self.twin is None or lowered is None:
            return self.pattern.search(folded.text) is not None
        if self.required is not None and not any(
            literal in lowered for literal in self.required
        ):
            return False
        return self.twin.search(lowered) is not None


def caseless(pattern: re.Pattern[str]) -> CaselessPattern:
    """Pair a case-insensitive *pattern* with its twin, when one is exact."""
    if not pattern.flags & re.IGNORECASE or _PARSER is None:
        return CaselessPattern(pattern, None, None)
    parsed = _parse_twin(pattern.pattern, pattern.flags)
    if parsed is None:
        return CaselessPattern(pattern, None, None)
    lowered, tree = parsed
    twin = re.compile(lowered, pattern.flags & ~re.IGNORECASE)
    required = _required_literals(tree.data)
    if required is None:
        return CaselessPattern(pattern, twin, None)
    # Only ASCII text reaches the twin, so a string with other characters
    # never occurs in it, and a string that contains another is redundant.
    ascii_only = {literal for literal in required if literal.isascii()}
    minimal = tuple(
        sorted(
            literal
            for literal in ascii_only
            if not any(other in literal for other in ascii_only if other != literal)
        )
    )
    return CaselessPattern(pattern, twin, minimal)


def _parse_twin(source: str, flags: int) -> tuple[str, Any] | None:
    """Return the twin's source and parsed tree, or ``None`` when not exact."""
    lowered = _lower_outside_escapes(source)
    if lowered is None:
        return None
    twin_flags = flags & ~re.IGNORECASE
    try:
        original = _PARSER.parse(source, flags)
        twin = _PARSER.parse(lowered, twin_flags)
    except (re.error, RecursionError):
        return None
    if (original.state.flags & ~re.IGNORECASE) != twin.state.flags:
        # An inline flag group such as "(?i)" or "(?x)" changed the flags.
        return None
    if not _same_on_ascii(original.data, twin.data):
        return None
    return lowered, twin


def _required_literals(sequence: list[Any]) -> set[str] | None:
    """Find strings of which every match of the parsed *sequence* contains one.

    The candidates are each run of consecutive literal characters, each group
    or repeat that must match at least once, and each alternation whose every
    branch has such strings. The candidate whose shortest string is longest
    wins, because a longer string is found in fewer texts.
    """
    constants = _CONSTANTS
    candidates: list[set[str]] = []
    run: list[str] = []
    for op, av in sequence:
        if op is constants.LITERAL:
            run.append(chr(av))
            continue
        if run:
            candidates.append({"".join(run)})
            run = []
        inner: set[str] | None = None
        if op is constants.SUBPATTERN:
            inner = _required_literals(av[3].data)
        elif op is constants.ATOMIC_GROUP:
            inner = _required_literals(av.data)
        elif (
            op
            in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT)
            and av[0] >= 1
        ):
            inner = _required_literals(av[2].data)
        elif op is constants.BRANCH:
            branches = [_required_literals(branch.data) for branch in av[1]]
            if all(branches):
                inner = set().union(*branches)  # type: ignore[arg-type]
        if inner:
            candidates.append(inner)
    if run:
        candidates.append({"".join(run)})
    if not candidates:
        return None
    return max(candidates, key=lambda strings: min(len(s) for s in strings))


def _lower_outside_escapes(source: str) -> str | None:
    out: list[str] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char == "\\":
            escaped = source[index + 1 : index + 2]
            if escaped == "N":
                # "\N{NAME}" names a character in capitals.
                return None
            out.append(char + escaped)
            index += 2
            continue
        lower = char.lower()
        out.append(lower if len(lower) == 1 else char)
        index += 1
    return "".join(out)


def _same_on_ascii(original: list[Any], twin: list[Any]) -> bool:
    """Check two parsed sequences node by node (see the module docs)."""
    if len(original) != len(twin):
        return False
    return all(_same_node(a, b) for a, b in zip(original, twin, strict=True))


def _same_node(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    constants = _CONSTANTS
    op, av = a
    twin_op, twin_av = b
    if op is not twin_op:
        return False
    if op in (constants.LITERAL, constants.NOT_LITERAL, constants.IN):
        original_class = _class_source(op, av)
        twin_class = _class_source(twin_op, twin_av)
        if original_class is None or twin_class is None:
            return False
        return _class_same_on_ascii(original_class, twin_class)
    if op in (constants.ANY, constants.AT, constants.CATEGORY, constants.GROUPREF):
        return bool(av == twin_av)
    if op is constants.SUBPATTERN:
        group, add_flags, del_flags, sub = av
        if add_flags or del_flags or twin_av[1] or twin_av[2]:
            return False
        return bool(group == twin_av[0]) and _same_on_ascii(sub.data, twin_av[3].data)
    if op is constants.BRANCH:
        if len(av[1]) != len(twin_av[1]):
            return False
        return all(
            _same_on_ascii(x.data, y.data)
            for x, y in zip(av[1], twin_av[1], strict=True)
        )
    if op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
        if av[:2] != twin_av[:2]:
            return False
        return _same_on_ascii(av[2].data, twin_av[2].data)
    if op in (constants.ASSERT, constants.ASSERT_NOT):
        return bool(av[0] == twin_av[0]) and _same_on_ascii(av[1].data, twin_av[1].data)
    if op is constants.ATOMIC_GROUP:
        return _same_on_ascii(av.data, twin_av.data)
    return False


_CATEGORIES = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


def _class_source(op: Any, av: Any) -> str | None:
    """Write one character test back as a bracketed class, or ``None``."""
    constants = _CONSTANTS
    if op is constants.LITERAL:
        return "[" + re.escape(chr(av)) + "]"
    if op is constants.NOT_LITERAL:
        return "[^" + re.escape(chr(av)) + "]"
    items: list[str] = []
    for item_op, item_av in av:
        if item_op is constants.NEGATE and not items:
            items.append("^")
        elif item_op is constants.LITERAL:
            items.append(re.escape(chr(item_av)))
        elif item_op is constants.RANGE:
            low, high = item_av
            items.append(re.escape(chr(low)) + "-" + re.escape(chr(high)))
        elif item_op is constants.CATEGORY and str(item_av) in _CATEGORIES:
            items.append(_CATEGORIES[str(item_av)])
        else:
            return None
    return "[" + "".join(items) + "]"


@lru_cache(maxsize=1024)
def _class_same_on_ascii(original: str, twin: str) -> bool:
    """Check that *twin* accepts each ASCII character lower-cased exactly when
    *original* accepts it under ``re.IGNORECASE``."""
    insensitive = re.compile(original, re.IGNORECASE)
    sensitive = re.compile(twin)
    return all(
        (insensitive.fullmatch(char) is None)
        == (sensitive.fullmatch(char.lower()) is None)
        for char in _ASCII
    )
