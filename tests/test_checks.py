"""Unit tests of the fixture check runner on small hand-written dicts."""

from __future__ import annotations

from typing import Any

import pytest

from .checks import resolve_path, run_checks

LEAD: dict[str, Any] = {
    "message_id": "abc123@example.com",
    "subject": "Caf\u00e9 order",
    "body_text": "  Hello,  \nName: Ana   \n\nThanks\n",
    "signature": None,
    "body_html": None,
    "to": [{"name": "Sales", "email": "sales@example.net"}],
    "cc": [],
    "quoted_text": "",
    "extracted": {"intent": ["demo_request", "pricing"], "lead_score": 0},
    "attachments": [
        {"filename": "a.pdf", "contact": None},
        {"filename": "card.vcf", "contact": {"full_name": "Ana Gomez"}},
        {"filename": "b.vcf", "contact": {"full_name": "Other Person"}},
    ],
}


def test_resolve_path_dict_and_list_index() -> None:
    assert resolve_path(LEAD, "to.0.email") == "sales@example.net"


def test_resolve_path_index_out_of_range() -> None:
    assert repr(resolve_path(LEAD, "to.1.email")) == "<missing>"


def test_resolve_path_vcard_first_contact() -> None:
    assert resolve_path(LEAD, "vcard.full_name") == "Ana Gomez"


def test_resolve_path_vcard_without_contact() -> None:
    assert repr(resolve_path({"attachments": []}, "vcard.full_name")) == "<missing>"


@pytest.mark.parametrize(
    "check",
    [
        ["eq", "message_id", "abc123@example.com"],
        # The expected value is decomposed (e + combining acute): NFC makes it equal.
        ["eq", "subject", "Cafe\u0301 order"],
        ["eq", "extracted.intent", ["demo_request", "pricing"]],
        ["eq", "extracted.intent.1", "pricing"],
        ["eq", "extracted.lead_score", 0],
        ["eq", "signature", None],
        ["ne", "message_id", "other@example.com"],
        ["ne", "no_such_field", "x"],
        ["eq_text", "body_text", "Hello,\nName: Ana\n\nThanks"],
        ["contains", "body_text", ["Name: Ana", "Thanks"]],
        ["lacks", "body_text", ["Bob", "Regards"]],
        ["lacks", "body_html", ["<script"]],
        ["lacks", "no_such_field", ["x"]],
        ["empty", "cc"],
        ["empty", "quoted_text"],
        ["empty", "signature"],
        ["empty", "no_such_field"],
        ["null", "signature"],
        ["null", "no_such_field"],
        ["not_null", "message_id"],
        ["not_null", "cc"],
        ["line_regex", "body_text", [r"^Name: Ana\s*$", "^Thanks$"]],
        ["filenames", ["a.pdf", "card.vcf", "b.vcf"]],
        ["eq", "vcard.full_name", "Ana Gomez"],
    ],
    ids=lambda check: f"{check[0]}-{check[1]}" if len(check) > 1 else check[0],
)
def test_run_checks_passing(check: list[Any]) -> None:
    assert run_checks(LEAD, [check]) == []


@pytest.mark.parametrize(
    ("check", "fragment"),
    [
        (["eq", "message_id", "abc124@example.com"], "expected"),
        (["eq", "no_such_field", None], "<missing>"),
        (["eq", "extracted.intent", ["pricing", "demo_request"]], "got"),
        (["ne", "message_id", "abc123@example.com"], "anything but"),
        (["eq_text", "body_text", "Hello,\nName: Bob\n\nThanks"], "expected text"),
        (["eq_text", "extracted.intent", "demo_request"], "expected text"),
        (["contains", "body_text", ["Name: Ana", "Bob"]], "Bob"),
        (["contains", "signature", ["x"]], "expected text"),
        (["contains", "extracted.intent", ["pricing"]], "expected text"),
        (["lacks", "body_text", ["Thanks"]], "unexpected"),
        (["empty", "to"], "expected empty"),
        (["empty", "extracted.lead_score"], "expected empty"),
        (["null", "message_id"], "expected null"),
        (["not_null", "signature"], "expected a value"),
        (["not_null", "no_such_field"], "expected a value"),
        (["line_regex", "body_text", ["^Name: Bob$"]], "no line matches"),
        (["line_regex", "body_text", ["^Hello,$"]], "no line matches"),
        (["filenames", ["a.pdf", "card.vcf"]], "filenames are"),
        (["eq", "vcard.full_name", "Other Person"], "expected"),
        (["approximately", "subject", "x"], "invalid check"),
        (["eq", "subject"], "invalid check"),
        (["contains", "body_text", "Thanks"], "invalid check"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_run_checks_failing(check: list[Any], fragment: str) -> None:
    failures = run_checks(LEAD, [check])

    assert len(failures) == 1
    assert fragment in failures[0]


def test_run_checks_lists_every_failure() -> None:
    checks = [
        ["eq", "message_id", "wrong@example.com"],
        ["not_null", "message_id"],
        ["null", "message_id"],
    ]

    failures = run_checks(LEAD, checks)

    assert len(failures) == 2
    assert failures[0].startswith("check 0 ")
    assert failures[1].startswith("check 2 ")
