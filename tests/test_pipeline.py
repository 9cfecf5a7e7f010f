from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadparse import (
    MessageDraft,
    Pipeline,
    Policy,
    ScoreReason,
    StageError,
    parse_lead,
    registered_stages,
    stage,
)
from leadparse._stages import DEFAULT_STAGES
from leadparse.api import _check_is_email
from leadparse.model import Lead, Provenance

from .conftest import message

DEFAULT_ORDER = [
    "decode",
    "body",
    "forms",
    "quotes",
    "signature",
    "attachments",
    "classify",
    "contact",
    "normalize",
    "channel",
    "intent",
    "score",
    "identity",
]


@stage("partner_bonus")
def partner_bonus(draft: MessageDraft, policy: Policy) -> MessageDraft:
    extracted = draft.lead.extracted
    if (
        draft.lead.classification.kind == "lead"
        and draft.lead.channel.campaign == "partners"
    ):
        extracted.score_reasons.append(ScoreReason(code="partner_campaign", points=20))
        extracted.lead_score = min(100, extracted.lead_score + 20)
    return draft


def test_default_pipeline_order() -> None:
    assert Pipeline.default().names == DEFAULT_ORDER


def test_custom_scoring_stage_from_docs() -> None:
    raw = message("From: Pat <pat@northwind.example>", "Subject: Pricing question")
    pipeline = Pipeline.default().insert_after("score", partner_bonus)

    plain = parse_lead(raw)
    boosted = parse_lead(
        raw,
        pipeline=pipeline,
        envelope={"rcpt_tos": ["sales+partners@leads.example.com"]},
    )

    assert boosted.extracted.lead_score == plain.extracted.lead_score + 20
    assert boosted.extracted.score_reasons[-1].code == "partner_campaign"
    assert "partner_bonus" in boosted.provenance.stages


def test_custom_stage_documented_verbatim() -> None:
    docs = (
        Path(__file__).resolve().parents[1] / "docs" / "custom-stages.md"
    ).read_text()

    assert 'ScoreReason(code="partner_campaign", points=20)' in docs
    assert 'Pipeline.default().insert_after("score", partner_bonus)' in docs


def test_insert_before_and_remove() -> None:
    pipeline = (
        Pipeline.default().insert_before("decode", partner_bonus).remove("intent")
    )

    assert pipeline.names[0] == "partner_bonus"
    assert "intent" not in pipeline


def test_replace_stage() -> None:
    @stage("intent")
    def no_intent(draft: MessageDraft, policy: Policy) -> MessageDraft:
        draft.lead.extracted.intent = ["custom"]
        return draft

    pipeline = Pipeline.default().replace("intent", no_intent)
    lead = parse_lead(
        message("From: a@example.org", "Subject: demo"), pipeline=pipeline
    )

    assert lead.extracted.intent == ["custom"]


def test_unknown_stage_name_raises() -> None:
    with pytest.raises(StageError, match="no stage named 'nope'"):
        Pipeline.default().remove("nope")


def test_duplicate_stage_name_raises() -> None:
    with pytest.raises(StageError, match="already in"):
        Pipeline.default().append(DEFAULT_STAGES[0])


def test_non_stage_rejected() -> None:
    with pytest.raises(StageError, match="is not a stage"):
        Pipeline().append(lambda draft, policy: draft)  # type: ignore[arg-type]


def test_stage_returning_other_type_raises() -> None:
    @stage("broken")
    def broken(draft: MessageDraft, policy: Policy) -> MessageDraft:
        return None  # type: ignore[return-value]

    with pytest.raises(StageError, match="must return the MessageDraft"):
        parse_lead(
            message("From: a@example.org"), pipeline=[*Pipeline.default(), broken]
        )


def test_raising_stage_becomes_defect() -> None:
    @stage("explodes")
    def explodes(draft: MessageDraft, policy: Policy) -> MessageDraft:
        raise RuntimeError("boom")

    pipeline = Pipeline.default().insert_after("decode", explodes)
    lead = parse_lead(message("From: a@example.org"), pipeline=pipeline)

    assert [d.code for d in lead.defects] == ["stage_failed"]
    assert "RuntimeError: boom" in lead.defects[0].message
    assert lead.idempotency_key


@pytest.mark.parametrize("item", DEFAULT_STAGES, ids=lambda s: s.name)
def test_every_stage_keeps_contract(item: object) -> None:
    raw = message("From: Ann <ann@example.org>", "Subject: hi", body="Hello there")
    _check_is_email(raw)
    policy = Policy()
    lead = Lead(
        received_at="2024-01-01T00:00:00Z",
        provenance=Provenance(raw_sha256="0", parser_version="t"),
    )
    draft = MessageDraft(raw=raw, lead=lead)
    for before in DEFAULT_STAGES:
        if before is item:
            break
        draft = before(draft, policy)

    result = item(draft, policy)  # type: ignore[operator]

    assert result is draft
    assert isinstance(item.name, str)  # type: ignore[attr-defined]


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    package = tmp_path / "acme_stages"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from leadparse import stage

            @stage("acme_tag")
            def acme_tag(draft, policy):
                draft.lead.extracted.intent.append("acme")
                return draft

            acme_tag.after = "intent"

            def make_other():
                @stage("acme_other")
                def other(draft, policy):
                    return draft
                return other
            """
        )
    )
    dist = tmp_path / "acme_stages-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-stages\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[leadparse.stages]\nacme_tag = acme_stages:acme_tag\nacme_other = acme_stages:make_other\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("acme_stages", None)


@pytest.mark.usefixtures("installed_plugin")
def test_entry_point_stages_load() -> None:
    found = registered_stages()

    assert sorted(found) == ["acme_other", "acme_tag"]
    assert found["acme_tag"].name == "acme_tag"


@pytest.mark.usefixtures("installed_plugin")
def test_default_with_plugins_places_stages() -> None:
    pipeline = Pipeline.default(plugins=True)

    assert pipeline.names.index("acme_tag") == pipeline.names.index("intent") + 1
    assert pipeline.names[-2:] == ["acme_other", "identity"]
    lead = parse_lead(message("From: a@example.org"), pipeline=pipeline)
    assert lead.extracted.intent == ["acme"]


def test_surrogates_from_a_stage_are_scrubbed() -> None:
    @stage("leaky")
    def leaky(draft: MessageDraft, policy: Policy) -> MessageDraft:
        draft.lead.extracted.company = "Caf\udce9"
        draft.add_defect("custom", "quoted \udcff input")
        return draft

    pipeline = Pipeline.default().insert_before("identity", leaky)
    lead = parse_lead(message("From: a@example.org"), pipeline=pipeline)

    assert lead.extracted.company == "Caf\ufffd"
    assert [d.code for d in lead.defects] == ["custom", "undecodable_text"]
    assert lead.defects[0].message == "quoted \ufffd input"
    assert "Caf" in lead.model_dump_json()
