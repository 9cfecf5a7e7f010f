"""Classification stage: lead, auto-reply, bounce or bulk mail.

The checks run in a fixed order and the first one that matches decides:

1. ARF feedback reports (RFC 5965) are ``bulk`` with subkind
   ``feedback_report``: they are complaints about mail already sent, not
   delivery failures.
2. Bounces: a delivery-status report (RFC 3464), or a bounce-like sender,
   null return path or subject together with failure text in the body.
3. Auto-replies: RFC 3834 ``Auto-Submitted``, vendor auto-reply headers,
   localized auto-reply subjects, help-desk receipts and challenge mails.
4. Bulk: list and newsletter headers (RFC 2369, RFC 2919, ``Precedence``).
5. Everything else is a ``lead``. A web-form notification stays a lead even
   though a machine sent it, with subkind ``web_form``.

Every signal used adds a short code to ``classification.reasons``.
"""

from __future__ import annotations

import logging
import re
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message

from leadparse._bounce import (
    SCAN_CHARS,
    decode_bytes,
    message_text,
    read_bounce,
    read_ses_notification,
)
from leadparse._caseless import FoldedText, caseless
from leadparse.model import Classification
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["classify_message", "classify_stage"]

logger = logging.getLogger(__name__)

_BOUNCE_LOCALS = frozenset(
    {
        "mailer-daemon",
        "mailer_daemon",
        "postmaster",
        "post_master",
        "mail-daemon",
        "maildaemon",
        "mailerdaemon",
        "double-bounce",
    }
)
_BOUNCE_NAME = re.compile(
    r"mail(?:er)?[- ]?daemon|mail delivery (?:subsystem|system|service)|"
    r"postmaster|delivery status notification|mail administrator|"
    r"mail delivery",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver(?:able|ed)|undelivered mail|returned mail|delivery (?:status )?"
    r"(?:notification|failure|failed|problem|report)|mail delivery failed|"
    r"failure notice|non[- ]?deliver|could not (?:be )?deliver|"
    r"delivery has failed|message not delivered|mail system error|"
    r"unzustellbar|nicht zustellbar|non remis|no se puede entregar|"
    r"não entregue|non recapitabile|onbestelbaar|warning: could not send|"
    r"delayed mail|delivery (?:delayed|incomplete)|rejected:|"
    r"mail could not be delivered|message delivery|returned to sender|"
    r"permanent (?:delivery )?failure|delivery error|bounced? mail|"
    r"mail failure|nondeliverable|returning to sender|mail failed|"
    r"メールエラー|配信エラー|送信エラー|エラー通知|未達|不達",
    re.IGNORECASE,
)
_BOUNCE_BODY = re.compile(
    r"could not be delivered|wasn't able to deliver|was not delivered|"
    r"delivery (?:has )?failed|undeliverable|permanent(?:ly)? (?:error|fail)|"
    r"delivery to the following recipient|unable to deliver|"
    r"following address(?:es)? failed|message could not be sent|"
    r"returned to (?:the )?sender|delivery (?:attempts? )?(?:will continue|"
    r"temporarily suspended)|has not yet been delivered|"
    r"not (?:be )?delivered to|delivery status notification|"
    r"message was not sent|failed to deliver|mail delivery failed|"
    r"user unknown|unknown user|no such user|mailbox (?:is )?full|"
    r"host not found|could not deliver|rejected your message|"
    r"message (?:was )?rejected|delivery to .{1,80} failed|"
    r"this is the mail system at|this is an automatically generated delivery|"
    r"did not reach the following recipient|no valid recipients|"
    r"failed addresses follow|recipient name is not recognized|"
    r"invalid (?:user|recipient) address|unknown host|"
    r"following addresses had permanent fatal errors",
    re.IGNORECASE,
)

_AUTO_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|fw|fwd|sv|vs|wg|tr)\s*:\s*)*(?:"
    r"automatic reply|auto(?:matic)?[ -]?(?:reply|response|answer)|autoreply|"
    r"autorespond(?:er)?|auto|out of (?:the )?office|automatische antwort|"
    r"abwesenheitsnotiz|abwesend|réponse automatique|reponse automatique|absence|"
    r"absent|respuesta automática|respuesta automatica|fuera de la oficina|"
    r"resposta automática|resposta automatica|risposta automatica|"
    r"automatisch antwoord|afwezigheid|automatiskt svar|autosvar|"
    r"automaattinen vastaus|automatyczna odpowiedź|"
    r"автоматический ответ|автоответ|自動応答|自動返信|自动回复|自動回覆|"
    r"자동 응답|otomatik yanıt|odpověď nepřítomnosti|automatická odpověď|"
    r"automatikus válasz|vacation(?: reply)?|on vacation|abwesenheit)\s*[:：]",
    re.IGNORECASE,
)
_AUTO_SUBJECT_PHRASE = re.compile(
    r"out of (?:the )?office|abwesenheitsnotiz|fuera de la oficina|"
    r"hors du bureau|fuori ufficio|afwezigheidsbericht|autoreply|auto-reply|"
    r"automatic reply|automatische antwort|réponse automatique|"
    r"respuesta automática|resposta automática|risposta automatica|"
    r"automatisch antwoord|automatiskt svar|automaattinen vastaus|"
    r"automatyczna odpowiedź|автоматический ответ|自動応答|自動返信|自动回复|"
    r"自動回覆|out-of-office|on vacation|away from (?:the )?office|"
    r"ooo:|\(ooo\)|\[ooo\]",
    re.IGNORECASE,
)
_OOO_BODY = re.compile(
    r"(?:i am|i'm|i will be|i'll be|we are|currently)\s+(?:\w+\s+){0,2}"
    r"(?:out of (?:the )?office|away from (?:the |my )?(?:office|desk)|"
    r"on (?:annual |parental |sick |maternity )?leave|on vacation|on holiday|"
    r"traveling|travelling|away until|out until|away)|"
    r"limited access to (?:my )?e-?mail|"
    r"(?:return|back) (?:to the office )?on \w+|"
    r"nicht im büro|außer haus|ausser haus|abwesend|im urlaub|"
    r"je suis (?:absente?|en congés?|en vacances)|absente? du bureau|"
    r"hors du bureau|estoy (?:fuera de la oficina|de vacaciones|ausente)|"
    r"fuera de la oficina|sono (?:assente|in ferie|fuori ufficio)|fuori ufficio|"
    r"ik ben (?:afwezig|met vakantie|niet op kantoor)|niet op kantoor|"
    r"estou (?:ausente|de férias|fora do escritório)|fora do escritório|"
    r"jestem (?:nieobecn[ya]|na urlopie|poza biurem)|poza biurem|"
    r"är inte på kontoret|är frånvarande|er ikke på kontoret|"
    r"olen (?:poissa|lomalla)|я в отпуске|в отпуске|отсутствую|"
    r"不在にしております|不在です|休暇中|我正在休假|不在办公室|休假中",
    re.IGNORECASE,
)
# A first-person, present-tense absence notice. On its own in a short message
# it marks an out-of-office reply even when the responder adds no header and
# keeps the original subject; past-tense mentions ("I was out last week") and
# long messages that mention an absence in passing do not match.
_OOO_NOTICE = re.compile(
    r"\b(?:i am|i'm|i will be|i'll be)\s+(?:currently\s+|now\s+)?"
    r"(?:out of (?:the )?office|away from (?:the |my )?(?:office|desk)|"
    r"on (?:\w+ )?leave|on vacation|on holiday|away)\b[^.\n]{0,80}?"
    r"\b(?:until|till|through|returning|back on|back in|from)\b|"
    r"\b(?:ich bin|wir sind)\b[^.\n]{0,60}?\b(?:nicht im büro|abwesend|im urlaub|"
    r"außer haus|ausser haus)\b|"
    r"\bje (?:suis|serai) (?:actuellement )?(?:absente?|en congés?|en vacances)\b|"
    r"\bestoy (?:fuera de la oficina|de vacaciones|ausente)\b|"
    r"\bsono (?:assente|in ferie|fuori ufficio)\b|"
    r"\bik ben (?:afwezig|met vakantie|niet op kantoor)\b|"
    r"\bestou (?:ausente|de férias|fora do escritório)\b|"
    r"\bjestem (?:nieobecn[ya]|na urlopie|poza biurem)\b|"
    r"\bjag är (?:inte på kontoret|frånvarande|på semester)\b|"
    r"\bolen (?:poissa|lomalla)\b|я в отпуске|不在にしております|我正在休假",
    re.IGNORECASE,
)
_OOO_NOTICE_MAX_WORDS = 120
_VACATION_WORDS = re.compile(
    r"vacation|holiday|annual leave|urlaub|vacances|congés|vacaciones|ferie|férias|"
    r"vakantie|semester|lomalla|urlop|отпуск|休暇|休假",
    re.IGNORECASE,
)
_TICKET_SUBJECT = re.compile(
    r"[\[(](?:ticket|case|request|support|incident|issue|req|sr)[\s:#-]{0,3}"
    r"#?\s*[A-Z0-9][\w-]{0,20}[\])]|"
    r"\b(?:ticket|case|request) (?:#|no\.?|number)\s*\w{1,20}",
    re.IGNORECASE,
)
_RECEIPT_PHRASE = re.compile(
    r"(?:we|i) (?:have |'ve )?received your (?:request|message|e-?mail|inquiry|"
    r"enquiry|ticket)|your (?:request|message|ticket|inquiry|enquiry|case) "
    r"(?:has been|was) (?:received|created|logged|opened)|"
    r"request received|ticket (?:has been )?(?:created|opened|received)|"
    r"thank you for contacting|this is an automated (?:response|reply|message)|"
    r"(?:an? )?(?:support )?ticket has been (?:created|opened)|"
    r"wir haben ihre (?:anfrage|nachricht) erhalten|"
    r"nous avons (?:bien )?reçu votre (?:demande|message)|"
    r"hemos recibido su (?:solicitud|mensaje)",
    re.IGNORECASE,
)
_CHALLENGE = re.compile(
    r"(?:verify|confirm) (?:that )?(?:you are|you're) (?:a )?human|"
    r"sender verification|challenge[- ]response|please (?:verify|confirm) your "
    r"(?:e-?mail|message|address) (?:so|to)|approved senders? list|"
    r"awaiting (?:your )?verification|boxbe",
    re.IGNORECASE,
)
# The patterns searched in the body text, with twins that are faster on ASCII
# text (see leadparse._caseless).
_BOUNCE_BODY_CASELESS = caseless(_BOUNCE_BODY)
_OOO_BODY_CASELESS = caseless(_OOO_BODY)
_OOO_NOTICE_CASELESS = caseless(_OOO_NOTICE)
_RECEIPT_PHRASE_CASELESS = caseless(_RECEIPT_PHRASE)
_CHALLENGE_CASELESS = caseless(_CHALLENGE)
_NO_REPLY_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|auto[-_.]?(?:reply|"
    r"responder|confirm)|support|help|helpdesk|service|notifications?)",
    re.IGNORECASE,
)
_COMPLAINT_SUBJECT = re.compile(r"\s*complaint about message from ", re.IGNORECASE)
_ESP_HEADERS = (
    "x-mc-user",
    "x-campaign",
    "x-campaignid",
    "x-campaign-id",
    "x-mailjet-campaign",
    "x-csa-complaints",
    "x-newsletter",
    "x-mailchimp-campaign",
    "x-sfmc-stack",
    "x-rpcampaign",
    "x-listmember",
    "x-emv-campagneid",
)
_ESP_MAILERS = re.compile(
    r"mailchimp|sendinblue|brevo|mailjet|constant ?contact|campaign ?monitor|"
    r"mailerlite|klaviyo|getresponse|aweber|acumbamail|phplist|mailpoet|"
    r"newsletter",
    re.IGNORECASE,
)


def _header(message: Message, name: str) -> str:
    """Return a header's decoded text, or ``""`` when it is absent."""
    value = message.get(name)
    if value is None:
        return ""

    text = str(value)
    if any("\udc80" <= char <= "\udcff" for char in text):
        # compat32 keeps raw 8-bit header bytes as surrogate escapes; such
        # headers are nearly always UTF-8 (RFC 6532).
        return decode_bytes(text.encode("utf-8", "surrogateescape"), "utf-8")

    try:
        return str(make_header(decode_header(text)))
    except (LookupError, UnicodeError, ValueError, MessageError):
        return text


def _from_address(message: Message, draft: MessageDraft) -> tuple[str, str]:
    """Return the sender's display name and lower-cased address."""
    sender = draft.lead.from_
    if sender.email:
        return sender.name or "", sender.email.lower()

    from email.utils import parseaddr

    name, address = parseaddr(_header(message, "From"))
    return name, address.lower()


def _has_return_path_null(message: Message, draft: MessageDraft) -> bool:
    if draft.envelope is not None and draft.envelope.mail_from == "":
        return True

    return any(
        str(value).strip() in ("<>", "") for value in message.get_all("Return-Path", [])
    )


def _report_type(message: Message) -> str:
    """Return the ``report-type`` of the first multipart/report in *message*."""
    for part in _limited_walk(message):
        if part.get_content_type() == "multipart/report":
            return str(part.get_param("report-type", "") or "").lower()
    return ""


def _limited_walk(message: Message, limit: int = 200) -> list[Message]:
    parts: list[Message] = []
    for part in message.walk():
        parts.append(part)
        if len(parts) >= limit:
            break
    return parts


def _has_part(message: Message, *types: str) -> bool:
    return any(part.get_content_type() in types for part in _limited_walk(message))


def classify_message(
    draft: MessageDraft, message: Message, text: str
) -> Classification:
    """Classify one message from its headers, MIME structure and text.

    Args:
        draft: the draft being built, for the decoded sender, subject, envelope
            and web-form fields.
        message: the parsed MIME tree.
        text: the message's own text, bounded to :data:`SCAN_CHARS`.
    """
    subject = draft.lead.subject
    if subject is None:
        subject = _header(message, "Subject")
    subject = " ".join(subject.split())[:500]

    report_type = _report_type(message)
    if report_type == "feedback-report" or _has_part(
        message, "message/feedback-report"
    ):
        return Classification(
            kind="bulk", subkind="feedback_report", reasons=["arf_report"]
        )
    if _COMPLAINT_SUBJECT.match(subject):
        # Microsoft's junk-mail reporting program (JMRP) sends complaints as
        # multipart/mixed rather than ARF, with this fixed subject.
        return Classification(
            kind="bulk", subkind="feedback_report", reasons=["complaint_subject"]
        )
    if _header(message, "X-Apple-Unsubscribe").strip().lower() == "true":
        # Apple Mail's unsubscribe button mails the List-Unsubscribe address:
        # an opt-out about mail already sent, like an ARF report.
        return Classification(
            kind="bulk", subkind="feedback_report", reasons=["unsubscribe_request"]
        )

    ses = _classify_ses_notification(draft, message, text)
    if ses is not None:
        return ses

    bounce = _classify_bounce(draft, message, subject, text, report_type)
    if bounce is not None:
        return bounce

    auto = _classify_auto_reply(draft, message, subject, text)
    if auto is not None:
        return auto

    bulk = _classify_bulk(draft, message)
    if bulk is not None:
        return bulk

    if draft.form_fields:
        return Classification(
            kind="lead", subkind="web_form", reasons=["web_form_fields"]
        )
    return Classification(kind="lead")


def _classify_ses_notification(
    draft: MessageDraft, message: Message, text: str
) -> Classification | None:
    """Classify an Amazon SES notification delivered by an SNS subscription.

    Only mail that SNS sent is read: its ``x-amz-sns-message-id`` header, or
    a sender at amazonaws.com or amazonses.com.
    """
    _name, address = _from_address(message, draft)
    domain = address.rpartition("@")[2]
    from_aws = domain.endswith(("amazonaws.com", "amazonses.com"))
    if not (from_aws or message.get("x-amz-sns-message-id") is not None):
        return None

    notification = read_ses_notification(text)
    if notification is None:
        return None
    if notification.notification_type == "Complaint":
        return Classification(
            kind="bulk", subkind="feedback_report", reasons=["ses_complaint"]
        )
    if notification.report is None:
        # A delivery notice reports success, like a DSN with Action: delivered.
        return Classification(
            kind="auto_reply",
            subkind="delivery_notification",
            reasons=[f"ses_{notification.notification_type.lower()}"],
        )
    report = notification.report
    subkind = "delayed" if (report.bounce.status or "").startswith("4") else None
    return Classification(
        kind="bounce",
        subkind=subkind,
        reasons=["ses_bounce", *report.reasons],
        bounce=report.bounce,
    )


def _classify_bounce(
    draft: MessageDraft,
    message: Message,
    subject: str,
    text: str,
    report_type: str,
) -> Classification | None:
    name, address = _from_address(message, draft)
    local = address.partition("@")[0]

    signals: list[str] = []
    dsn = report_type in ("delivery-status", "global-delivery-status") or _has_part(
        message, "message/delivery-status", "message/global-delivery-status"
    )
    if dsn:
        signals.append("dsn_report")
    if local in _BOUNCE_LOCALS or _BOUNCE_NAME.search(name):
        signals.append("mailer_daemon_sender")
    if _has_return_path_null(message, draft):
        signals.append("null_return_path")
    if _BOUNCE_SUBJECT.search(subject):
        signals.append("bounce_subject")

    sender = "mailer_daemon_sender" in signals
    null_path = "null_return_path" in signals
    bounce_subject = "bounce_subject" in signals
    if not (dsn or sender or null_path or bounce_subject):
        # Without one of these signals failure text alone is no bounce, so
        # the body is not scanned.
        return None

    body_failure = _BOUNCE_BODY_CASELESS.found_in(FoldedText(text[:16384]))
    if body_failure:
        signals.append("failure_text_in_body")
    automated = _NO_REPLY_LOCAL.match(local) is not None

    report = read_bounce(message, text)
    action = (report.action or "").split(" ")[0]
    if action in ("delivered", "relayed", "expanded", "deliverable"):
        # A DSN for successful delivery or relay (RFC 3464 section 2.3.3) is a
        # machine notice, not a failure.
        return Classification(
            kind="auto_reply",
            subkind="delivery_notification",
            reasons=[*signals, f"dsn_action_{action}"],
        )

    status_found = report.bounce.status is not None
    if dsn or (bounce_subject and (sender or null_path)):
        pass
    elif bounce_subject and automated and body_failure:
        signals.append("automated_sender")
    elif bounce_subject:
        # A customer may write "delivery failed" about a parcel, so a subject
        # alone needs an SMTP status and failure wording in the body.
        if not (status_found and body_failure):
            return None
    elif not (body_failure or status_found):
        return None

    reasons = list(dict.fromkeys([*signals, *report.reasons]))
    subkind = "delayed" if (report.bounce.status or "").startswith("4") else None
    return Classification(
        kind="bounce", subkind=subkind, reasons=reasons, bounce=report.bounce
    )


def _classify_auto_reply(
    draft: MessageDraft, message: Message, subject: str, text: str
) -> Classification | None:
    reasons: list[str] = []
    generated = False

    auto_submitted = _header(message, "Auto-Submitted").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        # RFC 3834 section 5: any value other than "no" marks automatic mail.
        reasons.append("header_auto_submitted")
        generated = auto_submitted.startswith("auto-generated")

    if message.get("X-Autoreply") is not None or message.get("X-Autorespond"):
        reasons.append("header_x_autoreply")
    if message.get("X-Autoresponder") is not None or message.get("X-Auto-Reply"):
        reasons.append("header_x_autoreply")
    if _header(message, "X-Apple-Action").strip().lower() == "vacation":
        reasons.append("header_x_apple_vacation")
    if "autoreply" in _header(message, "X-POST-MessageClass").lower():
        reasons.append("header_x_autoreply")
    if _header(message, "X-Autogenerated").strip().lower() == "reply":
        reasons.append("header_x_autoreply")

    precedence = _header(message, "Precedence").strip().lower()
    if precedence == "auto_reply":
        reasons.append("precedence_auto_reply")

    subject_prefix = _AUTO_PREFIX.search(subject) is not None
    if subject_prefix:
        reasons.append("subject_auto_reply_prefix")
    elif _AUTO_SUBJECT_PHRASE.search(subject):
        reasons.append("subject_auto_reply_phrase")

    head = text[:4096]
    folded_head = FoldedText(head)
    ooo_body = _OOO_BODY_CASELESS.found_in(folded_head)
    ticket = _TICKET_SUBJECT.search(subject) is not None
    receipt = _RECEIPT_PHRASE.search(subject) is not None
    receipt = receipt or _RECEIPT_PHRASE_CASELESS.found_in(folded_head)
    challenge = _CHALLENGE.search(subject) is not None
    challenge = challenge or _CHALLENGE_CASELESS.found_in(folded_head)

    _, address = _from_address(message, draft)
    automated_sender = _NO_REPLY_LOCAL.match(address.partition("@")[0]) is not None

    if draft.form_fields and not subject_prefix and not ooo_body:
        # A form notification is machine-sent but carries a person's request.
        return None

    if not reasons:
        if ticket and receipt:
            reasons.extend(["subject_ticket_id", "receipt_text"])
        elif receipt and automated_sender:
            reasons.extend(["automated_sender", "receipt_text"])
        elif challenge and automated_sender:
            reasons.extend(["automated_sender", "challenge_text"])
        elif ooo_body and _has_return_path_null(message, draft):
            reasons.extend(["null_return_path", "out_of_office_text"])
        elif (
            _OOO_NOTICE_CASELESS.found_in(folded_head)
            and len(draft.lead.message_text.split()) <= _OOO_NOTICE_MAX_WORDS
        ):
            reasons.extend(["out_of_office_text", "short_absence_notice"])
        else:
            return None
    elif ooo_body:
        reasons.append("out_of_office_text")

    reasons = list(dict.fromkeys(reasons))
    return Classification(
        kind="auto_reply",
        subkind=_auto_subkind(
            reasons,
            subject,
            head,
            generated,
            bool(ticket and receipt),
            bool(receipt),
            bool(challenge),
        ),
        reasons=reasons,
    )


def _auto_subkind(
    reasons: list[str],
    subject: str,
    head: str,
    generated: bool,
    ticket_receipt: bool,
    receipt: bool,
    challenge: bool,
) -> str | None:
    if challenge:
        return "challenge_response"
    if ticket_receipt or (receipt and "out_of_office_text" not in reasons):
        return "ticket_receipt"

    ooo = (
        "out_of_office_text" in reasons
        or "subject_auto_reply_prefix" in reasons
        or "subject_auto_reply_phrase" in reasons
        or "header_x_apple_vacation" in reasons
    )
    if "header_x_apple_vacation" in reasons or (
        ooo and _VACATION_WORDS.search(subject + "\n" + head[:1500])
    ):
        return "vacation"
    if ooo:
        return "out_of_office"
    if generated:
        return "auto_generated"
    return None


def _classify_bulk(draft: MessageDraft, message: Message) -> Classification | None:
    if draft.form_fields:
        return None

    reasons: list[str] = []
    if message.get("List-Id") is not None:
        reasons.append("list_id")
    if message.get("List-Unsubscribe") is not None:
        reasons.append("list_unsubscribe")
    if message.get("List-Post") is not None:
        reasons.append("list_post")

    precedence = _header(message, "Precedence").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        reasons.append(f"precedence_{precedence}")

    if any(
        message.get(name) is not None for name in _ESP_HEADERS
    ) or _ESP_MAILERS.search(_header(message, "X-Mailer")):
        reasons.append("esp_header")

    if not reasons:
        return None

    if "list_id" in reasons or "list_post" in reasons or precedence == "list":
        subkind = "mailing_list"
    else:
        subkind = "newsletter"
    return Classification(kind="bulk", subkind=subkind, reasons=reasons)


@stage("classify")
def classify_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Set ``lead.classification`` from headers, MIME structure and body text."""
    message = draft.message
    if message is None:
        return draft

    text = message_text(message, SCAN_CHARS)
    if not text.strip():
        text = draft.lead.body_text[:SCAN_CHARS]

    draft.lead.classification = classify_message(draft, message, text)
    logger.debug(
        "classified message %r as %s",
        draft.lead.message_id,
        draft.lead.classification.kind,
    )
    return draft
