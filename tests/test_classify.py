"""Tests for the classify stage on fixture messages and the shared failure cases."""

from __future__ import annotations

import email.policy
import hashlib
import json
from datetime import UTC, datetime
from email.parser import BytesParser
from pathlib import Path

import pytest

from leadparse._bounce import message_text
from leadparse.classify import classify_stage
from leadparse.forms import forms_stage
from leadparse.model import Classification, Lead, Provenance
from leadparse.pipeline import Envelope, MessageDraft
from leadparse.policy import Policy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _draft(raw: bytes, envelope: Envelope | None = None) -> MessageDraft:
    """Build the draft the classify stage receives, without the decode stages."""
    message = BytesParser(policy=email.policy.compat32).parsebytes(raw)
    lead = Lead(
        received_at=datetime(2024, 3, 20, tzinfo=UTC),
        provenance=Provenance(
            raw_sha256=hashlib.sha256(raw).hexdigest(), parser_version="test"
        ),
    )
    lead.body_text = message_text(message)
    return MessageDraft(raw=raw, lead=lead, message=message, envelope=envelope)


def _classify(name: str, envelope: Envelope | None = None) -> MessageDraft:
    draft = _draft((FIXTURES / name).read_bytes(), envelope)
    draft = forms_stage(draft, Policy())
    return classify_stage(draft, Policy())


def test_classify_french_auto_submitted_is_out_of_office() -> None:
    result = _classify("classify/ooo-french-auto-submitted.eml").lead.classification
    assert result.kind == "auto_reply"
    assert result.subkind == "out_of_office"
    assert "header_auto_submitted" in result.reasons
    assert "subject_auto_reply_prefix" in result.reasons
    assert result.bounce is None


def test_classify_spanish_subject_is_vacation() -> None:
    result = _classify("classify/vacation-spanish-subject.eml").lead.classification
    assert result.kind == "auto_reply"
    assert result.subkind == "vacation"
    assert result.reasons == ["subject_auto_reply_prefix", "out_of_office_text"]


def test_classify_dsn_mailbox_full_is_soft() -> None:
    result = _classify("classify/dsn-mailbox-full.eml").lead.classification
    assert result.kind == "bounce"
    assert "dsn_report" in result.reasons
    assert "null_return_path" in result.reasons
    assert result.bounce is not None
    assert result.bounce.type == "soft"
    assert result.bounce.status == "5.2.2"
    assert result.bounce.recipient == "full.box@example.org"
    assert result.bounce.original_message_id == "offer-77@mail.example.net"
    assert result.bounce.diagnostic == (
        "552 5.2.2 <full.box@example.org>: mailbox full, quota exceeded"
    )


def test_classify_dsn_prefers_remote_reply_status() -> None:
    result = _classify("classify/dsn-policy-reject.eml").lead.classification
    assert result.kind == "bounce"
    assert result.bounce is not None
    assert result.bounce.status == "5.7.1"
    assert result.bounce.type == "soft"
    assert result.bounce.recipient == "buyer@example.org"
    assert result.bounce.original_message_id == "offer-78@mail.example.net"


def test_classify_arf_report_is_bulk_feedback() -> None:
    result = _classify("classify/arf-feedback.eml").lead.classification
    assert result.kind == "bulk"
    assert result.subkind == "feedback_report"
    assert result.reasons == ["arf_report"]
    assert result.bounce is None


def test_classify_ticket_receipt() -> None:
    result = _classify("classify/ticket-receipt.eml").lead.classification
    assert result.kind == "auto_reply"
    assert result.subkind == "ticket_receipt"
    assert result.reasons == ["subject_ticket_id", "receipt_text"]


def test_classify_newsletter_is_bulk() -> None:
    result = _classify("classify/newsletter.eml").lead.classification
    assert result.kind == "bulk"
    assert result.subkind == "newsletter"
    assert result.reasons == ["list_unsubscribe", "precedence_bulk"]


def test_classify_auto_generated_form_stays_lead() -> None:
    draft = _classify("classify/form-auto-generated.eml")
    result = draft.lead.classification
    assert result.kind == "lead"
    assert result.subkind == "web_form"
    assert result.reasons == ["web_form_fields"]


def test_classify_signature_lines_are_not_form() -> None:
    draft = _classify("classify/signature-not-form.eml")
    assert draft.form_fields == {}
    assert draft.lead.classification.kind == "lead"
    assert draft.lead.classification.subkind is None


def test_classify_null_envelope_with_ooo_text() -> None:
    raw = (
        b"From: Ana Lima <ana.lima@example.pt>\r\n"
        b"To: sales@example.net\r\n"
        b"Subject: Re: Proposta\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"I am currently out of the office with limited access to email.\r\n"
    )
    draft = classify_stage(_draft(raw, Envelope(mail_from="")), Policy())
    result = draft.lead.classification
    assert result.kind == "auto_reply"
    assert result.subkind == "out_of_office"
    assert result.reasons == ["null_return_path", "out_of_office_text"]


def test_classify_human_mentioning_absence_is_lead() -> None:
    raw = (
        b"From: Ana Lima <ana.lima@example.pt>\r\n"
        b"To: sales@example.net\r\n"
        b"Subject: Absence management software quote\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"I was out of the office last week. Could you send the quote again?\r\n"
    )
    result = classify_stage(_draft(raw), Policy()).lead.classification
    assert result.kind == "lead"
    assert result.reasons == []


def test_classify_parcel_delivery_complaint_is_lead() -> None:
    raw = (
        b"From: Ben Cole <ben.cole@example.com>\r\n"
        b"To: sales@example.net\r\n"
        b"Subject: Delivery failure on order 5521\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"The pallet could not be delivered to our dock. Please call me.\r\n"
    )
    result = classify_stage(_draft(raw), Policy()).lead.classification
    assert result.kind == "lead"


CASES = ["C12", "C21", "C23", "C24"]


@pytest.mark.parametrize("case", CASES)
def test_classify_shared_case_checks(case: str) -> None:
    """Run the case's classification checks through the forms and classify stages."""
    raw = (FIXTURES / "cases" / f"{case}.eml").read_bytes()
    draft = _draft(raw)
    if case == "C12":
        # The HTML-to-text stage joins table cells as "Label: value"; the
        # forms stage reads that text.
        draft.lead.body_text = (
            "New contact form submission\nName: Marta Silva\n"
            "Company: Example Foods Lda\nPhone: +351 21 123 4567\n"
            "Message: Please call me about catering for 80 guests.\n"
        )
    draft = classify_stage(forms_stage(draft, Policy()), Policy())
    dumped = draft.lead.model_dump(mode="json")
    checks = json.loads((FIXTURES / "cases" / f"{case}.expect.json").read_text())
    for check in checks["checks"]:
        op, path = check[0], check[1]
        if not path.startswith("classification."):
            continue
        value: object = dumped
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if op == "eq":
            assert value == check[2], path
        elif op == "ne":
            assert value != check[2], path
        else:
            pytest.fail(f"unsupported check {op!r} in {case}")
    if case == "C12":
        assert draft.form_contact is not None
        assert draft.form_contact.company == "Example Foods Lda"
        assert draft.form_contact.phones == ["+351211234567"]
        assert draft.lead.classification.subkind == "web_form"


# --- Amazon SES notifications sent by an SNS e-mail subscription -------------

_SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "Gone@Example.org",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
    },
    "mail": {"commonHeaders": {"messageId": "<offer-17@shop.example.com>"}},
}


def _sns_mail(body: str, sender: str = "no-reply@sns.amazonaws.com") -> bytes:
    headers = (
        f"From: SES Topic <{sender}>\n"
        "To: ops@shop.example.com\n"
        "Subject: AWS Notification Message\n"
        "Content-Type: text/plain; charset=UTF-8\n"
    )
    if sender.endswith("amazonaws.com"):
        headers += "x-amz-sns-message-id: 2f86d9b0-eecf-573d-b47d-3d1850750c30\n"
    return (headers + "\n" + body).encode()


def _ses_classification(raw: bytes) -> Classification:
    draft = classify_stage(_draft(raw), Policy())
    return draft.lead.classification


def test_classify_ses_folded_bounce_is_hard() -> None:
    document = json.dumps(_SES_BOUNCE, separators=(",", ":"))
    # SNS folds the long JSON line, leaving a raw line break inside a string.
    folded = document[:150] + "\n" + document[150:]
    body = (
        folded + "\n\n--\nIf you wish to stop receiving notifications, unsubscribe.\n"
    )
    result = _ses_classification(_sns_mail(body))
    assert result.kind == "bounce"
    assert result.subkind is None
    assert result.reasons == ["ses_bounce", "ses_bounce_fields"]
    assert result.bounce is not None
    assert result.bounce.type == "hard"
    assert result.bounce.status == "5.1.1"
    assert result.bounce.recipient == "gone@example.org"
    assert result.bounce.diagnostic == "550 5.1.1 user unknown"
    assert result.bounce.original_message_id == "offer-17@shop.example.com"


def test_classify_ses_transient_bounce_is_soft() -> None:
    inner = json.loads(json.dumps(_SES_BOUNCE))
    inner["bounce"]["bounceType"] = "Transient"
    inner["bounce"]["bouncedRecipients"][0]["status"] = "5.2.2"
    inner["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 552 full"
    envelope = {"Type": "Notification", "Message": json.dumps(inner)}
    result = _ses_classification(_sns_mail(json.dumps(envelope, indent=2)))
    assert result.kind == "bounce"
    assert result.bounce is not None
    assert result.bounce.type == "soft"
    assert result.bounce.status == "5.2.2"


def test_classify_ses_complaint_is_feedback_report() -> None:
    complaint = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "a@example.org"}]},
    }
    result = _ses_classification(_sns_mail(json.dumps(complaint)))
    assert result.kind == "bulk"
    assert result.subkind == "feedback_report"
    assert result.reasons == ["ses_complaint"]


def test_classify_ses_delivery_is_delivery_notification() -> None:
    delivery = {"notificationType": "Delivery", "delivery": {"recipients": ["a@x.org"]}}
    result = _ses_classification(_sns_mail(json.dumps(delivery)))
    assert result.kind == "auto_reply"
    assert result.subkind == "delivery_notification"
    assert result.reasons == ["ses_delivery"]
    assert result.bounce is None


def test_classify_ses_json_from_customer_is_lead() -> None:
    # A customer pasting a notification into a question is not SNS mail.
    body = json.dumps(_SES_BOUNCE) + "\n\nWhy did this bounce? Can you help?\n"
    result = _ses_classification(_sns_mail(body, sender="dev@customer.example.net"))
    assert result.kind == "lead"
    assert result.bounce is None
