from __future__ import annotations

import base64

import pytest

from leadparse import Limits, Policy, parse_lead
from leadparse._charsets import decode_bytes, normalize_charset
from leadparse._headers import decode_header_value, parse_addresses, parse_message_ids

from .conftest import message


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("iso-8859-8-i", "iso8859-8"),
        ("GB2312", "gb18030"),
        ("gbk", "gb18030"),
        ("ks_c_5601-1987", "cp949"),
        ("Shift_JIS", "cp932"),
        ("iso-2022-jp", "iso2022_jp_ext"),
        ('"utf-8"', "utf-8"),
        ("UTF8", "utf-8"),
        ("utf-8*en", "utf-8"),
        ("windows-1252", "cp1252"),
        ("cp-850", "cp850"),
        ("x-unknown", None),
        ("no-such-charset", None),
        ("", None),
    ],
)
def test_normalize_charset_labels(label: str, codec: str | None) -> None:
    assert normalize_charset(label) == codec


def test_decode_bytes_declared_charset() -> None:
    result = decode_bytes("Grüße".encode("iso-8859-15"), "iso-8859-15")

    assert result.text == "Grüße"
    assert result.fallback is None


def test_decode_bytes_wrong_declaration_falls_back_to_utf8() -> None:
    result = decode_bytes("Grüße aus Köln".encode(), "us-ascii")

    assert result.text == "Grüße aus Köln"
    assert result.charset == "utf-8"
    assert result.fallback == "invalid"


def test_decode_bytes_undeclared_windows_1252() -> None:
    text = "Caf\u00e9 \u201cquoted\u201d \u20ac5 pr\u00e8s de la gare, tr\u00e8s bien situ\u00e9"

    result = decode_bytes(text.encode("cp1252"), None)

    assert result.text == text
    assert result.fallback == "undeclared"


def test_decode_bytes_unknown_label_uses_chain() -> None:
    result = decode_bytes("naïve".encode(), "x-made-up")

    assert result.text == "naïve"
    assert result.fallback == "unknown"


def test_decode_bytes_never_raises_on_noise() -> None:
    noise = bytes(range(256)) * 3

    result = decode_bytes(noise, "utf-8")

    assert isinstance(result.text, str)
    assert result.fallback == "invalid"


def test_decode_bytes_latin1_with_c1_bytes() -> None:
    result = decode_bytes(b"caf\xe9 \x81", "iso-8859-1")

    assert result.text == "caf\u00e9 \x81"
    assert result.fallback is None


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("=?utf-8?q?Angebot_f=C3=BCr?= =?utf-8?q?_B=C3=BCro?=", "Angebot für Büro"),
        ("Re: =?utf-8?q?B=C3=BCro?=\r\n =?utf-8?q?st=C3=BChle?=", "Re: Bürostühle"),
        ("=?UTF-8?B?w4TDpMOkaA==?=", "Äääh"),
        ("=?utf-8?b?w4TDpMOkaA?=", "Äääh"),
        ("=?iso-8859-1?q?caf=E9?= au lait", "café au lait"),
        ("a =?utf-8?q?=C3=A9?= b", "a é b"),
        ("=?utf-8*de?q?Stra=C3=9Fe?=", "Straße"),
        ("=?x-bogus?q?plain?=", "plain"),
        ("=?utf-8?q?broken", "=?utf-8?q?broken"),
        ('"=?utf-8?q?M=C3=BCller?=" <m@example.org>', '"Müller" <m@example.org>'),
        ("=?ISO-2022-JP?B?GyRCJTUlcyVXJWsbKEI=?=", "サンプル"),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_decode_header_value(raw: str, decoded: str) -> None:
    assert decode_header_value(raw) == decoded


def test_parse_addresses_decodes_after_splitting() -> None:
    addresses, problems = parse_addresses(
        '=?utf-8?q?Doe=2C_Jane?= <Jane.Doe@Example.COM>, "Roe, Rick" <rick@example.org>'
    )

    assert [(a.name, a.email) for a in addresses] == [
        ("Doe, Jane", "jane.doe@example.com"),
        ("Roe, Rick", "rick@example.org"),
    ]
    assert problems == []


def test_parse_addresses_reports_invalid() -> None:
    addresses, problems = parse_addresses("Bob <not-an-address>")

    assert [(a.name, a.email) for a in addresses] == [("Bob", None)]
    assert problems == ["not-an-address"]


def test_parse_addresses_drops_bare_word() -> None:
    addresses, problems = parse_addresses("undisclosed")

    assert addresses == []
    assert problems == ["undisclosed"]


@pytest.mark.parametrize(
    ("raw", "ids"),
    [
        ("<a@b>", ["a@b"]),
        ("<a@b> <c@d>\r\n <e@f>", ["a@b", "c@d", "e@f"]),
        ("<[5e1d@mail.example.com]>", ["[5e1d@mail.example.com]"]),
        ("no-brackets@example.com", ["no-brackets@example.com"]),
        ("<a@b> <a@b>", ["a@b"]),
        ("   ", []),
    ],
)
def test_parse_message_ids(raw: str, ids: list[str]) -> None:
    assert parse_message_ids(raw) == ids


def test_raw_utf8_header_decodes() -> None:
    raw = "From: José Müller <jm@example.org>\r\nSubject: Café für alle\r\n\r\nhi\r\n"

    lead = parse_lead(raw.encode("utf-8"))

    assert lead.subject == "Café für alle"
    assert lead.from_.name == "José Müller"


def test_raw_cp1252_header_decodes() -> None:
    raw = "From: a@example.org\r\nSubject: Caf\u00e9 r\u00e9sum\u00e9 for the \u00e9quipe\r\n\r\nhi\r\n"

    lead = parse_lead(raw.encode("cp1252"))

    assert lead.subject == "Café résumé for the équipe"


def test_iso_2022_jp_body_and_subject() -> None:
    body = "お見積りをお願いします。"
    raw = (
        b"From: a@example.jp\r\nSubject: =?ISO-2022-JP?B?"
        + base64.b64encode("見積依頼".encode("iso2022_jp"))
        + b"?=\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n\r\n" + body.encode("iso2022_jp") + b"\r\n"
    )

    lead = parse_lead(raw)

    assert lead.subject == "見積依頼"
    assert lead.body_text == body
    assert lead.defects == []


def test_undeclared_8bit_body_records_defect() -> None:
    raw = b"From: a@example.org\r\nSubject: x\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"

    lead = parse_lead(raw)

    assert lead.body_text == "Grüße"
    assert [d.code for d in lead.defects] == ["charset_fallback"]


def test_duplicate_content_type_uses_used_boundary() -> None:
    raw = (
        b"From: a@example.org\r\n"
        b'Content-Type: multipart/mixed; boundary="unused"\r\n'
        b'Content-Type: multipart/alternative; boundary="used"\r\n\r\n'
        b"--used\r\nContent-Type: text/plain\r\n\r\nthe body\r\n--used--\r\n"
    )

    lead = parse_lead(raw)

    assert lead.body_text == "the body"
    assert [d.code for d in lead.defects] == ["duplicate_content_type"]


def test_wrong_boundary_is_recovered() -> None:
    raw = (
        b"From: a@example.org\r\n"
        b'Content-Type: multipart/mixed; boundary="declared"\r\n\r\n'
        b"--actual\r\nContent-Type: text/plain\r\n\r\nrecovered text\r\n"
        b"--actual\r\nContent-Type: text/plain; name=a.txt\r\n\r\nattached\r\n--actual--\r\n"
    )

    lead = parse_lead(raw)

    assert lead.body_text == "recovered text"
    codes = [d.code for d in lead.defects]
    assert "boundary_recovered" in codes


def test_missing_close_boundary_keeps_text() -> None:
    raw = (
        b"From: a@example.org\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nno closing line\r\n"
    )

    lead = parse_lead(raw)

    assert lead.body_text == "no closing line"
    assert "mime_close_boundary_not_found" in [d.code for d in lead.defects]


def test_flowed_text_is_joined() -> None:
    raw = (
        b"From: a@example.org\r\nContent-Type: text/plain; format=flowed\r\n\r\n"
        b"This line is \r\nflowed into one.\r\n-- \r\nSig\r\n"
    )

    lead = parse_lead(raw)

    assert lead.body_text == "This line is flowed into one.\n-- \nSig"


def test_html_only_alternative_renders_text() -> None:
    raw = (
        b"From: a@example.org\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>From <b>HTML</b></p>\r\n--b--\r\n"
    )

    lead = parse_lead(raw)

    assert lead.body_text == "From HTML"
    assert lead.body_source == "text/html"


def test_text_attachment_not_merged_into_body() -> None:
    raw = (
        b"From: a@example.org\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nbody text\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\n"
        b"attached notes\r\n--b--\r\n"
    )

    lead = parse_lead(raw)

    assert lead.body_text == "body text"


def _nested(depth: int) -> bytes:
    head = b"From: a@example.org\r\n"
    body = b"Content-Type: text/plain\r\n\r\ndeep text\r\n"
    for level in range(depth):
        boundary = f"b{level}".encode()
        body = (
            b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\r\n\r\n--'
            + boundary
            + b"\r\n"
            + body
            + b"--"
            + boundary
            + b"--\r\n"
        )
    return head + body


def test_max_depth_limit_records_defect() -> None:
    policy = Policy(limits=Limits(max_depth=3))

    lead = parse_lead(_nested(6), policy=policy)

    assert "nesting_too_deep" in [d.code for d in lead.defects]
    assert lead.body_text == ""


def test_depth_within_limit_reads_text() -> None:
    lead = parse_lead(_nested(6))

    assert lead.body_text == "deep text"
    assert lead.defects == []


def test_very_deep_nesting_does_not_raise() -> None:
    lead = parse_lead(_nested(2000))

    assert "nesting_too_deep" in [d.code for d in lead.defects]


def test_max_parts_limit_records_defect() -> None:
    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream; name=p%d.bin\r\n\r\nx\r\n" % i
        for i in range(50)
    )
    raw = (
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n" + parts + b"--b--\r\n"
    )

    lead = parse_lead(raw, policy=Policy(limits=Limits(max_parts=10)))

    assert lead.body_text == "hello"
    assert [d.code for d in lead.defects].count("too_many_parts") == 1


def test_max_message_bytes_parses_headers_only() -> None:
    raw = message("From: a@example.org", "Subject: big", body="x" * 5000)

    lead = parse_lead(raw, policy=Policy(limits=Limits(max_message_bytes=1000)))

    assert lead.subject == "big"
    assert lead.body_text == ""
    assert [d.code for d in lead.defects] == ["message_too_large"]


def test_max_headers_limit_records_defect() -> None:
    raw = message("From: a@example.org", *[f"X-Extra-{i}: v" for i in range(30)])

    lead = parse_lead(raw, policy=Policy(limits=Limits(max_headers=10)))

    assert lead.from_.email == "a@example.org"
    assert [d.code for d in lead.defects] == ["too_many_headers"]


def test_max_seconds_skips_optional_stages() -> None:
    policy = Policy(limits=Limits(max_seconds=1e-9))

    lead = parse_lead(
        message("From: a@example.org", "Subject: demo please"), policy=policy
    )

    codes = [d.code for d in lead.defects]
    assert codes == ["time_limit_exceeded"]
    assert lead.idempotency_key != ""
    assert lead.provenance.stages == ["identity"]


def test_max_html_bytes_truncates_rendering() -> None:
    html = "<p>" + "word " * 400 + "</p>"
    raw = message("From: a@example.org", "Content-Type: text/html", body=html)

    lead = parse_lead(raw, policy=Policy(limits=Limits(max_html_bytes=100)))

    assert "html_too_large" in [d.code for d in lead.defects]
    assert len(lead.body_text) <= 100


def test_max_text_chars_records_defect() -> None:
    raw = message("From: a@example.org", body="word " * 100)

    lead = parse_lead(raw, policy=Policy(limits=Limits(max_text_chars=50)))

    assert "text_too_large" in [d.code for d in lead.defects]


def test_date_without_zone_is_utc_with_defect() -> None:
    lead = parse_lead(message("From: a@example.org", "Date: Tue, 05 Mar 2024 09:14:22"))

    assert lead.model_dump(mode="json")["date"] == "2024-03-05T09:14:22Z"
    assert [d.code for d in lead.defects] == ["invalid_date"]


def test_missing_from_records_defect() -> None:
    lead = parse_lead(message("Subject: no sender"))

    assert lead.from_.email is None
    assert [d.code for d in lead.defects] == ["missing_from"]


def test_threading_ids_without_brackets() -> None:
    lead = parse_lead(
        message(
            "From: a@example.org",
            "Message-ID: <m3@example.org>",
            "In-Reply-To: <m2@example.org>",
            "References: <m1@example.org>\r\n <m2@example.org>",
        )
    )

    assert lead.threading.in_reply_to == "m2@example.org"
    assert lead.threading.references == ["m1@example.org", "m2@example.org"]
    assert lead.threading.thread_id == "m1@example.org"


def test_max_intent_chars_bounds_intent_text() -> None:
    body = "x " * 300 + "we want a demo"
    raw = message("From: a@example.org", "Subject: hello", body=body)

    near = parse_lead(raw, policy=Policy(limits=Limits(max_intent_chars=1000)))
    far = parse_lead(raw, policy=Policy(limits=Limits(max_intent_chars=100)))

    assert near.extracted.intent == ["demo_request"]
    assert far.extracted.intent == []


def test_html_with_xml_declaration_keeps_lines() -> None:
    html = '<?xml version="1.0" encoding="utf-8"?>\n<html><body><p>One</p><p>Two</p></body></html>'
    raw = message("From: a@example.org", "Content-Type: text/html", body=html)

    lead = parse_lead(raw)

    assert lead.body_text == "One\n\nTwo"


def test_large_base64_attachment_decodes_from_raw_bytes() -> None:
    import hashlib
    import os

    payload = os.urandom(2 * 1024 * 1024)
    encoded = base64.encodebytes(payload)
    raw = (
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b--\r\n"
    )

    lead = parse_lead(raw)

    assert lead.body_text == "see attached"
    assert [a.size for a in lead.attachments] == [len(payload)]
    assert lead.attachments[0].sha256 == hashlib.sha256(payload).hexdigest()
    assert lead.defects == []


def test_large_attachment_closing_boundary_right_after_last_line() -> None:
    import hashlib

    payload = bytes(range(256)) * (57 * 64)  # whole 76-character base64 lines
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    raw = (
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b--\r\n"
    )
    assert len(encoded) > 1024 * 1024

    lead = parse_lead(raw)

    assert [a.size for a in lead.attachments] == [len(payload)]
    assert lead.attachments[0].sha256 == hashlib.sha256(payload).hexdigest()
    assert lead.defects == []


def test_long_base64_like_line_is_fast() -> None:
    import time

    raw = (
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name=x.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + b"QUJD" * 500_000
        + b"\r\n--b--\r\n"
    )
    started = time.monotonic()

    lead = parse_lead(raw)

    assert time.monotonic() - started < 5
    assert [a.size for a in lead.attachments] == [1_500_000]


@pytest.mark.parametrize(
    "label", ["undefined", "idna", "punycode", "unicode_escape", "charmap", "base64"]
)
def test_python_only_codecs_are_not_charsets(label: str) -> None:
    assert normalize_charset(label) is None


def test_bogus_charset_in_subject_keeps_body() -> None:
    raw = message(
        "From: a@example.org",
        "Subject: =?undefined?Q?hello?=",
        "Content-Type: text/plain; charset=unicode_escape",
        body="C:\\new\\test",
    )

    lead = parse_lead(raw)

    assert lead.subject == "hello"
    assert lead.body_text == "C:\\new\\test"
    assert [d.code for d in lead.defects] == ["charset_fallback"]


@pytest.mark.parametrize(
    ("html", "forbidden"),
    [
        ('<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>', "data:"),
        ('<a href="jAvAsCrIpT:alert(1)">x</a>', "javascript"),
        ('<a href="&#106;avascript:alert(1)">x</a>', "alert"),
        ('<img src="x" onerror="alert(1)">', "onerror"),
        ('<svg onload="alert(1)"></svg>', "onload"),
        ('<p style="width: expression(alert(1))">x</p>', "expression"),
        ("<script>alert(1)</script>", "script"),
        ('<form action="https://evil.example"><input name="q"></form>', "form"),
        ('<img src="https://tracker.example/p.gif">', "tracker"),
        ('<img src="data:image/svg+xml;base64,PHN2Zz4=">', "data:"),
    ],
)
def test_body_html_sanitizer_removes(html: str, forbidden: str) -> None:
    raw = message(
        "From: a@example.org", "Content-Type: text/html", body=f"<p>hi</p>{html}"
    )

    lead = parse_lead(raw)

    assert lead.body_html is not None
    assert forbidden not in lead.body_html.lower()


def test_body_html_keeps_cid_images_and_links() -> None:
    html = '<p><a href="https://example.org/p">link</a><img src="cid:logo@x"></p>'
    raw = message("From: a@example.org", "Content-Type: text/html", body=html)

    lead = parse_lead(raw)

    assert lead.body_html is not None
    assert 'href="https://example.org/p"' in lead.body_html
    assert 'src="cid:logo@x"' in lead.body_html
    assert 'rel="noopener noreferrer nofollow"' in lead.body_html


def test_max_header_chars_cuts_long_subject() -> None:
    raw = message("From: a@example.org", "Subject: " + "x" * 5000)

    lead = parse_lead(raw, policy=Policy(limits=Limits(max_header_chars=100)))

    assert lead.subject == "x" * 100
    assert [d.code for d in lead.defects] == ["header_too_long"]


def test_deep_html_rendered_from_tags() -> None:
    import time

    html = "<div>" * 100_000 + "deep <b>text</b>" + "</div>" * 100_000
    raw = message("From: a@example.org", "Content-Type: text/html", body=html)
    started = time.monotonic()

    lead = parse_lead(raw)

    assert time.monotonic() - started < 5
    assert lead.body_text == "deep text"
    assert lead.body_html == "<pre>deep text</pre>"
    assert [d.code for d in lead.defects] == ["html_too_deep"]


def test_html_within_depth_limit_parsed_as_tree() -> None:
    html = "<div>" * 50 + "<p>nested</p>" + "</div>" * 50

    lead = parse_lead(
        message("From: a@example.org", "Content-Type: text/html", body=html)
    )

    assert lead.body_text == "nested"
    assert lead.defects == []


@pytest.mark.parametrize("boundary", ['""', "x" * 71])
def test_invalid_boundary_length_records_defect(boundary: str) -> None:
    raw = message(
        "From: a@example.org",
        f"Content-Type: multipart/mixed; boundary={boundary}",
        body="no parts here",
    )

    lead = parse_lead(raw)

    assert "invalid_boundary" in [d.code for d in lead.defects]
