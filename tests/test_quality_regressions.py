"""Keep the corpus cases that parse_lead gets right on reply text and kind.

The cases and their scoring come from ``benchmarks/quality.py``, the quality
harness, so a test here fails exactly when the harness would count a new
miss. Upstream expectations that are wrong for a lead record are replaced by
``benchmarks/quality_corrections.tsv``, as in the harness. Cases that are
still wrong are listed in ``KNOWN_MISSES`` with the kind of fault and are
expected to fail, strictly: fixing one makes its test fail until it is
removed from the list.

The corpus is read from ``shared/corpus`` beside the repository; the module
skips when it is absent.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from leadparse import parse_lead
from leadparse.model import Lead

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

if not CORPUS.is_dir():
    pytest.skip(
        f"public email corpus not found at {CORPUS}; it lives in shared/corpus "
        "beside the repository",
        allow_module_level=True,
    )

pytestmark = pytest.mark.corpus


def _load_harness() -> ModuleType:
    path = REPO / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("leadparse_quality_harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


quality = _load_harness()
CORRECTIONS = quality.read_corrections()

# Case id -> kind of fault, for cases parse_lead still gets wrong.
KNOWN_MISSES: dict[str, str] = {
    # A mailing-list manager (fml) reports a mail loop ("Duplicated
    # Message-ID") without a DSN part, a bounce-like sender or a status code.
    "sisimai/bsd/lhost-fml-03.eml": "rule: fml loop alert",
}


def _params(cases: list[Any]) -> list[Any]:
    params = []
    for case in cases:
        case_id = case.ident
        marks = []
        if case_id in KNOWN_MISSES:
            marks.append(pytest.mark.xfail(reason=KNOWN_MISSES[case_id], strict=True))
        params.append(pytest.param(case, id=case_id, marks=marks))
    return params


@functools.cache
def _lead(raw: bytes) -> Lead:
    return parse_lead(raw, received_at=quality.FIXED_DATE)


# --- reply text -----------------------------------------------------------------

TALON_ENTRIES = quality.read_entries("talon")
TALON_REPLIES = quality.talon_reply_cases(TALON_ENTRIES, CORRECTIONS)
GITHUB_REPLIES = quality.reply_parser_cases(
    "github-email_reply_parser",
    quality.read_entries("github-email_reply_parser"),
    CORRECTIONS,
)
ZAPIER_REPLIES = quality.reply_parser_cases(
    "zapier-email-reply-parser",
    quality.read_entries("zapier-email-reply-parser"),
    CORRECTIONS,
)
TALON_SIGNATURES = quality.signature_cases(TALON_ENTRIES, CORRECTIONS)


def _assert_reply(case: Any) -> None:
    lead = _lead(case.raw)
    actual = getattr(lead, case.lead_field)
    if case.exact is not None and not case.whitespace_blind:
        expected = quality.normalize_lines(case.exact)
        assert quality.normalize_lines(actual) == expected
        return
    verdict = quality.judge_reply(case, actual)
    assert verdict.detail == ""
    assert verdict.correct


@pytest.mark.parametrize("case", _params(TALON_REPLIES))
def test_reply_text_talon(case: Any) -> None:
    _assert_reply(case)


@pytest.mark.parametrize("case", _params(GITHUB_REPLIES))
def test_reply_text_github(case: Any) -> None:
    _assert_reply(case)


@pytest.mark.parametrize("case", _params(ZAPIER_REPLIES))
def test_reply_text_zapier(case: Any) -> None:
    _assert_reply(case)


@pytest.mark.parametrize("case", _params(TALON_SIGNATURES))
def test_signature_talon(case: Any) -> None:
    lead = _lead(case.raw)
    expected = quality.normalize_lines(case.expected)
    assert quality.normalize_lines(lead.signature or "") == expected


def test_reply_case_counts() -> None:
    assert len(TALON_REPLIES) == 24
    assert len(GITHUB_REPLIES) == 20
    assert len(ZAPIER_REPLIES) == 17
    assert len(TALON_SIGNATURES) == 6


# --- classification -------------------------------------------------------------


def _kind_cases(source: str) -> list[Any]:
    return quality.kind_cases(source, quality.read_entries(source), CORRECTIONS)


SISIMAI_KINDS = _kind_cases("sisimai")
FLANKER_KINDS = _kind_cases("flanker")
ZAMMAD_KINDS = _kind_cases("zammad")


def _assert_kind(case: Any) -> None:
    lead = _lead(case.raw)
    assert lead.classification.kind in case.allowed


@pytest.mark.parametrize("case", _params(SISIMAI_KINDS))
def test_kind_sisimai(case: Any) -> None:
    _assert_kind(case)


@pytest.mark.parametrize("case", _params(FLANKER_KINDS))
def test_kind_flanker(case: Any) -> None:
    _assert_kind(case)


@pytest.mark.parametrize("case", _params(ZAMMAD_KINDS))
def test_kind_zammad(case: Any) -> None:
    _assert_kind(case)


def test_kind_case_counts() -> None:
    assert len(SISIMAI_KINDS) == 526
    assert len(FLANKER_KINDS) == 8
    assert len(ZAMMAD_KINDS) == 1
