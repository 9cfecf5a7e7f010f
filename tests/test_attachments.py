"""The attachments stage through parse_lead, on messages built in each test."""

from __future__ import annotations

import binascii
import hashlib
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from leadparse import Limits, Policy, parse_lead
from leadparse.attachments import AttachmentStore, detect_type
from leadparse.model import Lead
from leadparse.store import FileSystemStore

ATTACHMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "attachments"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 16


def _mixed(
    body: str = "Please see the attachment.\n", subject: str = "Quote"
) -> MIMEMultipart:
    message = MIMEMultipart()
    message["From"] = "Dana Reyes <dana@example.com>"
    message["To"] = "sales@example.net"
    message["Subject"] = subject
    message["Message-ID"] = "<attach-test@example.com>"
    message.attach(MIMEText(body, "plain"))
    return message


def _attach(message: MIMEMultipart, part: Message, filename: str | None) -> None:
    if filename is not None:
        part.add_header("Content-Disposition", "attachment", filename=filename)
    message.attach(part)


def _parse(raw: bytes, policy: Policy | None = None) -> Lead:
    return parse_lead(raw, policy=policy)


def _codes(lead: Lead) -> list[str]:
    return [defect.code for defect in lead.defects]


def test_filename_path_traversal_reduced() -> None:
    message = _mixed()
    _attach(message, MIMEApplication(b"x", "octet-stream"), "../../etc/passwd")
    _attach(message, MIMEApplication(b"y", "octet-stream"), "..\\..\\Windows\\win.ini")
    _attach(message, MIMEApplication(b"z", "octet-stream"), "re\x07port\x00.txt")
    _attach(message, MIMEApplication(b"w", "octet-stream"), "../..")

    names = [item.filename for item in _parse(message.as_bytes()).attachments]

    assert names == ["passwd", "win.ini", "report.txt", None]


def test_zero_byte_attachment_listed() -> None:
    message = _mixed()
    _attach(message, MIMEApplication(b"", "octet-stream"), "empty.bin")

    [attachment] = _parse(message.as_bytes()).attachments

    assert attachment.filename == "empty.bin"
    assert attachment.size == 0
    assert attachment.sha256 == EMPTY_SHA256
    assert attachment.part == "2"
    assert attachment.disposition == "attachment"
    assert attachment.text is None


def test_base64_mislabelled_kept_as_sent() -> None:
    message = _mixed()
    part = MIMEBase("application", "octet-stream")
    sent = "This is not base64 at all!!! ~~~ {{}} ###\n"
    part.set_payload(sent)
    part["Content-Transfer-Encoding"] = "base64"
    _attach(message, part, "notes.bin")

    lead = _parse(message.as_bytes())

    [attachment] = lead.attachments
    assert attachment.size == len(sent)
    assert attachment.sha256 == hashlib.sha256(sent.encode()).hexdigest()
    assert [d.message for d in lead.defects if d.part == "2"] == [
        "payload declared base64 is not base64; kept the bytes as sent"
    ]


def test_base64_stray_characters_skipped() -> None:
    message = _mixed()
    part = MIMEBase("application", "octet-stream")
    part.set_payload("SGVsbG8g*V29y\nbGQh\n")
    part["Content-Transfer-Encoding"] = "base64"
    _attach(message, part, "hello.bin")

    lead = _parse(message.as_bytes())

    [attachment] = lead.attachments
    assert attachment.size == len(b"Hello World!")
    assert attachment.sha256 == hashlib.sha256(b"Hello World!").hexdigest()
    assert "payload_decoding" in _codes(lead)


def test_rfc2231_continuation_filename() -> None:
    raw = (
        b"From: dana@example.com\r\nTo: sales@example.net\r\nSubject: x\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nHi\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment;\r\n"
        b" filename*0*=UTF-8''Preisliste%20f%C3%BCr%20;\r\n"
        b" filename*1*=Gro%C3%9Fkunden%202024;\r\n"
        b" filename*2=.pdf\r\n\r\n%PDF-1.4\r\n"
        b"--b\r\nContent-Type: text/csv; name*=iso-8859-1'de'Gr%FC%DFe.csv\r\n"
        b"\r\na,b\r\n"
        b"--b--\r\n"
    )

    names = [item.filename for item in _parse(raw).attachments]

    assert names == ["Preisliste für Großkunden 2024.pdf", "Grüße.csv"]


def test_rfc2047_filename_folded_words() -> None:
    raw = (
        b"From: dana@example.com\r\nTo: sales@example.net\r\nSubject: x\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nHi\r\n"
        b'--b\r\nContent-Type: application/octet-stream; name="=?ISO-8859-1?B?'
        + binascii.b2a_base64("Übersicht".encode("latin-1"), newline=False)
        + b'?=\r\n =?ISO-8859-1?Q?_Q3=2Exlsx?="\r\n\r\nxx\r\n--b--\r\n'
    )

    [attachment] = _parse(raw).attachments

    assert attachment.filename == "Übersicht Q3.xlsx"


def test_text_attachment_not_merged_into_body() -> None:
    message = _mixed(body="Main body text.\n")
    notes = MIMEText("Attachment line that must stay out of the body.\n", "plain")
    _attach(message, notes, "notes.txt")
    named = MIMEText("Second attachment text.\n", "plain")
    named.set_param("name", "other.txt")
    message.attach(named)

    lead = _parse(message.as_bytes())

    assert lead.body_text == "Main body text."
    assert [item.filename for item in lead.attachments] == ["notes.txt", "other.txt"]
    assert lead.attachments[0].text == "Attachment line that must stay out of the body."
    assert lead.attachments[1].text == "Second attachment text."


def test_cid_image_inline_others_attachment() -> None:
    message = MIMEMultipart("related")
    message["From"] = "dana@example.com"
    message["Subject"] = "Logo"
    message.attach(MIMEText('<p>Hi <img src="cid:logo%40example.com"></p>', "html"))
    logo = MIMEImage(PNG, "png")
    logo["Content-ID"] = "<logo@example.com>"
    logo.add_header("Content-Disposition", "attachment", filename="logo.png")
    message.attach(logo)
    other = MIMEImage(PNG, "png")
    other["Content-ID"] = "<unused@example.com>"
    other.add_header("Content-Disposition", "attachment", filename="photo.png")
    message.attach(other)

    lead = _parse(message.as_bytes())

    assert [(a.filename, a.disposition, a.content_id) for a in lead.attachments] == [
        ("logo.png", "inline", "logo@example.com"),
        ("photo.png", "attachment", "unused@example.com"),
    ]


def test_detected_type_only_on_disagreement() -> None:
    message = _mixed()
    _attach(message, MIMEApplication(PNG, "pdf"), "scan.pdf")
    _attach(message, MIMEImage(b"\xff\xd8\xff\xe0" + b"\x00" * 20, "jpg"), "a.jpg")
    _attach(
        message, MIMEApplication(b"MZ\x90\x00" + b"\x00" * 20, "pdf"), "invoice.pdf"
    )

    lead = _parse(message.as_bytes())

    assert [(a.content_type, a.detected_type) for a in lead.attachments] == [
        ("application/pdf", "image/png"),
        ("image/jpg", None),
        ("application/pdf", "application/x-msdownload"),
    ]


def test_detect_type_ooxml_from_zip_directory() -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")

    assert detect_type(buffer.getvalue()) == (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    )


def test_pdf_attachment_text_extracted() -> None:
    message = _mixed()
    _attach(
        message,
        MIMEApplication((ATTACHMENTS / "quote.pdf").read_bytes(), "pdf"),
        "q.pdf",
    )

    [attachment] = _parse(message.as_bytes()).attachments

    assert attachment.text == "Quote request 2024-113 for 40 licenses"


def test_truncated_pdf_is_defect_not_failure() -> None:
    message = _mixed()
    data = (ATTACHMENTS / "truncated.pdf").read_bytes()
    _attach(message, MIMEApplication(data, "pdf"), "broken.pdf")

    lead = _parse(message.as_bytes())

    [attachment] = lead.attachments
    assert attachment.size == len(data)
    assert attachment.text is None
    assert [(d.code, d.part) for d in lead.defects] == [
        ("pdf_truncated", "2"),
        ("pdf_invalid", "2"),
    ]


def test_encrypted_pdf_is_defect() -> None:
    message = _mixed()
    data = (ATTACHMENTS / "encrypted.pdf").read_bytes()
    _attach(message, MIMEApplication(data, "pdf"), "secret.pdf")

    lead = _parse(message.as_bytes())

    assert lead.attachments[0].text is None
    assert _codes(lead) == ["pdf_encrypted"]


def test_pdf_page_limit_from_policy() -> None:
    message = _mixed()
    data = (ATTACHMENTS / "three_pages.pdf").read_bytes()
    _attach(message, MIMEApplication(data, "pdf"), "three.pdf")
    policy = Policy(limits=Limits(max_pdf_pages=2))

    lead = _parse(message.as_bytes(), policy)

    assert lead.attachments[0].text == "Page one text\n\n\nPage two text"
    assert _codes(lead) == ["pdf_page_limit"]


def test_vcard_with_garbage_lines() -> None:
    message = _mixed()
    card = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ana Lopez\r\nN:Lopez;Ana;;;\r\n"
        "!!! not a property !!!\r\nORG:Acme Corp;Sales\r\nTITLE:Head of IT\r\n"
        "TEL;TYPE=WORK:(415) 555-0134\r\n<html>\r\nEMAIL:Ana.Lopez@Acme.EXAMPLE\r\n"
        "URL:https://acme.example\r\nEND:VCARD\r\n"
    )
    _attach(message, MIMEText(card, "x-vcard"), "ana.vcf")

    lead = _parse(message.as_bytes())

    contact = lead.attachments[0].contact
    assert contact is not None
    assert contact.full_name == "Ana Lopez"
    assert contact.given_name == "Ana"
    assert contact.family_name == "Lopez"
    assert contact.company == "Acme Corp"
    assert contact.role == "Head of IT"
    assert contact.emails == ["ana.lopez@acme.example"]
    assert contact.phones == ["+14155550134"]
    assert contact.website == "https://acme.example"
    assert [(d.code, d.message) for d in lead.defects] == [
        (
            "vcard_invalid_lines",
            "vCard has 2 line(s) that are not properties; dropped them",
        )
    ]


def test_max_parts_default_reads_all() -> None:
    message = _mixed()
    for index in range(500):
        _attach(
            message, MIMEApplication(b"%d" % index, "octet-stream"), f"p{index}.bin"
        )

    lead = _parse(message.as_bytes())

    assert len(lead.attachments) == 500
    assert lead.attachments[-1].filename == "p499.bin"
    assert lead.attachments[-1].part == "501"
    assert "too_many_parts" not in _codes(lead)


def test_max_parts_lower_limit_stops() -> None:
    message = _mixed()
    for index in range(500):
        _attach(
            message, MIMEApplication(b"%d" % index, "octet-stream"), f"p{index}.bin"
        )
    policy = Policy(limits=Limits(max_parts=100))

    lead = _parse(message.as_bytes(), policy)

    # The root multipart and the body part count too: 98 attachments remain.
    assert len(lead.attachments) == 98
    assert lead.attachments[-1].filename == "p97.bin"
    assert _codes(lead).count("too_many_parts") == 1


def _nested_messages(levels: int) -> MIMEMultipart:
    inner: Message = _mixed(body="Innermost text.\n", subject="Level 0")
    for level in range(1, levels + 1):
        outer = _mixed(body=f"Wrapper {level}.\n", subject=f"Level {level}")
        outer.attach(MIMEMessage(inner))
        inner = outer
    assert isinstance(inner, MIMEMultipart)
    return inner


def test_nested_messages_past_depth_limit() -> None:
    message = _nested_messages(4)
    policy = Policy(limits=Limits(max_depth=3))

    lead = _parse(message.as_bytes(), policy)

    assert [(a.part, a.filename) for a in lead.attachments] == [
        ("2", "Level 3.eml"),
        ("2.2", "Level 2.eml"),
        ("2.2.2", "Level 1.eml"),
    ]
    assert [(d.code, d.part) for d in lead.defects] == [("nesting_too_deep", "2.2.2.2")]


def test_attached_message_summary_and_forward() -> None:
    original = _mixed(body="We need 40 licenses by May.\n", subject="Licenses")
    del original["From"]
    original["From"] = "Lee Park <lee.park@client.example>"
    original["Date"] = "Tue, 02 Apr 2024 10:00:00 +0000"
    message = _mixed(body="FYI\n", subject="Fwd: Licenses")
    message.attach(MIMEMessage(original))

    lead = _parse(message.as_bytes())

    [attachment] = lead.attachments
    assert attachment.content_type == "message/rfc822"
    assert attachment.filename == "Licenses.eml"
    assert attachment.text == (
        "From: Lee Park <lee.park@client.example>\nSubject: Licenses\n"
        "Date: Tue, 02 Apr 2024 10:00:00 +0000\n\nWe need 40 licenses by May."
    )
    assert lead.forwarded is not None
    assert lead.forwarded.from_ is not None
    assert lead.forwarded.from_.email == "lee.park@client.example"
    assert lead.forwarded.subject == "Licenses"
    assert lead.forwarded.date == "Tue, 02 Apr 2024 10:00:00 +0000"


def test_attached_message_not_forward_with_long_text() -> None:
    original = _mixed(body="Old thread.\n", subject="Licenses")
    message = _mixed(body="A long new message. " * 30, subject="Fwd: Licenses")
    message.attach(MIMEMessage(original))

    lead = _parse(message.as_bytes())

    assert lead.forwarded is None
    assert lead.attachments[0].filename == "Licenses.eml"


def test_winmail_dat_files_recovered() -> None:
    message = _mixed()
    data = (ATTACHMENTS / "winmail.dat").read_bytes()
    part = MIMEApplication(data, "ms-tnef")
    _attach(message, part, "winmail.dat")

    lead = _parse(message.as_bytes())

    assert [(a.part, a.filename, a.content_type) for a in lead.attachments] == [
        ("2", "winmail.dat", "application/ms-tnef"),
        ("2:tnef:1", "specs.txt", "text/plain"),
        ("2:tnef:2", "quote.pdf", "application/pdf"),
    ]
    assert lead.attachments[0].text == "Please send a quote for 25 seats."
    assert lead.attachments[1].text == "Requirements: SSO, audit log"
    assert lead.attachments[2].text == "Quote request 2024-113 for 40 licenses"


def test_damaged_winmail_dat_is_defect() -> None:
    message = _mixed()
    _attach(message, MIMEApplication(b"\x78\x9f\x3e\x22\x01", "ms-tnef"), "winmail.dat")

    lead = _parse(message.as_bytes())

    assert len(lead.attachments) == 1
    assert lead.attachments[0].text is None
    assert [(d.code, d.part) for d in lead.defects] == [("tnef_invalid", "2")]


def test_uuencoded_block_in_body() -> None:
    data = b"Line one of the spec\nLine two\n" * 4
    lines = [
        binascii.b2a_uu(data[i : i + 45]).decode() for i in range(0, len(data), 45)
    ]
    body = "Spec below.\n\nbegin 644 spec.txt\n" + "".join(lines) + "`\nend\n\nThanks\n"
    message = _mixed(body=body)

    lead = _parse(message.as_bytes())

    [attachment] = lead.attachments
    assert attachment.part == "uuencode:1"
    assert attachment.filename == "spec.txt"
    assert attachment.disposition == "attachment"
    assert attachment.sha256 == hashlib.sha256(data).hexdigest()
    assert attachment.text == data.decode().strip()


def test_store_receives_attachments_and_raw(tmp_path: Path) -> None:
    message = _mixed()
    _attach(message, MIMEApplication(b"same bytes", "octet-stream"), "a.bin")
    _attach(message, MIMEApplication(b"same bytes", "octet-stream"), "b.bin")
    store = FileSystemStore(tmp_path)
    raw = message.as_bytes()

    lead = _parse(raw, Policy(attachment_store=store))

    digest = hashlib.sha256(b"same bytes").hexdigest()
    assert isinstance(store, AttachmentStore)
    assert [a.url for a in lead.attachments] == [f"leadparse-store:///{digest}"] * 2
    assert lead.provenance.raw_mime_url == store.url_for(
        hashlib.sha256(raw).hexdigest()
    )
    assert store.open(lead.provenance.raw_mime_url) == raw
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [digest, hashlib.sha256(raw).hexdigest()]
    )


def test_no_store_writes_nothing() -> None:
    message = _mixed()
    _attach(message, MIMEApplication(b"data", "octet-stream"), "a.bin")

    lead = _parse(message.as_bytes())

    assert lead.attachments[0].url is None
    assert lead.provenance.raw_mime_url is None


class _BrokenStore:
    def put(
        self, data: bytes, *, sha256: str, filename: str | None, content_type: str
    ) -> str:
        raise OSError("disk full")

    def open(self, url: str) -> bytes:
        raise OSError("disk full")


def test_failing_store_is_defect() -> None:
    message = _mixed()
    _attach(message, MIMEApplication(b"data", "octet-stream"), "a.bin")

    lead = _parse(message.as_bytes(), Policy(attachment_store=_BrokenStore()))

    assert lead.attachments[0].url is None
    assert lead.provenance.raw_mime_url is None
    assert _codes(lead) == ["attachment_store_failed", "attachment_store_failed"]


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def test_corpus_mislabelled_winmail_dat() -> None:
    path = CORPUS / "zbateson-mail-mime-parser" / "m4006.txt"
    if not path.is_file():
        pytest.skip(f"public corpus not found at {CORPUS}")

    lead = _parse(path.read_bytes())

    [attachment] = lead.attachments
    assert attachment.filename == "winmail.dat"
    assert attachment.content_type == "application/ms-tnef"
    assert attachment.detected_type == "image/png"
    assert attachment.size == 1325
    assert [(d.code, d.part) for d in lead.defects] == [("tnef_invalid", "1")]


def test_message_wrapping_message_lists_every_level() -> None:
    levels = "".join(
        f"From: l{n}@example.com\nSubject: level {n}\nContent-Type: message/rfc822\n\n"
        for n in range(3, -1, -1)
    )
    raw = (
        "From: eve@example.com\nSubject: test\nContent-Type: multipart/mixed; boundary=B\n\n"
        "--B\nContent-Type: text/plain\n\nouter body\n"
        "--B\nContent-Type: message/rfc822\n\n"
        + levels
        + "From: deep@example.com\nSubject: deepest\nContent-Type: text/plain\n\ndeepest\n--B--\n"
    ).encode()

    lead = parse_lead(raw)

    assert [(a.filename, a.part) for a in lead.attachments] == [
        ("level 3.eml", "2"),
        ("level 2.eml", "2.1"),
        ("level 1.eml", "2.1.1"),
        ("level 0.eml", "2.1.1.1"),
        ("deepest.eml", "2.1.1.1.1"),
    ]
    assert lead.defects == []


def test_uuencode_line_with_non_ascii_is_damaged_not_fatal() -> None:
    raw = (
        b"From: a@example.org\nContent-Type: text/plain; charset=utf-8\n\n"
        b"hello\nbegin 644 a.txt\nM\xc3\xa9\xc3\xa9abc\nend\n"
    )

    lead = parse_lead(raw)

    assert [a.filename for a in lead.attachments] == ["a.txt"]
    assert [d.code for d in lead.defects] == ["uuencode_damaged"]


def test_attached_message_that_cannot_reserialize_is_listed() -> None:
    from email.message import Message

    from leadparse.attachments import _serialize
    from leadparse.decode import parse_mime

    class Unprintable(Message):
        def as_bytes(self, *args: object, **kwargs: object) -> bytes:
            raise UnicodeEncodeError("ascii", "\ufffd", 0, 1, "cannot encode")

    inner = parse_mime(b"From: b@example.org\nSubject: inner\n\nbody text\n")
    inner.__class__ = Unprintable

    data = _serialize(inner)

    assert data == b"From: b@example.org\nSubject: inner\n\nbody text\n"


@pytest.mark.parametrize(
    "disposition",
    [
        b"attachment; filename*=utf\x00-8''a%20b.txt",
        b'attachment; filename="=?wind\x00ws-1252?q?a_b.txt?="',
    ],
    ids=["rfc2231-charset", "rfc2047-charset"],
)
def test_filename_with_nul_in_charset_is_kept(disposition: bytes) -> None:
    raw = (
        b"From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nhello\n"
        b"--b\nContent-Type: application/octet-stream\n"
        b"Content-Disposition: " + disposition + b"\n\nxyz\n--b--\n"
    )

    lead = parse_lead(raw)

    assert len(lead.attachments) == 1
    assert lead.attachments[0].filename is not None
    assert "stage_failed" not in [d.code for d in lead.defects]
