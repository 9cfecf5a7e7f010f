"""Tests for the quote stage: quoted history, attributions, separators, forwards."""

from __future__ import annotations

import email
import time
from email import policy as email_policy
from pathlib import Path

import pytest

from leadparse import parse_lead
from leadparse.model import Address
from leadparse.quotes import is_forward_subject, split_quotes

from .conftest import FIXTURES, corpus_or_skip

USER_EXAMPLE = (
    "Hi team,\n\nWe are evaluating your platform for our data pipeline.\n"
    "Could we schedule a demo next week? We need enterprise pricing.\n\n"
    "Thanks,\nAna\nHead of Data, Contoso\n+1 (415) 555-0100\n"
)
NEW = "Please send the price list for 40 desks."


def plain_body(path: Path) -> str:
    """Return the first text/plain part of an .eml file, as the body stage does."""
    message = email.message_from_bytes(path.read_bytes(), policy=email_policy.default)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            text: str = part.get_content()
            return text.replace("\r\n", "\n").strip("\n")
    raise AssertionError(f"{path.name} has no text/plain part")


def subject_of(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=email_policy.default)
    return str(message["subject"])


# --- Text without quotes ---


def test_split_quotes_user_example_unchanged() -> None:
    result = split_quotes(USER_EXAMPLE)
    assert result.message_text == USER_EXAMPLE
    assert result.quoted_text == ""
    assert result.forwarded is None
    assert result.ambiguous is False


@pytest.mark.parametrize(
    "body",
    [
        "On your remote host you can run:\n\n     telnet 127.0.0.1 52698",
        "Here is what she wrote:\nWe need 40 desks.",
        "I wrote 3 emails about this:\n- one\n- two",
        "From: the sales team, to: all of you\nThanks for the call.",
        "Date: next Monday\nSubject: onboarding\nWe can start then.",
    ],
)
def test_split_quotes_prose_colon_lines_kept(body: str) -> None:
    result = split_quotes(body)
    assert result.message_text == body
    assert result.quoted_text == ""


# --- ">" quotes ---


def test_split_quotes_inline_replies_keep_new_text() -> None:
    body = (
        "On Tue, Apr 29, 2014 at 4:22 PM, Tom Becker <tom@example.net> wrote:\n\n"
        "> Can you do 40 desks?\n>\n\nYes, 40 is fine.\n\n> And delivery in May?\n\n"
        "May works for us."
    )
    result = split_quotes(body)
    assert result.message_text == "Yes, 40 is fine.\n\nMay works for us."
    assert result.quoted_text == (
        "On Tue, Apr 29, 2014 at 4:22 PM, Tom Becker <tom@example.net> wrote:\n\n"
        "> Can you do 40 desks?\n>\n\n> And delivery in May?"
    )


def test_split_quotes_bottom_post_keeps_text_below() -> None:
    body = "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi\nHello"
    result = split_quotes(body)
    assert result.message_text == "Hello"
    assert result.quoted_text == "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi"


def test_split_quotes_mobile_line_above_quote_kept() -> None:
    body = (
        f"{NEW}\n\nSent from my iPhone\n\n"
        "On Apr 3, 2012, at 4:19 PM, bob <bob@example.com> wrote:\n\n> Hi"
    )
    result = split_quotes(body)
    assert result.message_text == f"{NEW}\n\nSent from my iPhone"


def test_split_quotes_all_quoted_kept_and_ambiguous() -> None:
    body = "> We need 40 desks.\n> Delivery in May."
    result = split_quotes(body)
    assert result.message_text == body
    assert result.quoted_text == ""
    assert result.ambiguous is True


def test_quotes_stage_all_quoted_records_defect() -> None:
    raw = (
        b"From: Ana <ana@example.com>\r\nTo: s@example.net\r\nSubject: Re: x\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n> only quoted text\r\n"
    )
    lead = parse_lead(raw)
    assert lead.message_text == "> only quoted text"
    assert [d.code for d in lead.defects] == ["quote_detection_ambiguous"]


# --- Attribution lines ---

ATTRIBUTIONS = {
    "en": "On Mon, Mar 4, 2024 at 11:02 AM Lena Kraus <lena@example.com> wrote:",
    "en-apple": "On Mar 4, 2024, at 11:02, Lena Kraus <lena@example.com> wrote:",
    "en-address": "Lena Kraus <lena@example.com> wrote:",
    "de": "Am Mo., 4. März 2024 um 11:02 Uhr schrieb Lena Kraus <lena@example.com>:",
    "de-apple": "Am 04.03.2024 um 11:02 schrieb Lena Kraus <lena@example.com>:",
    "fr": "Le lun. 4 mars 2024 à 11:02, Lena Kraus <lena@example.com> a écrit :",
    "es": "El lun, 4 mar 2024 a las 11:02, Lena Kraus (<lena@example.com>) escribió:",
    "pt": "Em seg., 4 de mar. de 2024 às 11:02, Lena Kraus <lena@example.com> "
    "escreveu:",
    "it": "Il giorno lun 4 mar 2024 alle ore 11:02 Lena Kraus <lena@example.com> "
    "ha scritto:",
    "nl": "Op ma 4 mrt 2024 om 11:02 schreef Lena Kraus <lena@example.com>:",
    "sv": "Den mån 4 mars 2024 kl 11:02 skrev Lena Kraus <lena@example.com>:",
    "da": "man. 4. mar. 2024 kl. 11.02 skrev Lena Kraus <lena@example.com>:",
    "no": "Lena Kraus <lena@example.com> skrev:",
    "fi": "ma 4. maalisk. 2024 klo 11.02 Lena Kraus (lena@example.com) kirjoitti:",
    "pl": "W dniu 4.03.2024 o 11:02, Lena Kraus <lena@example.com> napisał(a):",
    "pl-pisze": "Lena Kraus <lena@example.com> pisze:",
    "ru": "пн, 4 мар. 2024 г. в 11:02, Lena Kraus <lena@example.com>:",
    "ru-verb": "4 марта 2024 г., в 11:02, Лена Краус <lena@example.com> написал(а):",
    "ja-apple": "2024/03/04 11:02、Lena Kraus <lena@example.com>のメッセージ:",
    "ja-outlook": "2024年3月4日 11:02 Lena Krausさんは書きました:",
    "zh": "Lena Kraus <lena@example.com> 于2024年3月4日周一 11:02写道：",
    "zh-tw": "Lena Kraus <lena@example.com> 於 2024年3月4日 週一 上午11:02寫道：",
}


@pytest.mark.parametrize("language", sorted(ATTRIBUTIONS))
def test_split_quotes_attribution_before_quote(language: str) -> None:
    attribution = ATTRIBUTIONS[language]
    body = f"{NEW}\n\n{attribution}\n\n> Old text.\n> More old text."
    result = split_quotes(body)
    assert result.message_text == NEW
    assert result.quoted_text == f"{attribution}\n\n> Old text.\n> More old text."


@pytest.mark.parametrize("language", sorted(ATTRIBUTIONS))
def test_split_quotes_attribution_without_quote_marks(language: str) -> None:
    attribution = ATTRIBUTIONS[language]
    body = f"{NEW}\n\n{attribution}\nOld text without quote marks.\n\nOld signature"
    result = split_quotes(body)
    assert result.message_text == NEW
    assert result.quoted_text.startswith(attribution)
    assert result.quoted_text.endswith("Old signature")


@pytest.mark.parametrize(
    "attribution",
    [
        (
            "On Wed, May 18, 2016 at 11:10 PM Steven Scott <notifications@github.com>\n"
            "wrote:"
        ),
        (
            "On Tue, Sep 25, 2012 at 8:59 AM, Chris Wanstrath\n"
            "<notifications@github.com>wrote:"
        ),
        "On Dec 16, 2011, at 12:47 PM, Corey Donohoe\n<reply@reply.github.com>\nwrote:",
        '02.04.2012 14:20 пользователь "bob@example.org" <\nbob@example.org> написал:',
        "Am 04.03.2024 um 11:02 schrieb Lena Kraus\n<lena@example.com>:",
        "Le 4 mars 2024 à 11:02, Lena Kraus <lena@example.com> a\nécrit :",
    ],
)
def test_split_quotes_wrapped_attribution(attribution: str) -> None:
    body = f"{NEW}\n\n{attribution}\n\n> Old text."
    result = split_quotes(body)
    assert result.message_text == NEW
    assert result.quoted_text == f"{attribution}\n\n> Old text."


def test_split_quotes_prose_not_joined_into_attribution() -> None:
    body = (
        "I will try to fix the problem as soon as I\nget back to a computer.\n"
        'On Dec 8, 2013 2:10 PM, "John Sullivan" <notifications@github.com> wrote:\n'
        "\n> old"
    )
    result = split_quotes(body)
    assert result.message_text == (
        "I will try to fix the problem as soon as I\nget back to a computer."
    )


# --- Separators and Outlook header blocks ---

SEPARATORS = [
    "-----Original Message-----",
    "----- Original Message -----",
    "-------- Original Message --------",
    "-----Ursprüngliche Nachricht-----",
    "-------- Message d'origine --------",
    "-----Mensaje original-----",
    "-----Mensagem original-----",
    "-----Messaggio originale-----",
    "-----Oorspronkelijk bericht-----",
    "-----Ursprungligt meddelande-----",
    "-----Oprindelig meddelelse-----",
    "-----Opprinnelig melding-----",
    "-----Alkuperäinen viesti-----",
    "-----Wiadomość oryginalna-----",
    "-----Исходное сообщение-----",
    "-----元のメッセージ-----",
    "------------------ 原始邮件 ------------------",
]


@pytest.mark.parametrize("separator", SEPARATORS)
def test_split_quotes_original_message_separator(separator: str) -> None:
    body = f"{NEW}\n\n{separator}\nFrom: x@example.com\n\nOld text."
    result = split_quotes(body, subject="RE: desks")
    assert result.message_text == NEW
    assert result.quoted_text == f"{separator}\nFrom: x@example.com\n\nOld text."
    assert result.forwarded is None


OUTLOOK_BLOCKS = {
    "en": "From: Tom Becker [mailto:tom@example.net]\nSent: Monday, March 4, 2024 "
    "6:40 PM\nTo: Kraus, Lena\nSubject: Re: Quote",
    "en-date": "From: Tom Becker <tom@example.net>\nDate: Monday, March 4, 2024\n"
    "To: Lena Kraus\nCc: Ops\nSubject: Re: Quote",
    "en-bold": "*From:* Tom Becker [mailto:tom@example.net]\n*Sent:* Monday, "
    "March 4, 2024\n*To:* lena@example.com\n*Subject:* Quote",
    "de": "Von: Tom Becker <tom@example.net>\nGesendet: Montag, 4. März 2024 18:40\n"
    "An: Kraus, Lena\nBetreff: AW: Angebot",
    "fr": "De : Tom Becker <tom@example.net>\nEnvoyé : lundi 4 mars 2024 18:40\n"
    "À : Lena Kraus\nObjet : RE: Devis",
    "es": "De: Tom Becker <tom@example.net>\nEnviado el: lunes, 4 de marzo de 2024 "
    "18:40\nPara: Lena Kraus\nAsunto: RE: Presupuesto",
    "pt": "De: Tom Becker <tom@example.net>\nEnviada em: segunda-feira, 4 de março "
    "de 2024 18:40\nPara: Lena Kraus\nAssunto: RE: Orçamento",
    "it": "Da: Tom Becker <tom@example.net>\nInviato: lunedì 4 marzo 2024 18:40\n"
    "A: Lena Kraus\nOggetto: R: Preventivo",
    "nl": "Van: Tom Becker <tom@example.net>\nVerzonden: maandag 4 maart 2024 18:40\n"
    "Aan: Lena Kraus\nOnderwerp: RE: Offerte",
    "sv": "Från: Tom Becker <tom@example.net>\nSkickat: den 4 mars 2024 18:40\n"
    "Till: Lena Kraus\nÄmne: SV: Offert",
    "da": "Fra: Tom Becker <tom@example.net>\nSendt: 4. marts 2024 18:40\n"
    "Til: Lena Kraus\nEmne: SV: Tilbud",
    "fi": "Lähettäjä: Tom Becker <tom@example.net>\nLähetetty: maanantai 4. "
    "maaliskuuta 2024 18.40\nVastaanottaja: Lena Kraus\nAihe: VS: Tarjous",
    "pl": "Od: Tom Becker <tom@example.net>\nWysłano: poniedziałek, 4 marca 2024 "
    "18:40\nDo: Lena Kraus\nTemat: RE: Oferta",
    "ru": "От: Tom Becker <tom@example.net>\nОтправлено: 4 марта 2024 г. 18:40\n"
    "Кому: Lena Kraus\nТема: RE: Предложение",
    "ja": "差出人: Tom Becker <tom@example.net>\n送信日時: 2024年3月4日 18:40\n"
    "宛先: Lena Kraus\n件名: RE: 見積",
    "zh": "发件人: Tom Becker <tom@example.net>\n发送时间: 2024年3月4日 18:40\n"
    "收件人: Lena Kraus\n主题: 回复: 报价",
    "zh-tw": "寄件者: Tom Becker <tom@example.net>\n傳送時間: 2024年3月4日 18:40\n"
    "收件者: Lena Kraus\n主旨: 回覆: 報價",
    "one-line": "From: Tom Becker Sent: Monday, March 4, 2024 To: Lena Kraus "
    "Subject: Re: Quote",
}


@pytest.mark.parametrize("language", sorted(OUTLOOK_BLOCKS))
def test_split_quotes_outlook_header_block(language: str) -> None:
    block = OUTLOOK_BLOCKS[language]
    body = f"{NEW}\n\n{block}\n\nOld text.\n\n--\nSent from my phone"
    result = split_quotes(body, subject="RE: desks")
    assert result.message_text == NEW
    assert result.quoted_text == f"{block}\n\nOld text.\n\n--\nSent from my phone"


@pytest.mark.parametrize("rule", ["_" * 32, "-" * 30, " " + "-" * 30])
def test_split_quotes_rule_line_above_header_block(rule: str) -> None:
    block = OUTLOOK_BLOCKS["en"]
    body = f"{NEW}\n{rule}\n\n{block}\n\nOld text."
    result = split_quotes(body, subject="RE: desks")
    assert result.message_text == NEW
    assert result.quoted_text.startswith(rule)


def test_split_quotes_html_quote_start_cuts() -> None:
    body = f"{NEW}\n\nThanks,\nAna\nOld text the markup marked as quoted."
    start = body.index("Old text")
    result = split_quotes(body, html_quote_start=start)
    assert result.message_text == f"{NEW}\n\nThanks,\nAna"
    assert result.quoted_text == "Old text the markup marked as quoted."


def test_split_quotes_earliest_cut_wins() -> None:
    body = f"{NEW}\n\n-----Original Message-----\nFrom: a@example.com\n\nOld\nolder"
    result = split_quotes(body, html_quote_start=body.index("older"))
    assert result.message_text == NEW


def test_split_quotes_scan_limit_keeps_tail() -> None:
    body = NEW + "\n" + "x" * 100
    result = split_quotes(body, max_chars=20)
    assert result.message_text == body


def test_split_quotes_long_lines_fast() -> None:
    body = "Hi\n" + ">" * 700_000 + "\nA" + ">" * 700_000 + "\n" + "On " * 50_000
    started = time.perf_counter()
    result = split_quotes(body)
    elapsed = time.perf_counter() - started
    assert result.message_text.startswith("Hi\nA>>")
    assert elapsed < 1.0


# --- Forwards ---

FORWARD_MARKERS = [
    "---------- Forwarded message ---------",
    "-------- Forwarded Message --------",
    "Begin forwarded message:",
    "---------- Weitergeleitete Nachricht ----------",
    "Anfang der weitergeleiteten Nachricht:",
    "-------- Message transféré --------",
    "Début du message réexpédié :",
    "---------- Mensaje reenviado ---------",
    "---------- Mensagem encaminhada ---------",
    "---------- Messaggio inoltrato ---------",
    "---------- Doorgestuurd bericht ---------",
    "---------- Vidarebefordrat meddelande ---------",
    "---------- Videresendt meddelelse ---------",
    "---------- Välitetty viesti ---------",
    "---------- Przekazana wiadomość ---------",
    "-------- Пересылаемое сообщение --------",
    "---------- 転送メッセージ ---------",
    "---------- 转发的邮件 ---------",
]
FORWARDED_BLOCK = (
    "From: Priya Raman <Priya.Raman@example.org>\n"
    "Date: Tue, Mar 5, 2024 at 9:02 AM\n"
    "Subject: Pricing for 200 seats\n"
    "To: <info@example.com>"
)
FORWARDED_BODY = (
    "Hello, we are evaluating your platform for 200 seats.\n\n"
    "Priya Raman\nProcurement Lead, Example Logistics Ltd"
)


@pytest.mark.parametrize("marker", FORWARD_MARKERS)
def test_split_quotes_forward_marker_keeps_forward(marker: str) -> None:
    note = "Can someone follow up today?"
    body = f"{note}\n\n{marker}\n{FORWARDED_BLOCK}\n\n{FORWARDED_BODY}"
    result = split_quotes(body, subject="Fwd: Pricing")
    assert result.message_text == body
    assert result.quoted_text == ""
    assert result.forwarded is not None
    assert result.forwarded.from_ == Address(
        name="Priya Raman", email="priya.raman@example.org"
    )
    assert result.forwarded.date == "Tue, Mar 5, 2024 at 9:02 AM"
    assert result.forwarded.subject == "Pricing for 200 seats"
    assert result.forwarded_text == FORWARDED_BODY
    assert result.forward_start == len(note) + 2
    assert result.message_text[result.forward_start :].startswith(marker)
    assert result.forward_body_start is not None
    assert result.message_text[result.forward_body_start :] == FORWARDED_BODY


def test_split_quotes_forward_removes_inner_reply_quote() -> None:
    inner = "On Mon, Mar 4, 2024 at 5:00 PM Sales <sales@example.net> wrote:\n> Hi"
    marker = FORWARD_MARKERS[0]
    body = f"FYI\n\n{marker}\n{FORWARDED_BLOCK}\n\n{FORWARDED_BODY}\n\n{inner}"
    result = split_quotes(body, subject="Fwd: Pricing")
    assert (
        result.message_text == f"FYI\n\n{marker}\n{FORWARDED_BLOCK}\n\n{FORWARDED_BODY}"
    )
    assert result.quoted_text == inner
    assert result.forwarded_text == FORWARDED_BODY


@pytest.mark.parametrize(
    ("subject", "block"),
    [
        ("WG: Angebot", OUTLOOK_BLOCKS["de"]),
        ("TR: Devis", OUTLOOK_BLOCKS["fr"]),
        ("RV: Presupuesto", OUTLOOK_BLOCKS["es"]),
        ("ENC: Orçamento", OUTLOOK_BLOCKS["pt"]),
        ("Doorst: Offerte", OUTLOOK_BLOCKS["nl"]),
        ("VS: Tarjous", OUTLOOK_BLOCKS["fi"]),
        ("PD: Oferta", OUTLOOK_BLOCKS["pl"]),
        ("Пересл: Предложение", OUTLOOK_BLOCKS["ru"]),
        ("转发: 报价", OUTLOOK_BLOCKS["zh"]),
        ("FW: Quote", "_" * 32 + "\n" + OUTLOOK_BLOCKS["en"]),
        ("[EXT] FW: Quote", "-----Original Message-----\n" + OUTLOOK_BLOCKS["en"]),
    ],
)
def test_split_quotes_forward_subject_header_block(subject: str, block: str) -> None:
    body = f"Please handle.\n\n{block}\n\nWe need a quote for 30 seats."
    result = split_quotes(body, subject=subject)
    assert result.message_text == body
    assert result.forwarded is not None
    assert result.forwarded.from_ == Address(name="Tom Becker", email="tom@example.net")
    assert result.forwarded_text == "We need a quote for 30 seats."


def test_split_quotes_separator_without_forward_subject_is_quote() -> None:
    body = f"Please handle.\n\n{OUTLOOK_BLOCKS['de']}\n\nOld text."
    result = split_quotes(body, subject="AW: Angebot")
    assert result.message_text == "Please handle."
    assert result.forwarded is None


def test_split_quotes_quoted_forward_marker_is_quote() -> None:
    body = f"Thanks!\n\n> {FORWARD_MARKERS[0]}\n> From: a@example.com"
    result = split_quotes(body, subject="Re: Fwd: Pricing")
    assert result.message_text == "Thanks!"
    assert result.forwarded is None


def test_split_quotes_html_quote_at_forward_keeps_it() -> None:
    marker = FORWARD_MARKERS[0]
    body = f"FYI\n\n{marker}\n{FORWARDED_BLOCK}\n\n{FORWARDED_BODY}"
    result = split_quotes(body, subject="Fwd: x", html_quote_start=body.index(marker))
    assert result.message_text == body
    assert result.forwarded_text == FORWARDED_BODY


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Fwd: x", True),
        ("FW: x", True),
        ("WG: x", True),
        ("TR : x", True),
        ("[EXT] Fw: x", True),
        ("转发：x", True),
        ("Re: Fwd: x", False),
        ("AW: x", False),
        ("Forward planning", False),
        (None, False),
    ],
)
def test_is_forward_subject_prefixes(subject: str | None, expected: bool) -> None:
    assert is_forward_subject(subject) is expected


# --- Failure cases and fixtures, unit and end to end ---


def test_split_quotes_outlook_block_without_separator_case() -> None:
    path = FIXTURES / "cases" / "C01.eml"
    result = split_quotes(plain_body(path), subject=subject_of(path))
    assert result.message_text == (
        "Thanks, please send the revised quote with delivery to our Hamburg warehouse."
    )
    assert result.quoted_text.startswith("From: Tom Becker [mailto:")
    assert result.quoted_text.endswith("new office.")


def test_split_quotes_gmail_forward_case() -> None:
    path = FIXTURES / "cases" / "C05.eml"
    body = plain_body(path)
    result = split_quotes(body, subject=subject_of(path))
    assert result.message_text == body
    assert result.forwarded is not None
    assert result.forwarded.from_ == Address(
        name="Priya Raman", email="priya.raman@example.org"
    )
    assert result.forwarded.subject == "Pricing for 200 seats"
    assert result.forwarded_text == (
        "Hello, we are evaluating your platform for 200 seats across two offices.\n"
        "Please call me at +44 20 7946 0321.\n\n"
        "Priya Raman\nProcurement Lead, Example Logistics Ltd"
    )


def test_quotes_stage_gmail_forward_case_end_to_end() -> None:
    lead = parse_lead((FIXTURES / "cases" / "C05.eml").read_bytes())
    assert lead.forwarded is not None
    assert lead.forwarded.from_ == Address(
        name="Priya Raman", email="priya.raman@example.org"
    )
    assert lead.extracted.email == "priya.raman@example.org"
    assert lead.extracted.phones == ["+442079460321"]


def test_quotes_stage_outlook_forward_de_end_to_end() -> None:
    lead = parse_lead((FIXTURES / "quotes" / "forward-outlook-de.eml").read_bytes())
    assert lead.forwarded is not None
    assert lead.forwarded.from_ == Address(
        name="Petra Lang", email="petra.lang@example.at"
    )
    assert lead.forwarded.date == "Montag, 11. März 2024 17:40"
    assert lead.forwarded.subject == "Anfrage Lagerregale"
    assert lead.quoted_text == (
        "Am 10.03.2024 um 09:12 schrieb Jonas Weber <jonas.weber@example.de>:\n"
        "> Gerne schicken wir Ihnen unseren Katalog."
    )
    assert "wir brauchen ein Angebot für 120 Lagerregale" in lead.message_text
    assert "Katalog" not in lead.message_text


def test_quotes_stage_japanese_reply_end_to_end() -> None:
    lead = parse_lead((FIXTURES / "quotes" / "reply-ja.eml").read_bytes())
    assert lead.message_text == (
        "見積もりをお願いします。50ライセンスです。\n\nよろしくお願いいたします。\n山田 太郎"
    )
    assert lead.quoted_text == (
        "2024年3月12日(火) 18:20 Sales Team <sales@example.net>:\n> 資料をお送りします。"
    )


def test_quotes_stage_outlook_html_reply_end_to_end() -> None:
    path = FIXTURES / "quotes" / "reply-outlook-fr-html.eml"
    lead = parse_lead(path.read_bytes())
    assert lead.body_source == "text/html"
    assert lead.message_text.endswith("Example Industries SAS\n01 23 45 67 89")
    assert lead.quoted_text.startswith("De : Ventes <ventes@example.net>")
    assert "+1 415 555 0199" in lead.quoted_text
    assert "+14155550199" not in lead.extracted.phones


# --- Public corpus ---

TALON_REPLIES = [
    "android.eml",
    "aol.eml",
    "apple_mail.eml",
    "apple_mail_2.eml",
    "comcast.eml",
    "gmail.eml",
    "hotmail.eml",
    "iphone.eml",
    "outlook.eml",
    "sparrow.eml",
    "thunderbird.eml",
    "yahoo.eml",
]


def _trimmed(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


@pytest.mark.corpus
@pytest.mark.parametrize("name", TALON_REPLIES)
def test_quotes_stage_talon_standard_reply(name: str) -> None:
    # talon's extract_from_plain keeps the signature, like message_text.
    folder = corpus_or_skip("talon", "standard_replies")
    expected = (folder / f"{name}.expected.txt").read_text("utf-8")
    lead = parse_lead((folder / name).read_bytes())
    assert _trimmed(lead.message_text) == _trimmed(expected)
