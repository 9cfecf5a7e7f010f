"""Parse every email of the public corpus and check the header and text facts.

The corpus contains real messages from other projects' test suites with what
those suites assert about them. It is read from ``shared/corpus`` beside the
repository, never copied into it, and the module skips when it is absent.

Two checks run:

* every listed file parses without an exception and without a failed stage,
  and its lead serializes to JSON;
* header and decoding facts (subject, From, To, Cc, Reply-To, Message-ID,
  decoded body text, attachment count and file name) match leadparse's output
  where both mean the same thing.

Addresses are compared lower-cased, because leadparse lower-cases them.
Where an upstream value is wrong for a lead record, the corrected value comes
from ``benchmarks/quality_corrections.tsv`` (file, field, corrected value,
reason). There a corrected value is JSON, and ``-`` means the fact is not
scored.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest

from leadparse import parse_lead
from leadparse.errors import NotEmailError
from leadparse.model import Address, Lead

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CORRECTIONS = REPO / "benchmarks" / "quality_corrections.tsv"

if not CORPUS.is_dir():
    pytest.skip(
        f"public email corpus not found at {CORPUS}; it lives in shared/corpus "
        "beside the repository",
        allow_module_level=True,
    )

pytestmark = pytest.mark.corpus

# The email_reply_parser sets are message bodies without headers, so they get
# a minimal header block, as their upstream tests feed the body alone.
BARE_BODY_SOURCES = frozenset(
    {"github-email_reply_parser", "zapier-email-reply-parser"}
)
BARE_BODY_HEADERS = (
    b"From: sender@example.com\n"
    b"Subject: reply\n"
    b"Content-Type: text/plain; charset=utf-8\n\n"
)
CRLF_NOTE = "tests normalize fixture newlines to CRLF before parsing"

_TALON_HTML = "an HTML fragment fed to talon's HTML quote extractor, no headers"
_TALON_TEXT = "a plain text body or expected text for talon, no headers"
_TALON_EMPTY = "an empty companion file of talon's signature tests"

# Manifest entries that are not RFC 5322 messages: parse_lead must reject
# each with NotEmailError.
NOT_EMAIL: dict[str, str] = {
    "apache-james-mime4j/testmsgs/malformedHeader-noheader.msg": (
        "body text only; mime4j checks that it parses as a message without headers"
    ),
    "apache-james-mime4j/testmsgs/malformedHeaderStartsBody-noheader.msg": (
        "body text only; mime4j checks that it parses as a message without headers"
    ),
    "flanker/attachments/mailgun.png": "a PNG image, the expected attachment bytes",
    "spamscope-mail-parser/mail_outlook_1": "an Outlook .msg file (OLE2 binary)",
    "talon/standard_replies/iphone_reply_text": _TALON_TEXT,
    "talon/standard_replies/sparrow_reply_text": _TALON_TEXT,
    "talon/html_replies/gmail.html": _TALON_HTML,
    "talon/html_replies/hotmail.html": _TALON_HTML,
    "talon/html_replies/mail_ru.html": _TALON_HTML,
    "talon/html_replies/ms_outlook_2003.html": _TALON_HTML,
    "talon/html_replies/ms_outlook_2007.html": _TALON_HTML,
    "talon/html_replies/ms_outlook_2010.html": _TALON_HTML,
    "talon/html_replies/thunderbird.html": _TALON_HTML,
    "talon/html_replies/windows_mail.html": _TALON_HTML,
    "talon/html_replies/yandex_ru.html": _TALON_HTML,
    "talon/OLK_SRC_BODY_SECTION.html": _TALON_HTML,
    "talon/reply-separated-by-hr.html": _TALON_HTML,
    "talon/signature/stripped/camel_case_body": _TALON_TEXT,
    "talon/signature/stripped/camel_case_sender": _TALON_EMPTY,
    "talon/signature/stripped/camel_case_signature": _TALON_EMPTY,
    "talon/signature/stripped/jeff_body": _TALON_TEXT,
    "talon/signature/stripped/jeff_sender": _TALON_TEXT,
    "talon/signature/stripped/jeff_signature": _TALON_TEXT,
    "talon/signature/stripped/johndoeexamplecom_body": _TALON_TEXT,
    "talon/signature/stripped/johndoeexamplecom_sender": _TALON_TEXT,
    "talon/signature/stripped/johndoeexamplecom_signature": _TALON_TEXT,
    "talon/signature/stripped/long_body": _TALON_TEXT,
    "talon/signature/stripped/long_sender": _TALON_TEXT,
    "talon/signature/stripped/long_signature": _TALON_TEXT,
    "talon/signature/stripped/short_url_body": _TALON_TEXT,
    "talon/signature/stripped/short_url_sender": _TALON_TEXT,
    "talon/signature/stripped/short_url_signature": _TALON_TEXT,
    "talon/signature/stripped/sparse_body": _TALON_TEXT,
    "talon/signature/stripped/sparse_sender": _TALON_TEXT,
    "talon/signature/stripped/sparse_signature": _TALON_TEXT,
    "talon/signature/P/johndoeexamplecom_body": _TALON_TEXT,
    "talon/signature/P/johndoeexamplecom_sender": _TALON_TEXT,
}

# A message whose attachments every implementation of the attachment stage
# must list: one application/pdf part after the text body.
ATTACHMENT_PROBE = ("ruby-mail", "attachment_emails/attachment_pdf.eml")


# --- manifests ---------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One email listed in a manifest."""

    source: str
    file: str
    expect: str

    @property
    def ident(self) -> str:
        return f"{self.source}/{self.file}"

    @property
    def path(self) -> Path:
        return CORPUS / self.source / self.file


def _entries() -> list[Entry]:
    found = []
    for manifest in sorted(CORPUS.glob("*/MANIFEST.tsv")):
        source = manifest.parent.name
        for line in manifest.read_text(encoding="utf-8").splitlines()[1:]:
            if not line.strip():
                continue
            columns = line.split("\t")
            expect = columns[4] if len(columns) > 4 else ""
            found.append(Entry(source, columns[0], expect))
    return found


ENTRIES = _entries()


def _raw(entry: Entry) -> bytes:
    raw = entry.path.read_bytes()
    if entry.source in BARE_BODY_SOURCES:
        return BARE_BODY_HEADERS + raw
    if entry.source == "flanker" and CRLF_NOTE in entry.expect:
        return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return raw


@functools.cache
def _lead(ident: str) -> Lead:
    entry = next(item for item in ENTRIES if item.ident == ident)
    return parse_lead(_raw(entry))


@functools.cache
def _attachment_stage_landed() -> bool:
    """Return whether the attachment stage lists parts, probed on a known file."""
    source, file = ATTACHMENT_PROBE
    return bool(_lead(f"{source}/{file}").attachments)


# --- manifest facts ----------------------------------------------------------

# Facts and free-text notes are separated by ";". A ";" followed by a space
# belongs to a value, as in "text/plain; charset=iso-8859-1".
_FACT_START = re.compile(r";(?! )")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
_TRAILING_NOTE = re.compile(r"(?<=\S)\([^()]*\)$")


def _unescape_one(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if len(escaped) == 5:
        return chr(int(escaped[1:], 16))
    return _ESCAPES.get(escaped, escaped)


def _unescape(text: str) -> str:
    return _ESCAPE.sub(_unescape_one, text)


def _facts(expect: str) -> dict[str, str]:
    """Split a manifest ``expect`` cell into its first value per key."""
    facts: dict[str, str] = {}
    for item in _FACT_START.split(expect):
        key, sep, value = item.partition("=")
        if sep and key not in facts:
            facts[key] = _unescape(value)
    return facts


def _value(text: str) -> str:
    """Drop a trailing "(note)" glued to a value and unquote a quoted value."""
    text = _TRAILING_NOTE.sub("", text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return _unescape(text[1:-1])
    return text


def _items(text: str) -> list[str]:
    """Split "[a,b]" or '["a","b"]' into its items."""
    inner = _value(text).strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    items = re.findall(r'"((?:[^"\\]|\\.)*)"|([^,]+)', inner)
    return [_unescape(quoted) or plain.strip() for quoted, plain in items]


def _mailbox(text: str) -> tuple[str, str]:
    name, address = parseaddr(text)
    return name, address.lower()


def _pairs(text: str) -> list[tuple[str, str]]:
    """Read a spamscope list of ("name", "address") tuples."""
    value = ast.literal_eval(_value(text))
    return [(str(name), str(address).lower()) for name, address in value]


# --- cases -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fact to compare with leadparse's output."""

    entry: Entry
    field: str
    expected: Any

    @property
    def ident(self) -> str:
        return f"{self.entry.ident}:{self.field}"


def _mailbox_cases(prefix: str, boxes: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    if prefix == "from":
        name, address = boxes[0]
        return [("from_email", address), ("from_name", name or None)]
    cases: list[tuple[str, Any]] = [(prefix, [address for _name, address in boxes])]
    if any(name for name, _address in boxes):
        cases.append((f"{prefix}_names", [name or None for name, _address in boxes]))
    return cases


def _flanker(entry: Entry, facts: dict[str, str]) -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    if "subject" in facts:
        cases.append(("subject", _value(facts["subject"])))
    if "from" in facts:
        cases += _mailbox_cases("from", [_mailbox(_value(facts["from"]))])
    if "To" in facts:
        cases += _mailbox_cases("to", [_mailbox(_value(facts["To"]))])
    if "message_id" in facts:
        cases.append(("message_id", _value(facts["message_id"])))
    if "body" in facts:
        cases.append(("body_text", _value(facts["body"]).replace("\r\n", "\n")))
    if "attachments" in facts:
        cases.append(("attachments", int(_value(facts["attachments"]))))
    if "detected_file_name" in facts:
        cases.append(("attachment_filename", facts["detected_file_name"]))
    return cases


def _nodemailer(entry: Entry, facts: dict[str, str]) -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    if "subject" in facts:
        cases.append(("subject", facts["subject"]))
    if "to" in facts:
        boxes = [_mailbox(item) for item in _items(facts["to"])]
        cases += _mailbox_cases("to", boxes)
    if "attachments" in facts:
        cases.append(("attachments", int(_value(facts["attachments"]))))
    return cases


def _ruby(entry: Entry, facts: dict[str, str]) -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    if "subject" in facts:
        cases.append(("subject", _value(facts["subject"])))

    from_value = facts.get("from") or facts.get("from_addresses")
    if from_value and _value(from_value).startswith("["):
        cases.append(("from_email", _items(from_value)[0].lower()))
    elif from_value:
        cases += _mailbox_cases("from", [_mailbox(_value(from_value))])
    if "from_display_names" in facts:
        cases.append(("from_name", _items(facts["from_display_names"])[0]))

    for key in ("to", "cc", "reply_to"):
        if key not in facts:
            continue
        value = _value(facts[key])
        if value.startswith("["):
            cases.append((key, [item.lower() for item in _items(value)]))
        else:
            cases += _mailbox_cases(key, [_mailbox(value)])

    if "message_id" in facts:
        cases.append(("message_id", _value(facts["message_id"])))
    for key in ("decoded_body", "body_decoded"):
        if key in facts:
            cases.append(("body_text", _value(facts[key]).strip("\n")))
    if "decoded_body_chomped" in facts:
        cases.append(("body_text", _value(facts["decoded_body_chomped"])))
    if "attachments" in facts:
        cases.append(("attachments", int(_value(facts["attachments"]))))
    if "attachment_filename" in facts:
        cases.append(("attachment_filename", _value(facts["attachment_filename"])))
    return cases


def _spamscope(entry: Entry, facts: dict[str, str]) -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    if "subject" in facts:
        cases.append(("subject", facts["subject"]))
    for key in ("from", "to", "cc", "reply_to"):
        if key not in facts:
            continue
        value = _value(facts[key])
        boxes = _pairs(value) if value.startswith("[") else [_mailbox(value)]
        cases += _mailbox_cases(key, boxes)
    if "to[0]" in facts:
        cases.append(("to_first", _value(facts["to[0]"]).lower()))
    if "to_count" in facts:
        cases.append(("to_count", int(_value(facts["to_count"]))))
    if "message_id" in facts:
        cases.append(("message_id", _value(facts["message_id"]).strip("<>")))
    if "attachments" in facts:
        cases.append(("attachments", int(_value(facts["attachments"]))))
    return cases


def _zammad(entry: Entry, facts: dict[str, str]) -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = [
        ("subject", facts["subject"]),
        ("from_email", facts["from_email"].lower()),
        ("from_name", facts["from_display_name"] or None),
    ]
    to = facts["to"]
    cases += _mailbox_cases("to", [_mailbox(to)] if to else [])
    listed = re.fullmatch(r"(\d+)(?:\[(.*)\])?", facts["attachments"])
    assert listed is not None, facts["attachments"]
    cases.append(("attachments", int(listed.group(1))))
    return cases


def _json_mailboxes(value: Any) -> list[tuple[str, str]]:
    boxes = value if isinstance(value, list) else [value]
    return [(box.get("name") or "", box["email"].lower()) for box in boxes]


def _zbateson(entry: Entry, facts: dict[str, str]) -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    json_path = entry.path.with_name(entry.path.name + ".expected.json")
    if json_path.is_file():
        (props,) = json.loads(json_path.read_text(encoding="utf-8")).values()
        if "Subject" in props:
            cases.append(("subject", props["Subject"]))
        if "From" in props:
            cases += _mailbox_cases("from", _json_mailboxes(props["From"]))
        # The upstream test reads the first address of To and Cc only.
        for key in ("To", "Cc"):
            if key in props:
                name, address = _json_mailboxes(props[key])[0]
                field = f"{key.lower()}_first"
                cases += [(field, address), (f"{field}_name", name or None)]
        if "Message-ID" in props:
            cases.append(("message_id", props["Message-ID"]))
        if "attachments" in props:
            cases.append(("attachments", int(props["attachments"])))
    if "text_file" in facts:
        text_path = entry.path.parent / _value(facts["text_file"])
        text = text_path.read_bytes().decode("latin-1")
        cases.append(("body_text_collapsed", " ".join(text.split())))
    return cases


EXTRACTORS = {
    "flanker": _flanker,
    "nodemailer-mailparser": _nodemailer,
    "ruby-mail": _ruby,
    "spamscope-mail-parser": _spamscope,
    "zammad": _zammad,
    "zbateson-mail-mime-parser": _zbateson,
}


def _corrections() -> dict[tuple[str, str], str]:
    found = {}
    for line in CORRECTIONS.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.strip():
            continue
        name, field, value, _reason = line.split("\t", 3)
        found[(name, field)] = value
    return found


def _cases() -> list[Case]:
    corrections = _corrections()
    cases = []
    for entry in ENTRIES:
        extract = EXTRACTORS.get(entry.source)
        if extract is None or entry.ident in NOT_EMAIL:
            continue
        for field, expected in extract(entry, _facts(entry.expect)):
            corrected = corrections.get((entry.ident, field))
            if corrected == "-":
                continue
            if corrected is not None:
                expected = json.loads(corrected)
            cases.append(Case(entry, field, expected))
    return cases


CASES = _cases()


def _names(addresses: list[Address]) -> list[str | None]:
    return [address.name for address in addresses]


def _emails(addresses: list[Address]) -> list[str | None]:
    return [address.email for address in addresses]


def _actual(lead: Lead, field: str) -> Any:
    """Return the lead's value for a case field, in the case's form."""
    simple = {
        "subject": lambda: lead.subject,
        "from_email": lambda: lead.from_.email,
        "from_name": lambda: lead.from_.name,
        "to": lambda: _emails(lead.to),
        "to_names": lambda: _names(lead.to),
        "to_count": lambda: len(lead.to),
        "to_first": lambda: _emails(lead.to)[0] if lead.to else None,
        "to_first_name": lambda: lead.to[0].name if lead.to else None,
        "cc_first": lambda: _emails(lead.cc)[0] if lead.cc else None,
        "cc_first_name": lambda: lead.cc[0].name if lead.cc else None,
        "cc": lambda: _emails(lead.cc),
        "cc_names": lambda: _names(lead.cc),
        "reply_to": lambda: _emails(lead.reply_to),
        "reply_to_names": lambda: _names(lead.reply_to),
        "message_id": lambda: lead.message_id,
        "body_text": lambda: lead.body_text,
        "body_text_collapsed": lambda: " ".join(lead.body_text.split()),
        "attachments": lambda: len(lead.attachments),
        "attachment_filename": lambda: [item.filename for item in lead.attachments],
    }
    return simple[field]()


# --- tests -------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.ident for entry in ENTRIES])
def test_corpus_email_parses(entry: Entry) -> None:
    if entry.ident in NOT_EMAIL:
        with pytest.raises(NotEmailError):
            parse_lead(_raw(entry))
        return
    lead = _lead(entry.ident)
    failed = [d.message for d in lead.defects if d.code == "stage_failed"]
    assert failed == []
    dumped = json.loads(lead.model_dump_json())
    assert dumped["provenance"]["raw_sha256"] == lead.provenance.raw_sha256
    assert dumped == lead.model_dump(mode="json")


@pytest.mark.parametrize("case", CASES, ids=[case.ident for case in CASES])
def test_corpus_header_fact(case: Case) -> None:
    lead = _lead(case.entry.ident)
    if case.field == "body_text_collapsed" and lead.body_source != "text/plain":
        pytest.skip("text/plain body part not chosen; the fact is about it")
    actual = _actual(lead, case.field)
    about_attachments = case.field in ("attachments", "attachment_filename")
    if about_attachments and not lead.attachments and not _attachment_stage_landed():
        pytest.xfail("attachment stage not landed")
    if case.field == "attachment_filename":
        assert case.expected in actual
    else:
        assert actual == case.expected
