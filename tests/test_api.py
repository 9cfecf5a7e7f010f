from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

import leadparse
from leadparse import DefectError, NotEmailError, Policy, parse_lead

from .conftest import message


def user_example() -> bytes:
    from importlib import resources

    return (resources.files("leadparse") / "samples" / "demo-request.eml").read_bytes()


def test_user_example_golden_fields() -> None:
    lead = parse_lead(user_example())
    data = lead.model_dump(mode="json")

    assert data["message_id"] == "abc123@contoso.com"
    assert data["from"] == {
        "name": "Ana Gomez",
        "email": "ana@contoso.com",
        "domain": "contoso.com",
    }
    assert data["body_source"] == "text/plain"
    assert data["message_text"].startswith("Hi team,\n\nWe are evaluating")
    assert data["message_text"].endswith("Head of Data, Contoso\n+1 (415) 555-0100")
    assert data["attachments"] == []
    assert data["classification"]["kind"] == "lead"
    assert data["extracted"]["intent"] == ["demo_request", "pricing", "enterprise"]
    assert data["extracted"]["company"] == "Contoso"
    assert data["extracted"]["lead_score"] > 0
    assert data["extracted"]["score_reasons"]


def test_payload_uses_json_names() -> None:
    data = parse_lead(user_example()).model_dump(mode="json")

    assert "from" in data
    assert "from_" not in data


def test_public_names_sorted_and_present() -> None:
    assert leadparse.__all__ == sorted(leadparse.__all__)
    for name in leadparse.__all__:
        assert hasattr(leadparse, name), name


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "input is empty"),
        (b"just some words\nand more", "does not begin with a header field"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "does not begin with a header field"),
        (b"<html><body>hi</body></html>", "does not begin with a header field"),
        (b": no name\n\nbody", "does not begin with a header field"),
    ],
)
def test_not_email_raises_typed_error(data: bytes, reason: str) -> None:
    with pytest.raises(NotEmailError) as caught:
        parse_lead(data)

    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_not_email_message_shows_input_start() -> None:
    with pytest.raises(NotEmailError, match=r"input starts with b'hello there'"):
        parse_lead(b"hello there")


def test_str_input_raises_type_error() -> None:
    with pytest.raises(TypeError, match="needs the raw message as bytes"):
        parse_lead("From: a@b.c\n\nhi")  # type: ignore[arg-type]


def test_bytearray_input_is_accepted() -> None:
    lead = parse_lead(bytearray(message("From: a@example.org", "Subject: x")))

    assert lead.from_.email == "a@example.org"


def test_mbox_from_line_is_skipped() -> None:
    raw = b"From sender@example.org Mon Mar  4 10:00:00 2024\n" + message(
        "From: Ann <ann@example.org>", "Subject: hello"
    )

    lead = parse_lead(raw)

    assert lead.subject == "hello"
    assert lead.from_.email == "ann@example.org"


def test_strict_policy_raises_defect_error() -> None:
    raw = message("From: a@example.org", "Date: not a date")

    with pytest.raises(DefectError) as caught:
        parse_lead(raw, policy=Policy(strict=True))

    assert [d.code for d in caught.value.defects] == ["invalid_date"]
    assert caught.value.lead.from_.email == "a@example.org"


def test_lenient_policy_records_defect() -> None:
    lead = parse_lead(message("From: a@example.org", "Date: not a date"))

    assert lead.date is None
    assert [d.code for d in lead.defects] == ["invalid_date"]


def test_received_at_is_utc() -> None:
    moment = datetime(2024, 3, 5, 10, 0, tzinfo=timezone(timedelta(hours=2)))

    lead = parse_lead(message("From: a@example.org"), received_at=moment)

    assert lead.received_at == datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
    assert lead.model_dump(mode="json")["received_at"] == "2024-03-05T08:00:00Z"


def test_provenance_records_hash_and_version() -> None:
    raw = message("From: a@example.org")

    lead = parse_lead(raw)

    import hashlib

    assert lead.provenance.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert lead.provenance.parser_version == leadparse.__version__
    assert lead.provenance.stages[0] == "decode"
    assert lead.provenance.stages[-1] == "identity"


def test_envelope_mapping_sets_channel() -> None:
    lead = parse_lead(
        message("From: a@example.org", "To: other@example.net"),
        envelope={
            "mail_from": "a@example.org",
            "rcpt_tos": ["Demos+Q3@Leads.Example.com"],
        },
    )

    assert lead.channel.source_address == "demos+q3@leads.example.com"
    assert lead.channel.plus_tag == "q3"
    assert lead.channel.campaign == "q3"


def test_envelope_with_undecodable_bytes_still_serializes() -> None:
    lead = parse_lead(
        message("From: a@example.org"),
        envelope={
            "mail_from": "x@example.org",
            "rcpt_tos": ["jos\udce9@leads.example.com"],
        },
    )

    assert lead.channel.source_address == "jos\ufffd@leads.example.com"
    assert "jos" in lead.model_dump_json()


def test_utf7_lone_surrogate_is_replaced() -> None:
    raw = b"From: a@example.org\nContent-Type: text/plain; charset=utf-7\n\na +2HI- b\n"

    lead = parse_lead(raw)

    assert lead.body_text == "a \ufffd b"
    assert [d.code for d in lead.defects] == ["undecodable_text"]
    assert "a \ufffd b" in lead.model_dump_json()
