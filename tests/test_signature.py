"""Tests for the signature stage: where signatures start and what they contain."""

from __future__ import annotations

import pytest

from leadparse import parse_lead
from leadparse.model import Contact
from leadparse.quotes import split_quotes
from leadparse.signature import phones_in_text, read_contact, split_signature

from .conftest import FIXTURES, corpus_or_skip
from .test_quotes import plain_body

TEXT = "Could you send the price list for 40 desks?\nWe want delivery in May."

# --- The user example ---

USER_EXAMPLE = (
    "Hi team,\n\nWe are evaluating your platform for our data pipeline.\n"
    "Could we schedule a demo next week? We need enterprise pricing.\n\n"
    "Thanks,\nAna\nHead of Data, Contoso\n+1 (415) 555-0100\n"
)


def test_split_signature_user_example() -> None:
    result = split_signature(USER_EXAMPLE, sender_name="Ana Gomez")
    assert result.stripped_text == (
        "Hi team,\n\nWe are evaluating your platform for our data pipeline.\n"
        "Could we schedule a demo next week? We need enterprise pricing."
    )
    assert result.signature == "Thanks,\nAna\nHead of Data, Contoso\n+1 (415) 555-0100"


def test_read_contact_user_example() -> None:
    # The signature names only "Ana"; the From display name is the fuller
    # name, so a lone first name is kept as full_name and not split.
    contact = read_contact(
        "Thanks,\nAna\nHead of Data, Contoso\n+1 (415) 555-0100",
        sender_name="Ana Gomez",
        sender_domain="contoso.com",
    )
    assert contact == Contact(
        full_name="Ana",
        given_name=None,
        family_name=None,
        company="Contoso",
        role="Head of Data",
        phones=["+14155550100"],
        emails=[],
        website=None,
    )


def test_signature_stage_user_example_end_to_end() -> None:
    lead = parse_lead((FIXTURES / "core" / "01-user-example.eml").read_bytes())
    assert lead.message_text == USER_EXAMPLE.strip("\n")
    assert lead.stripped_text == (
        "Hi team,\n\nWe are evaluating your platform for our data pipeline.\n"
        "Could we schedule a demo next week? We need enterprise pricing."
    )
    assert lead.signature is not None
    assert lead.signature.startswith("Thanks,\nAna\n")
    assert lead.extracted.role == "Head of Data"
    assert lead.extracted.company == "Contoso"
    assert lead.extracted.phones == ["+14155550100"]
    assert lead.extracted.first_name == "Ana"
    assert lead.extracted.last_name == "Gomez"


# --- Delimiters ---


@pytest.mark.parametrize("delimiter", ["-- ", "--", "--\xa0"])
def test_split_signature_delimiter_line(delimiter: str) -> None:
    body = f"{TEXT}\n\n{delimiter}\nNora Fischer\nExample GmbH"
    result = split_signature(body)
    assert result.stripped_text == TEXT
    assert result.signature == "Nora Fischer\nExample GmbH"


def test_split_signature_double_hyphen_in_text() -> None:
    body = (
        "Hi Sam,\n\nOur budget for this is fixed for Q2--ideally we start before "
        "June 1.\nIt is tight -- we go live in May.\n--> Step one: 20 seats\n"
        "----------\nPlease call me tomorrow.\n\n-- \nIda Berg"
    )
    result = split_signature(body, sender_name="Ida Berg")
    assert result.stripped_text == body[: body.index("\n\n-- \n")]
    assert result.signature == "Ida Berg"


def test_split_signature_delimiter_case() -> None:
    body = plain_body(FIXTURES / "cases" / "C06.eml")
    result = split_signature(body, sender_name="Nora Fischer")
    assert result.stripped_text == (
        "Hi Sam,\n\nWe would like a demo next week for our sales team of 15 people."
        "\n\nOur budget for this is fixed for Q2--ideally we start before June 1."
    )
    assert result.signature == "Nora Fischer"


# --- Sign-offs ---

SIGN_OFFS = [
    "Thanks,",
    "Thank you!",
    "Best regards,",
    "Kind regards",
    "Cheers",
    "Best,",
    "Mit freundlichen Grüßen",
    "Viele Grüße",
    "Cordialement,",
    "Bien à vous,",
    "Saludos",
    "Atentamente,",
    "Atenciosamente,",
    "Cordiali saluti",
    "Met vriendelijke groet,",
    "Med vänlig hälsning",
    "Venlig hilsen",
    "Med vennlig hilsen",
    "Ystävällisin terveisin",
    "Pozdrawiam",
    "С уважением,",
    "よろしくお願いいたします。",
    "此致",
]


@pytest.mark.parametrize("sign_off", SIGN_OFFS)
def test_split_signature_sign_off(sign_off: str) -> None:
    body = f"{TEXT}\n\n{sign_off}\nMarta Silva\nExample Foods Lda"
    result = split_signature(body)
    assert result.stripped_text == TEXT
    assert result.signature == f"{sign_off}\nMarta Silva\nExample Foods Lda"


def test_split_signature_sign_off_with_name() -> None:
    result = split_signature(f"{TEXT}\n\nThanks, Ana")
    assert result.stripped_text == TEXT
    assert result.signature == "Thanks, Ana"


def test_split_signature_sign_off_word_starting_sentence() -> None:
    body = (
        "Thanks, please send the revised quote with delivery to our Hamburg warehouse."
    )
    result = split_signature(body, sender_name="Lena Kraus")
    assert result.stripped_text == body
    assert result.signature is None


def test_split_signature_sign_off_followed_by_text() -> None:
    body = (
        "Thanks!\n\nCould you also send the price list for the enterprise plan "
        "and the onboarding package?"
    )
    result = split_signature(body)
    assert result.stripped_text == body
    assert result.signature is None


# --- Mobile lines ---


@pytest.mark.parametrize(
    "line",
    [
        "Sent from my iPhone",
        "Sent from my Verizon Wireless BlackBerry",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
        "Enviado desde mi iPhone",
        "Get Outlook for iOS",
    ],
)
def test_split_signature_mobile_line(line: str) -> None:
    result = split_signature(f"{TEXT}\n\n{line}")
    assert result.stripped_text == TEXT
    assert result.signature == line


def test_split_signature_sent_from_sentence_kept() -> None:
    body = "Here is another email\n\nSent from my desk, is much easier then my phone."
    result = split_signature(body)
    assert result.stripped_text == body
    assert result.signature is None


# --- Signatures without a marker ---


def test_split_signature_block_with_sender_name() -> None:
    body = f"{TEXT}\n\nRuth Adler\nFacilities Manager"
    result = split_signature(body, sender_name="Ruth Adler")
    assert result.stripped_text == TEXT
    assert result.signature == "Ruth Adler\nFacilities Manager"


def test_split_signature_block_of_contact_lines() -> None:
    body = f"{TEXT}\n\nJohn Doe\nSales Director\nExample Corp\nwww.example.com"
    result = split_signature(body, sender_name="Sales Team")
    assert result.stripped_text == TEXT
    assert result.signature == "John Doe\nSales Director\nExample Corp\nwww.example.com"


def test_split_signature_dash_name() -> None:
    body = f"{TEXT}\n\n-Abhishek Kona\n\n\n{'_' * 47}\nriak-users mailing list"
    result = split_signature(body)
    assert result.stripped_text == TEXT
    assert (
        result.signature == f"-Abhishek Kona\n\n\n{'_' * 47}\nriak-users mailing list"
    )


def test_split_signature_bullet_not_dash_name() -> None:
    body = "Two:\n- Here is another bullet point\n- And another one\n- Apples"
    result = split_signature(body)
    assert result.stripped_text == body
    assert result.signature is None


def test_split_signature_plain_last_paragraph_kept() -> None:
    body = "Hi there!\n\nStuff happened.\n\nAnd here is a fix.\n\nkthxbai"
    result = split_signature(body)
    assert result.stripped_text == body
    assert result.signature is None


def test_split_signature_no_marker_case() -> None:
    body = plain_body(FIXTURES / "cases" / "C08.eml")
    result = split_signature(body, sender_name="Angela Dorn")
    assert result.stripped_text == (
        "Hope you are doing well! Could you send the updated price list for our "
        "Q3 order?"
    )
    assert result.signature == (
        "Angela Dorn\nHead of Procurement\nExample Bank AG\n"
        "Tel:+49 69 12345678/Mobil: +49 151 23456789"
    )


# --- Contact extraction ---


def test_read_contact_no_marker_case() -> None:
    contact = read_contact(
        "Angela Dorn\nHead of Procurement\nExample Bank AG\n"
        "Tel:+49 69 12345678/Mobil: +49 151 23456789",
        sender_name="Angela Dorn",
        sender_domain="example.com",
    )
    assert contact == Contact(
        full_name="Angela Dorn",
        given_name="Angela",
        family_name="Dorn",
        company="Example Bank AG",
        role="Head of Procurement",
        phones=["+496912345678", "+4915123456789"],
    )


@pytest.mark.parametrize(
    ("line", "role", "company"),
    [
        (
            "Procurement Lead, Example Logistics Ltd",
            "Procurement Lead",
            "Example Logistics Ltd",
        ),
        ("Director, Product Management", "Director, Product Management", None),
        ("Head of Sales at Contoso", "Head of Sales", "Contoso"),
        ("VP Engineering, Fabrikam Inc.", "VP Engineering", "Fabrikam Inc."),
        ("Geschäftsführer, Beispiel GmbH", "Geschäftsführer", "Beispiel GmbH"),
        ("Directeur commercial, Exemple SAS", "Directeur commercial", "Exemple SAS"),
        ("Gerente de Compras, Ejemplo S.A.", "Gerente de Compras", "Ejemplo S.A."),
    ],
)
def test_read_contact_role_and_company(
    line: str, role: str, company: str | None
) -> None:
    contact = read_contact(f"Best,\nMaria Lopez\n{line}")
    assert contact is not None
    assert contact.full_name == "Maria Lopez"
    assert contact.role == role
    assert contact.company == company


def test_read_contact_company_line_after_role() -> None:
    contact = read_contact("Sam Ortiz\nPurchasing Manager\nNorthwind Traders")
    assert contact is not None
    assert contact.role == "Purchasing Manager"
    assert contact.company == "Northwind Traders"


def test_read_contact_pipe_separated_line() -> None:
    contact = read_contact("*Joe Smith | Director, Product Management*")
    assert contact is not None
    assert contact.full_name == "Joe Smith"
    assert contact.role == "Director, Product Management"
    assert contact.company is None


def test_read_contact_fax_not_a_phone() -> None:
    contact = read_contact(
        "Ida Berg\nT: +46 8 123 456 78\nFax: +46 8 123 456 79", sender_name="Ida Berg"
    )
    assert contact is not None
    assert contact.phones == ["+46812345678"]


def test_read_contact_region_from_sender_domain() -> None:
    contact = read_contact(
        "Cordialement,\nClaire Martin\n01 23 45 67 89",
        sender_name="Claire Martin",
        sender_domain="example.fr",
    )
    assert contact is not None
    assert contact.phones == ["+33123456789"]


def test_read_contact_region_from_country_code_in_text() -> None:
    contact = read_contact(
        "Petra Lang\nTel. +43 1 234 5678\nMobil 0664 1234567",
        sender_name="Petra Lang",
        sender_domain="example.com",
        default_region="US",
    )
    assert contact is not None
    assert contact.phones == ["+4312345678", "+436641234567"]


def test_read_contact_emails_and_website() -> None:
    contact = read_contact(
        "Gina Rossi\nGina.Rossi@Example.com\nhttps://www.linkedin.com/in/gina\n"
        "www.example.com",
        sender_name="Gina Rossi",
    )
    assert contact is not None
    assert contact.emails == ["gina.rossi@example.com"]
    assert contact.website == "www.example.com"


def test_read_contact_empty_signature() -> None:
    assert read_contact(None) is None
    assert read_contact("Sent from my iPhone") is None


def test_phones_in_text_needs_cue() -> None:
    text = "Order 4155550100 shipped.\nPlease call me at +44 20 7946 0321."
    assert phones_in_text(text) == ["+442079460321"]
    assert phones_in_text("Order 4155550100 shipped.") == []


# --- The stage, end to end ---


def test_signature_stage_forward_reads_forwarded_signature() -> None:
    lead = parse_lead((FIXTURES / "quotes" / "forward-outlook-de.eml").read_bytes())
    assert lead.signature == (
        "Mit freundlichen Grüßen\nPetra Lang\nLeiterin Einkauf\n"
        "Example Logistik GmbH\nTel. +43 1 234 5678"
    )
    assert "Viele Grüße" not in lead.stripped_text
    assert lead.stripped_text.startswith("Bitte übernehmen, danke.\n\n")
    assert lead.stripped_text.endswith("Rufen Sie mich gerne an: 01 234 5678.")
    assert lead.extracted.email == "petra.lang@example.at"
    assert lead.extracted.role == "Leiterin Einkauf"
    assert lead.extracted.company == "Example Logistik GmbH"
    assert lead.extracted.phones == ["+4312345678"]


def test_signature_stage_forward_case_phone_in_body() -> None:
    lead = parse_lead((FIXTURES / "cases" / "C05.eml").read_bytes())
    assert lead.signature == "Priya Raman\nProcurement Lead, Example Logistics Ltd"
    assert lead.extracted.role == "Procurement Lead"
    assert lead.extracted.company == "Example Logistics Ltd"
    assert lead.extracted.phones == ["+442079460321"]


def test_signature_stage_quoted_signature_not_credited() -> None:
    path = FIXTURES / "cases" / "C01.eml"
    lead = parse_lead(path.read_bytes())
    assert lead.stripped_text == (
        "Thanks, please send the revised quote with delivery to our Hamburg warehouse."
    )
    assert lead.signature is None
    assert lead.extracted.phones == []


def test_signature_stage_role_without_company_case() -> None:
    lead = parse_lead((FIXTURES / "cases" / "C23.eml").read_bytes())
    assert lead.signature == "Ruth Adler\nFacilities Manager"
    assert lead.extracted.role == "Facilities Manager"


def test_signature_stage_japanese_name_not_split() -> None:
    lead = parse_lead((FIXTURES / "quotes" / "reply-ja.eml").read_bytes())
    assert lead.stripped_text == "見積もりをお願いします。50ライセンスです。"
    assert lead.signature == "よろしくお願いいたします。\n山田 太郎"


# --- Public corpus ---

# Expected visible text of the email_reply_parser test sets, where upstream
# gives only fragment facts. email_1_2: upstream's visible text keeps the
# quoted block between the reply's paragraphs; a lead record drops it.
REPLY_PARSER_TEXT = {
    "correct_sig.txt": "this is an email with a correct -- signature.",
    "email_1_3.txt": "Oh thanks.\n\nHaving the function would be great.",
    "email_1_4.txt": "Awesome! I haven't had another problem with it.",
    "email_1_6.txt": "I get proper rendering as well.",
    "email_1_7.txt": ":+1:",
    "email_1_8.txt": "I will reply under this one\n\nand under this.",
    "email_headers_no_delimiter.txt": "And another reply!",
    "pathological.txt": "I think you're onto something. I will try to fix the "
    "problem as soon as I\nget back to a computer.",
}
REPLY_PARSER_UNCHANGED = {"email_1_5.txt", "email_sig_delimiter_in_middle_of_line.txt"}


def _trimmed(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


def _reply_parser_files(source: str) -> list[str]:
    names = {
        "github-email_reply_parser": [
            "correct_sig.txt",
            "email_1_1.txt",
            "email_1_3.txt",
            "email_1_4.txt",
            "email_1_5.txt",
            "email_1_6.txt",
            "email_1_7.txt",
            "email_1_8.txt",
            "email_2_1.txt",
            "email_2_2.txt",
            "email_2_3.txt",
            "email_BlackBerry.txt",
            "email_bullets.txt",
            "email_iPhone.txt",
            "email_multi_word_sent_from_my_mobile_device.txt",
            "email_sent_from_my_not_signature.txt",
            "email_sig_delimiter_in_middle_of_line.txt",
            "pathological.txt",
        ],
        "zapier-email-reply-parser": [
            "email_2_3.txt",
            "email_gmail.txt",
            "email_headers_no_delimiter.txt",
        ],
    }
    return names[source]


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("source", "name"),
    [
        (source, name)
        for source in ("github-email_reply_parser", "zapier-email-reply-parser")
        for name in _reply_parser_files(source)
    ],
)
def test_signature_stage_reply_parser_visible_text(source: str, name: str) -> None:
    folder = corpus_or_skip(source)
    body = (folder / name).read_text("utf-8").replace("\r\n", "\n").strip("\n")
    expected_path = folder / f"{name}.expected.txt"
    if expected_path.exists():
        expected = expected_path.read_text("utf-8")
    elif name in REPLY_PARSER_UNCHANGED:
        expected = body
    else:
        expected = REPLY_PARSER_TEXT[name]
    quotes = split_quotes(body, subject="Re: test")
    result = split_signature(quotes.message_text, sender_name="Sender")
    assert _trimmed(result.stripped_text) == _trimmed(expected)


@pytest.mark.corpus
def test_signature_stage_reply_parser_inline_replies() -> None:
    folder = corpus_or_skip("github-email_reply_parser")
    body = (folder / "email_1_2.txt").read_text("utf-8")
    result = split_signature(split_quotes(body).message_text)
    assert result.stripped_text.startswith("Hi,\n\nYou can list the keys")
    assert result.stripped_text.endswith('need to delete them all individually."')
    assert "> " not in result.stripped_text
    assert "riak-users" not in result.stripped_text


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("stem", "sender"),
    [
        ("jeff", "Stavros Xxxxxx"),
        ("long", "Gina Xxxxxxxxx"),
        ("short_url", "Noam"),
        ("sparse", "John Doe"),
        ("camel_case", None),
    ],
)
def test_split_signature_talon_signatures(stem: str, sender: str | None) -> None:
    folder = corpus_or_skip("talon", "signature", "stripped")
    body = (folder / f"{stem}_body").read_text("utf-8").strip()
    expected = (folder / f"{stem}_body.expected.txt").read_text("utf-8").strip()
    result = split_signature(body, sender_name=sender)
    assert _trimmed(result.signature or "") == _trimmed(expected)
