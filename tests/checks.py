"""Checks that fixture expect files run against the JSON form of a Lead.

An expect file contains ``{"checks": [...], "why": "..."}``. Each check is a list
whose first item names its kind:

- ``["eq", path, value]``: equal, after Unicode NFC normalization of strings.
- ``["ne", path, value]``: anything but this value (a missing field passes).
- ``["eq_text", path, text]``: equal after trimming both ends of the text and
  the trailing whitespace of each line.
- ``["contains", path, [s, ...]]`` / ``["lacks", path, [s, ...]]``: each string
  is / is not a substring of the value. ``lacks`` passes on a missing or null
  value, because nothing is a substring of it.
- ``["empty", path]``: missing, null, empty string or empty list.
- ``["null", path]`` / ``["not_null", path]``: missing or null / present.
- ``["line_regex", path, [regex, ...]]``: each regex matches (``re.search``)
  some line of the value.
- ``["filenames", [name, ...]]``: the attachments' filenames, in order.

Paths use dots, and list indexes are written as numbers (``to.0.email``). A
path that starts with ``vcard.`` reads the ``contact`` block of the first
attachment that has one.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

__all__ = ["CHECK_KINDS", "resolve_path", "run_checks"]

CHECK_KINDS = frozenset(
    {
        "eq",
        "ne",
        "eq_text",
        "contains",
        "lacks",
        "empty",
        "null",
        "not_null",
        "line_regex",
        "filenames",
    }
)


class _Missing:
    """The value of a path that leads nowhere."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def resolve_path(lead_json: dict[str, Any], path: str) -> Any:
    """Return the value at a dotted *path* in *lead_json*, or ``MISSING``.

    Args:
        lead_json: the JSON form of a Lead.
        path: dot-separated keys and list indexes, for example ``to.0.email``,
            or ``vcard.X`` for field X of the first parsed vCard.
    """
    segments = path.split(".")
    current: Any = lead_json
    if segments[0] == "vcard":
        current = _first_contact(lead_json)
        segments = segments[1:]
    for segment in segments:
        if isinstance(current, dict):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, list):
            if not re.fullmatch(r"\d+", segment) or int(segment) >= len(current):
                return MISSING
            current = current[int(segment)]
        else:
            return MISSING
    return current


def _first_contact(lead_json: dict[str, Any]) -> Any:
    attachments = lead_json.get("attachments")
    if not isinstance(attachments, list):
        return MISSING
    for attachment in attachments:
        if isinstance(attachment, dict) and attachment.get("contact") is not None:
            return attachment["contact"]
    return MISSING


def _nfc(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, list):
        return [_nfc(item) for item in value]
    if isinstance(value, dict):
        return {_nfc(key): _nfc(item) for key, item in value.items()}
    return value


def _trim_text(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _format_value(value: Any) -> str:
    if value is MISSING:
        return "<missing>"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + "..."


def run_checks(lead_json: dict[str, Any], checks: list[Any]) -> list[str]:
    """Run every check on *lead_json* and return one message per failed check.

    Args:
        lead_json: the JSON form of a Lead (``lead.model_dump(mode="json")``).
        checks: the ``checks`` list of an expect file.

    Returns:
        Failure messages in check order; an empty list when every check passes.
        A malformed check or an unknown kind is reported as a failure too.
    """
    failures: list[str] = []
    for number, check in enumerate(checks):
        message = _run_one(lead_json, check)
        if message is not None:
            failures.append(f"check {number} {json.dumps(check)[:200]}: {message}")
    return failures


def _run_one(lead_json: dict[str, Any], check: Any) -> str | None:
    if not isinstance(check, list) or not check or check[0] not in CHECK_KINDS:
        return f"invalid check: the kind must be one of {sorted(CHECK_KINDS)}"
    kind = check[0]
    if kind == "filenames":
        if len(check) != 2 or not isinstance(check[1], list):
            return "invalid check: expected ['filenames', [name, ...]]"
        attachments = lead_json.get("attachments") or []
        names = [item.get("filename") for item in attachments]
        if _nfc(names) != _nfc(check[1]):
            return f"filenames are {_format_value(names)}"
        return None
    if len(check) < 2 or not isinstance(check[1], str):
        return "invalid check: the second item must be a dotted path"
    actual = resolve_path(lead_json, check[1])
    if kind in ("empty", "null", "not_null"):
        if len(check) != 2:
            return f"invalid check: {kind} takes only a path"
        return _check_presence(kind, actual)
    if len(check) != 3:
        return f"invalid check: {kind} takes a path and one value"
    return _check_value(kind, actual, check[2])


def _check_presence(kind: str, actual: Any) -> str | None:
    if kind == "empty":
        if actual is MISSING or actual in (None, "", []):
            return None
        return f"expected empty, got {_format_value(actual)}"
    is_null = actual is MISSING or actual is None
    if kind == "null" and not is_null:
        return f"expected null, got {_format_value(actual)}"
    if kind == "not_null" and is_null:
        return f"expected a value, got {_format_value(actual)}"
    return None


def _check_value(kind: str, actual: Any, expected: Any) -> str | None:
    if kind == "eq":
        if actual is MISSING or _nfc(actual) != _nfc(expected):
            return f"expected {_format_value(expected)}, got {_format_value(actual)}"
        return None
    if kind == "ne":
        if actual is not MISSING and _nfc(actual) == _nfc(expected):
            return f"expected anything but {_format_value(expected)}"
        return None
    if kind == "eq_text":
        if not isinstance(expected, str):
            return "invalid check: eq_text needs a string"
        if not isinstance(actual, str):
            return f"expected text, got {_format_value(actual)}"
        if _trim_text(actual) != _trim_text(expected):
            return (
                f"expected text {_format_value(expected)}, got {_format_value(actual)}"
            )
        return None
    if not isinstance(expected, list) or not all(isinstance(s, str) for s in expected):
        return f"invalid check: {kind} needs a list of strings"
    if kind == "lacks":
        if actual is MISSING or actual is None:
            return None
        if not isinstance(actual, str):
            return f"expected text, got {_format_value(actual)}"
        found = [s for s in expected if s in actual]
        return (
            f"unexpected {_format_value(found)} in {_format_value(actual)}"
            if found
            else None
        )
    if not isinstance(actual, str):
        return f"expected text, got {_format_value(actual)}"
    if kind == "contains":
        absent = [s for s in expected if s not in actual]
        return (
            f"missing {_format_value(absent)} in {_format_value(actual)}"
            if absent
            else None
        )
    lines = actual.splitlines()
    unmatched = [
        pattern
        for pattern in expected
        if not any(re.search(pattern, line) for line in lines)
    ]
    if unmatched:
        return f"no line matches {_format_value(unmatched)} in {_format_value(actual)}"
    return None
