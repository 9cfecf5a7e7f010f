"""Run every fixture email through parse_lead and apply its expect file.

Each ``NAME.eml`` under ``fixtures/core`` and ``fixtures/cases`` has a
``NAME.expect.json`` next to it; see ``fixtures/README.md`` for the format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from leadparse import parse_lead

from .checks import run_checks

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE_DIRS = [FIXTURES / "core", FIXTURES / "cases"]
EMAILS = sorted(path for folder in FIXTURE_DIRS for path in folder.glob("*.eml"))


def _expect_path(email: Path) -> Path:
    return email.with_name(f"{email.stem}.expect.json")


def test_fixture_folders_hold_emails() -> None:
    for folder in FIXTURE_DIRS:
        assert sorted(folder.glob("*.eml")), f"no .eml files in {folder}"


def test_fixture_stems_unique() -> None:
    stems = [path.stem for path in EMAILS]
    assert len(stems) == len(set(stems))


def test_fixture_every_email_has_expect() -> None:
    missing = [path.name for path in EMAILS if not _expect_path(path).is_file()]
    assert missing == []


def test_fixture_every_expect_has_email() -> None:
    orphans = [
        path.name
        for folder in FIXTURE_DIRS
        for path in folder.glob("*.expect.json")
        if not path.with_name(path.name.removesuffix(".expect.json") + ".eml").is_file()
    ]
    assert orphans == []


@pytest.mark.parametrize("email", EMAILS, ids=[path.stem for path in EMAILS])
def test_fixture_email(email: Path) -> None:
    expect: dict[str, Any] = json.loads(_expect_path(email).read_text("utf-8"))
    assert expect["checks"], f"{email.name} has no checks"
    assert expect["why"].strip(), f"{email.name} has no 'why'"

    lead_json = parse_lead(email.read_bytes()).model_dump(mode="json")

    failures = run_checks(lead_json, expect["checks"])
    assert failures == [], "\n".join(failures)
    stage_failures = [
        defect["message"]
        for defect in lead_json["defects"]
        if defect["code"] == "stage_failed"
    ]
    assert stage_failures == []
