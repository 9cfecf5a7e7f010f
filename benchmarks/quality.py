"""Extraction quality of parse_lead on the public corpus, beside two baselines.

Run from the repository root::

    python benchmarks/quality.py [--markdown] [--verbose] [--no-baselines]
        [--no-corrections] [--min-reply-accuracy 0.97]
        [--reply-target "talon standard=1.0"] [--ahead-of-baselines]
        [--min-precision 0.98] [--min-recall 0.98] [--max-exceptions 0]

The corpus is read from ``shared/corpus`` beside the repository. Only emails
whose upstream test asserts something this script can score are used:

* Reply text. talon's standard replies and HTML replies expect the visible
  text with the quote removed and the signature kept, so they are compared
  with ``message_text``. The email_reply_parser sets (github, zapier) are bare
  bodies, so each gets a minimal header block. Their expectations also drop
  the signature, so they are compared with ``stripped_text``. A case is an
  exact text or a list of facts. An exact text is compared after trimming
  each line's trailing spaces and the ends, except that talon's HTML replies
  are compared with all whitespace removed, as upstream compares them. Facts
  come from upstream's fragment assertions: text that must stay (a visible
  fragment) and text that must go (a hidden fragment, or
  ``must_not_contain``). Reply accuracy is the share of cases where the exact
  text matches, or every fact holds.
* Quote leak: the case keeps text that upstream removed, which is a body line
  missing from the expected text or a hidden-fragment fact. Over-strip: the
  case lost a line of the expected text, or a visible-fragment fact.
* Signature: talon's signature set (``signature_file``), ``lead.signature``
  compared with the expected signature (empty means none). talon marks
  signature lines of its training files with ``#sig#``; the mark is removed
  from the body and the expectation before scoring.
* Classification: precision and recall of ``auto_reply``, ``bounce`` and
  ``bulk`` on sources that label them (sisimai ``bounce=``, ``auto_reply=``,
  ``complaint=``; flanker ``bounce=`` and ``delivery_notification=``; zammad's
  ``bounce=`` note). An email that is labelled as not a bounce only counts
  against bounce precision. Bounce status and hard/soft type are scored on
  true positives that carry ``status=`` and ``hardbounce=`` facts.

Corrections in ``benchmarks/quality_corrections.tsv`` (columns file, field,
corrected value, reason) replace an upstream value that is wrong for a lead
record. A value of ``-`` drops the fact. Fields read here: ``reply_text`` (a
JSON string), ``signature`` (a JSON string), ``kind`` (lead, auto_reply,
bounce or bulk), ``status`` and ``hardbounce``.

Baselines: talon 1.4 ``talon.quotations.extract_from_plain`` on the first
text/plain part (``extract_from_html`` then ``talon.utils.html_to_text`` on
the HTML replies), and ``EmailReplyParser.parse_reply`` on the first
text/plain part. They only extract reply text, so their other columns are
empty. talon's signature extractor is not run, because importing
``talon.signature`` loads its scikit-learn classifier.

The script exits 1 when a threshold is not met and 2 when the corpus is
missing.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import logging
import re
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path

from leadparse import parse_lead
from leadparse.errors import NotEmailError
from leadparse.model import Lead

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
CORRECTIONS = REPO / "benchmarks" / "quality_corrections.tsv"

SOURCES = (
    "talon",
    "github-email_reply_parser",
    "zapier-email-reply-parser",
    "sisimai",
    "flanker",
    "spamscope-mail-parser",
    "zammad",
)
BARE_BODY_SOURCES = frozenset(
    {"github-email_reply_parser", "zapier-email-reply-parser"}
)
BARE_BODY_HEADERS = (
    b"From: sender@example.com\n"
    b"Subject: reply\n"
    b"Content-Type: text/plain; charset=utf-8\n\n"
)
CRLF_NOTE = "tests normalize fixture newlines to CRLF before parsing"
KINDS = ("lead", "auto_reply", "bounce", "bulk")
SCORED_KINDS = ("auto_reply", "bounce", "bulk")
# Parsing one email may take this long before it counts as slow; the
# email_reply_parser sets assert the same bound for their regex DoS probe.
SLOW_SECONDS = 1.0
FIXED_DATE = datetime(2024, 1, 1, tzinfo=UTC)
SIGNATURE_ANNOTATION = "#sig#"

# --- manifest facts ------------------------------------------------------------

# Facts are separated by ";"; a ";" followed by a space belongs to a value.
_FACT_SPLIT = re.compile(r";(?! )")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
_TRAILING_NOTE = re.compile(r"(?<=\S)\([^()]*\)$")


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        escaped = match.group(1)
        if len(escaped) == 5:
            return chr(int(escaped[1:], 16))
        return _ESCAPES.get(escaped, escaped)

    return _ESCAPE.sub(one, text)


def _strip_note(value: str) -> str:
    return _TRAILING_NOTE.sub("", value)


def _file_name(value: str) -> str:
    """Return the file name before any "(note)" in a ``*_file=`` fact."""
    return value.split("(", 1)[0].strip()


def _unquote(value: str) -> str:
    value = _strip_note(value.strip())
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@dataclass(frozen=True)
class Entry:
    """One manifest row."""

    source: str
    file: str
    items: tuple[str, ...]

    @property
    def ident(self) -> str:
        return f"{self.source}/{self.file}"

    @property
    def path(self) -> Path:
        return CORPUS / self.source / self.file

    @property
    def expect(self) -> str:
        return ";".join(self.items)

    def facts(self) -> dict[str, str]:
        """Return the first value of each ``key=value`` item, unescaped."""
        found: dict[str, str] = {}
        for item in self.items:
            key, sep, value = item.partition("=")
            if sep and key not in found:
                found[key.strip()] = _unescape(value)
        return found


def read_entries(source: str) -> list[Entry]:
    """Read one source's MANIFEST.tsv."""
    manifest = CORPUS / source / "MANIFEST.tsv"
    entries = []
    for line in manifest.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.strip():
            continue
        columns = line.split("\t")
        expect = columns[4] if len(columns) > 4 else ""
        if source == "sisimai":
            # CRLF twins restate their LF twin's facts after "=>", and rows
            # with several recipients separate them with " | ".
            if "same sample as" in expect:
                expect = expect.split("=>", 1)[1]
            expect = expect.split(" | ")[0]
        items = tuple(item.strip() for item in _FACT_SPLIT.split(expect) if item)
        entries.append(Entry(source, columns[0], items))
    return entries


def read_corrections(path: Path = CORRECTIONS) -> dict[tuple[str, str], str]:
    """Read ``(file, field) -> corrected value`` from the corrections TSV."""
    found: dict[tuple[str, str], str] = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.strip():
            continue
        name, field_name, value, _reason = line.split("\t", 3)
        found[(name, field_name)] = value
    return found


# --- inputs -------------------------------------------------------------------


def wrap_bare_body(body: bytes) -> bytes:
    """Wrap a header-less body in the minimal text/plain message."""
    return BARE_BODY_HEADERS + body


def wrap_html(html: bytes) -> bytes:
    """Wrap an HTML fragment in a minimal text/html message."""
    return (
        b"From: sender@example.com\n"
        b"Subject: reply\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/html; charset=utf-8\n\n" + html
    )


def wrap_signature_body(body: bytes, sender: str) -> bytes:
    """Wrap a talon signature-set body, with its sender as the From header."""
    sender = sender.strip()
    if "@" in sender:
        mailbox = f"<{sender}>"
    elif sender:
        mailbox = f'"{sender}" <sender@example.com>'
    else:
        mailbox = "sender@example.com"
    header = (
        f"From: {mailbox}\nSubject: note\nContent-Type: text/plain; charset=utf-8\n\n"
    )
    return header.encode("utf-8") + body


def raw_bytes(entry: Entry) -> bytes:
    """Return the bytes parse_lead gets for a manifest entry."""
    raw = entry.path.read_bytes()
    if entry.source in BARE_BODY_SOURCES:
        return wrap_bare_body(raw)
    if entry.source == "flanker" and CRLF_NOTE in entry.expect:
        return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return raw


def first_plain_part(raw: bytes) -> str:
    """Decode the first text/plain part, as talon's tests feed its extractor."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in message.walk():
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            return _decode_part(part)
    return ""


def _decode_part(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


# --- text comparison ----------------------------------------------------------


def normalize_lines(text: str) -> str:
    """Trim each line's trailing spaces and the ends of the text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def normalize_whitespace(text: str) -> str:
    """Drop all whitespace, NBSP included."""
    return re.sub(r"\s+", "", text.replace("\xa0", " "))


def _line_set(text: str) -> set[str]:
    return {line.strip() for line in normalize_lines(text).split("\n") if line.strip()}


@dataclass
class ReplyCase:
    """One email with a reply-text expectation."""

    group: str
    ident: str
    raw: bytes
    lead_field: str  # "message_text" or "stripped_text"
    baseline_input: tuple[str, str] | None  # ("plain" | "html", text)
    exact: str | None = None
    whitespace_blind: bool = False
    present: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    absent: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    # Body lines that upstream removed, for the quote-leak test of exact cases.
    removed_lines: set[str] = field(default_factory=set)
    corrected: bool = False


@dataclass
class ReplyVerdict:
    """Outcome of one extractor on one reply case."""

    correct: bool
    leak: bool
    over_strip: bool
    detail: str = ""


def judge_reply(case: ReplyCase, actual: str) -> ReplyVerdict:
    """Score an extractor's reply text against a case."""
    if case.exact is not None:
        if case.whitespace_blind:
            correct = normalize_whitespace(actual) == normalize_whitespace(case.exact)
            if correct:
                return ReplyVerdict(True, False, False)
            expected_ws = normalize_whitespace(case.exact)
            actual_ws = normalize_whitespace(actual)
            over = expected_ws not in actual_ws
            leak = len(actual_ws) > len(expected_ws) and not over
            return ReplyVerdict(False, leak, over, "text differs")
        correct = normalize_lines(actual) == normalize_lines(case.exact)
        expected_lines = _line_set(case.exact)
        actual_lines = _line_set(actual)
        leaked = (actual_lines - expected_lines) & case.removed_lines
        missing = expected_lines - actual_lines
        detail = ""
        if not correct:
            detail = f"leaked {len(leaked)} line(s), missing {len(missing)} line(s)"
        return ReplyVerdict(correct, bool(leaked), bool(missing), detail)
    text = normalize_lines(actual)
    body = normalize_lines(case.baseline_input[1]) if case.baseline_input else ""
    missing_facts = [label for regex, label in case.present if not regex.search(text)]
    # A hidden fragment contains at least one of the body's matches of its
    # fact. A reply that keeps as many matches as the body therefore kept the
    # fragment. Counting avoids a false leak when the same words also appear
    # in the visible part, as "--" does in a sentence above a "-- " line.
    leaked_facts = [
        label
        for regex, label in case.absent
        if regex.search(text)
        and len(regex.findall(text)) >= max(1, len(regex.findall(body)))
    ]
    correct = not missing_facts and not leaked_facts
    detail = "; ".join(
        [f"missing {label}" for label in missing_facts]
        + [f"kept {label}" for label in leaked_facts]
    )
    return ReplyVerdict(correct, bool(leaked_facts), bool(missing_facts), detail)


# --- reply cases per source ---------------------------------------------------


def _exact_case(
    group: str,
    entry: Entry,
    raw: bytes,
    lead_field: str,
    baseline_input: tuple[str, str] | None,
    expected: str,
    corrections: dict[tuple[str, str], str],
    whitespace_blind: bool = False,
) -> ReplyCase | None:
    corrected = corrections.get((entry.ident, "reply_text"))
    if corrected == "-":
        return None
    if corrected is not None:
        expected = json.loads(corrected)
    removed: set[str] = set()
    if baseline_input is not None and baseline_input[0] == "plain":
        removed = _line_set(baseline_input[1]) - _line_set(expected)
    return ReplyCase(
        group=group,
        ident=entry.ident,
        raw=raw,
        lead_field=lead_field,
        baseline_input=baseline_input,
        exact=expected,
        whitespace_blind=whitespace_blind,
        removed_lines=removed,
        corrected=corrected is not None,
    )


def _html_text(html: str) -> str:
    from lxml import html as lxml_html

    return str(lxml_html.fromstring(html).text_content())


def talon_reply_cases(
    entries: list[Entry], corrections: dict[tuple[str, str], str]
) -> list[ReplyCase]:
    """Build the talon standard, HTML and other reply cases."""
    cases: list[ReplyCase] = []
    for entry in entries:
        facts = entry.facts()
        if "reply_text_file" in facts:
            expected_path = CORPUS / "talon" / _file_name(facts["reply_text_file"])
            expected = expected_path.read_text(encoding="utf-8")
            if entry.file.endswith(".html"):
                html = entry.path.read_text(encoding="utf-8")
                case = _exact_case(
                    "talon html",
                    entry,
                    wrap_html(html.encode("utf-8")),
                    "message_text",
                    ("html", html),
                    expected,
                    corrections,
                    whitespace_blind=True,
                )
            else:
                raw = entry.path.read_bytes()
                case = _exact_case(
                    "talon standard",
                    entry,
                    raw,
                    "message_text",
                    ("plain", first_plain_part(raw)),
                    expected,
                    corrections,
                )
            if case is not None:
                cases.append(case)
        elif "stripped_html_no_whitespace" in facts:
            html = entry.path.read_text(encoding="utf-8")
            expected = _html_text(facts["stripped_html_no_whitespace"])
            case = _exact_case(
                "talon html",
                entry,
                wrap_html(html.encode("utf-8")),
                "message_text",
                ("html", html),
                expected,
                corrections,
                whitespace_blind=True,
            )
            if case is not None:
                cases.append(case)
        elif "reply_must_not_contain" in facts:
            raw = entry.path.read_bytes()
            word = _strip_note(facts["reply_must_not_contain"])
            cases.append(
                ReplyCase(
                    group="talon standard",
                    ident=entry.ident,
                    raw=raw,
                    lead_field="message_text",
                    baseline_input=("plain", first_plain_part(raw)),
                    present=[(re.compile(r"\S"), "some reply text")],
                    absent=[(re.compile(re.escape(word)), repr(word))],
                )
            )
    return cases


_FRAGMENT_FACT = re.compile(r"fragment\[(\d+)\]\s*(=~|=|contains)\s*(.*)$", re.DOTALL)


def _bools(value: str) -> list[bool]:
    inner = _strip_note(value).strip().strip("[]")
    return [item.strip() == "T" for item in inner.split(",") if item.strip()]


def _contains_terms(text: str) -> list[str]:
    """Split 'On and "Steps 0-2"' into its terms."""
    text = _strip_note(text.strip())
    terms = re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', text)
    return [quoted or plain for quoted, plain in terms if (quoted or plain) != "and"]


def _fragment_patterns(operator: str, value: str) -> list[tuple[re.Pattern[str], str]]:
    value = value.strip()
    if operator == "=~":
        pattern = _unescape(_strip_note(value))
        return [(re.compile(pattern, re.MULTILINE), f"/{pattern}/")]
    if operator == "=":
        literal = _unescape(_unquote(value)).strip()
        return [(re.compile(re.escape(literal)), repr(literal))]
    terms = [_unescape(term) for term in _contains_terms(value)]
    return [(re.compile(re.escape(term)), repr(term)) for term in terms]


def reply_parser_cases(
    source: str, entries: list[Entry], corrections: dict[tuple[str, str], str]
) -> list[ReplyCase]:
    """Build the cases of an email_reply_parser set (bare bodies).

    Fragment facts map to the visible text: fragment 0 and fragments marked
    not hidden must be kept, hidden ones removed. Without a ``hidden=`` list a
    later fragment that starts with "On" is the quote header and counts as
    hidden, and facts about other later fragments are not used.
    """
    group = source.split("-")[0]
    cases: list[ReplyCase] = []
    for entry in entries:
        body = entry.path.read_bytes()
        raw = wrap_bare_body(body)
        text = body.decode("utf-8", errors="replace")
        baseline_input = ("plain", text)
        facts = entry.facts()
        expected: str | None = None
        for key in ("reply_text_file", "fragment0_file"):
            if key in facts:
                expected_path = CORPUS / source / _file_name(facts[key])
                expected = expected_path.read_text(encoding="utf-8")
        if expected is None and any(
            item.startswith("fragments=1") for item in entry.items
        ):
            expected = text
        for item in entry.items:
            match = re.match(r'reply\.strip\(\)=="(.*)"', item)
            if match:
                expected = _unescape(match.group(1))
        if expected is not None or (entry.ident, "reply_text") in corrections:
            case = _exact_case(
                group,
                entry,
                raw,
                "stripped_text",
                baseline_input,
                expected or "",
                corrections,
            )
            if case is not None:
                cases.append(case)
            continue

        hidden = _bools(facts["hidden"]) if "hidden" in facts else None
        present: list[tuple[re.Pattern[str], str]] = []
        absent: list[tuple[re.Pattern[str], str]] = []
        for item in entry.items:
            match = _FRAGMENT_FACT.match(item)
            if match:
                index, operator, value = int(match[1]), match[2], match[3]
                patterns = _fragment_patterns(operator, value)
                if hidden is not None and index < len(hidden):
                    is_hidden = hidden[index]
                elif index == 0:
                    is_hidden = False
                elif value.lstrip('"~^').startswith("On"):
                    is_hidden = True
                else:
                    continue
                (absent if is_hidden else present).extend(patterns)
                continue
            match = re.match(
                r"(parse_reply must_not_contain|reply contains)\s+(.*)$", item
            )
            if match:
                patterns = _fragment_patterns("contains", match[2])
                if match[1].startswith("parse_reply"):
                    absent.extend(patterns)
                else:
                    present.extend(patterns)
        if present or absent:
            cases.append(
                ReplyCase(
                    group=group,
                    ident=entry.ident,
                    raw=raw,
                    lead_field="stripped_text",
                    baseline_input=baseline_input,
                    present=present,
                    absent=absent,
                )
            )
    return cases


# --- signature cases ----------------------------------------------------------


@dataclass
class SignatureCase:
    """One talon signature-set body with its expected signature."""

    ident: str
    raw: bytes
    expected: str


def signature_cases(
    entries: list[Entry], corrections: dict[tuple[str, str], str]
) -> list[SignatureCase]:
    """Build talon's signature cases; an empty expected file means none."""
    cases = []
    for entry in entries:
        facts = entry.facts()
        if "signature_file" in facts:
            expected_path = CORPUS / "talon" / _file_name(facts["signature_file"])
            expected = expected_path.read_text(encoding="utf-8")
        else:
            continue
        sender_path = entry.path.with_name(entry.path.name.replace("_body", "_sender"))
        sender = (
            sender_path.read_text(encoding="utf-8") if sender_path.is_file() else ""
        )
        corrected = corrections.get((entry.ident, "signature"))
        if corrected == "-":
            continue
        if corrected is not None:
            expected = json.loads(corrected)
        # "#sig#" starts a signature line in talon's training files, as
        # talon/signature/learning/dataset.py documents. It is an annotation
        # and not mail text, so it is removed from body and expectation.
        body = entry.path.read_bytes().replace(SIGNATURE_ANNOTATION.encode(), b"")
        expected = expected.replace(SIGNATURE_ANNOTATION, "")
        cases.append(
            SignatureCase(entry.ident, wrap_signature_body(body, sender), expected)
        )
    return cases


# --- classification cases -----------------------------------------------------


@dataclass
class KindCase:
    """One email with a classification label.

    ``allowed`` is the set of kinds that agree with the label: one kind for a
    positive label, every other kind for "not a bounce".
    """

    ident: str
    raw: bytes
    allowed: frozenset[str]
    status: str | None = None
    hard: bool | None = None


def _truth(value: str | None) -> bool | None:
    if value is None:
        return None
    value = _strip_note(value).strip().lower()
    if value.startswith("true"):
        return True
    if value.startswith("false"):
        return False
    return None


def kind_cases(
    source: str, entries: list[Entry], corrections: dict[tuple[str, str], str]
) -> list[KindCase]:
    """Build the classification cases of a source that labels them."""
    cases = []
    for entry in entries:
        facts = entry.facts()
        bounce = _truth(facts.get("bounce"))
        if bounce is None:
            bounce = _truth(facts.get("delivery_notification"))
        auto = _truth(facts.get("auto_reply"))
        complaint = _truth(facts.get("complaint"))
        allowed: frozenset[str] | None = None
        if bounce:
            allowed = frozenset({"bounce"})
        elif auto:
            allowed = frozenset({"auto_reply"})
        elif complaint:
            allowed = frozenset({"bulk"})
        elif bounce is False and source == "sisimai":
            # sisimai's non-bounce controls are neither bounces nor replies.
            allowed = frozenset({"lead", "bulk"})
        elif bounce is False:
            allowed = frozenset(KINDS) - {"bounce"}
        corrected_kind = corrections.get((entry.ident, "kind"))
        if corrected_kind == "-":
            continue
        if corrected_kind is not None:
            allowed = frozenset({corrected_kind})
        if allowed is None:
            continue
        status: str | None = None
        hard: bool | None = None
        if allowed == {"bounce"}:
            status = corrections.get((entry.ident, "status"), facts.get("status"))
            status = _strip_note(status or "").strip()
            if not re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status):
                status = None
            hard = _truth(
                corrections.get((entry.ident, "hardbounce"), facts.get("hardbounce"))
            )
        cases.append(KindCase(entry.ident, raw_bytes(entry), allowed, status, hard))
    return cases


# --- baselines ----------------------------------------------------------------


def load_baselines() -> dict[str, Callable[[str, str], str]]:
    """Import the baselines that are installed; each maps (kind, text) to text."""
    found: dict[str, Callable[[str, str], str]] = {}
    # talon's package __init__ imports talon.signature, whose classifier
    # module imports scikit-learn, inside ``try: ... except ImportError``.
    # A None entry in sys.modules makes that import fail, so only the
    # rule-based quotation extractor is loaded.
    sys.modules.setdefault("talon.signature", None)  # type: ignore[arg-type]
    try:
        import talon.quotations
        import talon.utils
    except ImportError as error:
        print(f"note: talon not available ({error}); its column is empty")
    else:

        def run_talon(kind: str, text: str) -> str:
            if kind == "html":
                stripped = talon.quotations.extract_from_html(text)
                return str(talon.utils.html_to_text(stripped) or b"", "utf-8")
            return str(talon.quotations.extract_from_plain(text))

        # talon.init() does this too, then loads the signature classifier.
        talon.quotations.register_xpath_extensions()
        found["talon"] = run_talon
    try:
        from email_reply_parser import EmailReplyParser
    except ImportError as error:
        print(f"note: email-reply-parser not available ({error}); its column is empty")
    else:

        def run_erp(kind: str, text: str) -> str:
            if kind == "html":
                raise NotImplementedError("email-reply-parser reads plain text only")
            return str(EmailReplyParser.parse_reply(text))

        found["email-reply-parser"] = run_erp
    return found


# --- running ------------------------------------------------------------------


@dataclass
class Rate:
    """A hit count over a number of cases."""

    hits: int = 0
    total: int = 0

    def add(self, hit: bool) -> None:
        self.hits += hit
        self.total += 1

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    def cell(self) -> str:
        if not self.total:
            return "-"
        return f"{self.hits}/{self.total} ({100 * self.hits / self.total:.1f}%)"


@dataclass
class KindScore:
    """Confusion counts for one kind."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def cell(self) -> str:
        if not self.tp + self.fp + self.fn:
            return "-"
        precision = "-" if self.precision is None else f"{self.precision:.3f}"
        recall = "-" if self.recall is None else f"{self.recall:.3f}"
        return f"{precision} / {recall} (n={self.tp + self.fn})"


@dataclass
class Report:
    """All figures of one run."""

    reply: dict[tuple[str, str], Rate] = field(
        default_factory=lambda: defaultdict(Rate)
    )
    leak: dict[tuple[str, str], Rate] = field(default_factory=lambda: defaultdict(Rate))
    over: dict[tuple[str, str], Rate] = field(default_factory=lambda: defaultdict(Rate))
    signature: Rate = field(default_factory=Rate)
    kinds: dict[tuple[str, str], KindScore] = field(
        default_factory=lambda: defaultdict(KindScore)
    )
    status: dict[str, Rate] = field(default_factory=lambda: defaultdict(Rate))
    hard: dict[str, Rate] = field(default_factory=lambda: defaultdict(Rate))
    emails: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    exceptions: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    slow: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    misses: list[str] = field(default_factory=list)
    max_seconds: float = 0.0


class Parser:
    """parse_lead with a cache per input and exception bookkeeping."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.cache: dict[bytes, Lead | None] = {}

    def parse(self, source: str, ident: str, raw: bytes) -> Lead | None:
        if raw in self.cache:
            return self.cache[raw]
        started = time.perf_counter()
        lead: Lead | None
        try:
            lead = parse_lead(raw, received_at=FIXED_DATE)
        except NotEmailError:
            lead = None
        except Exception as error:
            self.report.exceptions[source].append(f"{ident}: {type(error).__name__}")
            lead = None
        elapsed = time.perf_counter() - started
        self.report.max_seconds = max(self.report.max_seconds, elapsed)
        if elapsed > SLOW_SECONDS:
            self.report.slow[source].append(f"{ident}: {elapsed:.2f} s")
        self.cache[raw] = lead
        return lead


def _binary(raw: bytes) -> bool:
    return b"\x00" in raw[:8192]


def run(
    baselines: dict[str, Callable[[str, str], str]], use_corrections: bool = True
) -> Report:
    """Score every case of every source."""
    report = Report()
    parser = Parser(report)
    corrections = read_corrections() if use_corrections else {}
    for source in SOURCES:
        if not (CORPUS / source / "MANIFEST.tsv").is_file():
            print(f"note: {source} is not in the corpus; skipped")
            continue
        entries = read_entries(source)
        # Every listed email is parsed once, so exceptions are counted on all
        # of them, scored or not.
        for entry in entries:
            raw = raw_bytes(entry)
            if _binary(raw):
                continue
            report.emails[source] += 1
            parser.parse(source, entry.ident, raw)

        reply_cases: list[ReplyCase] = []
        if source == "talon":
            reply_cases = talon_reply_cases(entries, corrections)
            for signature_case in signature_cases(entries, corrections):
                lead = parser.parse(source, signature_case.ident, signature_case.raw)
                actual = normalize_lines((lead.signature or "") if lead else "")
                hit = actual == normalize_lines(signature_case.expected)
                report.signature.add(hit)
                if not hit:
                    report.misses.append(
                        f"signature {signature_case.ident}: got {len(actual)} chars, "
                        f"expected {len(normalize_lines(signature_case.expected))}"
                    )
        elif source in BARE_BODY_SOURCES:
            reply_cases = reply_parser_cases(source, entries, corrections)
        for case in reply_cases:
            _score_reply(report, parser, source, case, baselines)

        if source in ("sisimai", "flanker", "zammad"):
            for kind_case in kind_cases(source, entries, corrections):
                _score_kind(report, parser, source, kind_case)
    return report


def _score_reply(
    report: Report,
    parser: Parser,
    source: str,
    case: ReplyCase,
    baselines: dict[str, Callable[[str, str], str]],
) -> None:
    lead = parser.parse(source, case.ident, case.raw)
    actual = getattr(lead, case.lead_field) if lead is not None else ""
    verdict = judge_reply(case, actual)
    key = (case.group, "leadparse")
    report.reply[key].add(verdict.correct)
    report.leak[key].add(verdict.leak)
    report.over[key].add(verdict.over_strip)
    if not verdict.correct:
        report.misses.append(f"reply {case.ident} [leadparse]: {verdict.detail}")
    if case.baseline_input is None:
        return
    kind, text = case.baseline_input
    for name, extract in baselines.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                output = extract(kind, text)
        except NotImplementedError:
            continue
        except Exception as error:
            output = ""
            report.misses.append(f"reply {case.ident} [{name}]: {error!r}")
        verdict = judge_reply(case, output)
        key = (case.group, name)
        report.reply[key].add(verdict.correct)
        report.leak[key].add(verdict.leak)
        report.over[key].add(verdict.over_strip)


def _score_kind(report: Report, parser: Parser, source: str, case: KindCase) -> None:
    lead = parser.parse(source, case.ident, case.raw)
    if lead is None:
        predicted = "lead"
        bounce = None
    else:
        predicted = lead.classification.kind
        bounce = lead.classification.bounce
    for kind in SCORED_KINDS:
        score = report.kinds[(source, kind)]
        positive = case.allowed == {kind}
        if predicted == kind and positive:
            score.tp += 1
        elif predicted == kind and kind not in case.allowed:
            score.fp += 1
        elif positive and predicted != kind:
            score.fn += 1
    if predicted not in case.allowed:
        expected = "|".join(sorted(case.allowed))
        report.misses.append(f"kind {case.ident}: got {predicted}, expected {expected}")
    if case.allowed != {"bounce"} or predicted != "bounce" or bounce is None:
        return
    if case.status is not None:
        report.status[source].add(bounce.status == case.status)
        if bounce.status != case.status:
            report.misses.append(
                f"status {case.ident}: got {bounce.status}, expected {case.status}"
            )
    if case.hard is not None:
        report.hard[source].add((bounce.type == "hard") == case.hard)
        if (bounce.type == "hard") != case.hard:
            expected_type = "hard" if case.hard else "soft"
            report.misses.append(
                f"hard/soft {case.ident}: got {bounce.type}, expected {expected_type}"
            )


# --- output -------------------------------------------------------------------

REPLY_GROUPS = ("talon standard", "talon html", "github", "zapier")
EXTRACTORS = ("leadparse", "talon", "email-reply-parser")


def _pct(rate: Rate) -> str:
    if not rate.total:
        return "-"
    return f"{100 * rate.hits / rate.total:.1f}%"


def tables(report: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    """Return the report as (title, header, rows) tables."""
    reply_rows = []
    for group in REPLY_GROUPS:
        if not report.reply[(group, "leadparse")].total:
            continue
        row = [group, str(report.reply[(group, "leadparse")].total)]
        row += [report.reply[(group, name)].cell() for name in EXTRACTORS]
        row += [_pct(report.leak[(group, name)]) for name in EXTRACTORS]
        row += [_pct(report.over[(group, name)]) for name in EXTRACTORS]
        reply_rows.append(row)
    reply_header = ["set", "cases"]
    reply_header += [f"reply ok: {name}" for name in EXTRACTORS]
    reply_header += [f"leak: {name}" for name in EXTRACTORS]
    reply_header += [f"over-strip: {name}" for name in EXTRACTORS]

    kind_rows = []
    for source in ("sisimai", "flanker", "zammad"):
        if not any(
            report.kinds[(source, kind)].tp
            + report.kinds[(source, kind)].fn
            + report.kinds[(source, kind)].fp
            for kind in SCORED_KINDS
        ):
            continue
        row = [source]
        row += [report.kinds[(source, kind)].cell() for kind in SCORED_KINDS]
        row += [report.status[source].cell(), report.hard[source].cell()]
        kind_rows.append(row)
    kind_header = ["source"]
    kind_header += [f"{kind} P / R" for kind in SCORED_KINDS]
    kind_header += ["bounce status", "hard/soft"]

    run_rows = []
    for source in SOURCES:
        if source not in report.emails:
            continue
        run_rows.append(
            [
                source,
                str(report.emails[source]),
                str(len(report.exceptions[source])),
                str(len(report.slow[source])),
            ]
        )
    run_header = ["source", "emails parsed", "exceptions", f"over {SLOW_SECONDS:g} s"]

    signature_rows = [["talon signature", report.signature.cell()]]
    return [
        ("Reply text (leadparse vs baselines)", reply_header, reply_rows),
        ("Classification (leadparse; precision / recall)", kind_header, kind_rows),
        ("Signature (leadparse)", ["set", "signature ok"], signature_rows),
        ("Robustness (leadparse)", run_header, run_rows),
    ]


def print_tables(report: Report, markdown: bool) -> None:
    for title, header, rows in tables(report):
        print()
        if markdown:
            print(f"### {title}\n")
            print("| " + " | ".join(header) + " |")
            print("|" + "|".join(" --- " for _ in header) + "|")
            for row in rows:
                print("| " + " | ".join(row) + " |")
        else:
            print(title)
            widths = [
                max(len(str(cell)) for cell in column)
                for column in zip(header, *rows, strict=False)
            ]
            for row in [header, *rows]:
                print(
                    "  ".join(
                        cell.ljust(width)
                        for cell, width in zip(row, widths, strict=True)
                    )
                )
    print()
    print(f"slowest parse: {report.max_seconds:.3f} s")


def check_thresholds(report: Report, args: argparse.Namespace) -> list[str]:
    """Return a message per threshold that is not met."""
    failures = []
    targets = dict.fromkeys(REPLY_GROUPS, args.min_reply_accuracy)
    for item in args.reply_target:
        group, _sep, value = item.partition("=")
        if group not in targets:
            raise SystemExit(
                f"invalid --reply-target set {group!r}: expected one of {REPLY_GROUPS}"
            )
        targets[group] = float(value)
    for group, minimum in targets.items():
        rate = report.reply[(group, "leadparse")]
        if minimum is not None and rate.value is not None and rate.value < minimum:
            failures.append(f"reply accuracy on {group}: {rate.cell()} < {minimum}")
        if args.ahead_of_baselines and rate.value is not None:
            for name in EXTRACTORS[1:]:
                other = report.reply[(group, name)]
                if other.value is not None and other.value > rate.value:
                    failures.append(
                        f"reply accuracy on {group}: {name} {other.cell()} is ahead "
                        f"of leadparse {rate.cell()}"
                    )
    for (source, kind), score in sorted(report.kinds.items()):
        if kind not in args.kinds:
            continue
        minimums = (("precision", args.min_precision), ("recall", args.min_recall))
        for measure, minimum in minimums:
            value = getattr(score, measure)
            if minimum is not None and value is not None and value < minimum:
                failures.append(
                    f"{kind} {measure} on {source}: {value:.3f} < {minimum}"
                )
    exceptions = sum(len(items) for items in report.exceptions.values())
    if args.max_exceptions is not None and exceptions > args.max_exceptions:
        failures.append(
            f"{exceptions} email(s) raised, more than {args.max_exceptions}"
        )
    return failures


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument(
        "--verbose", action="store_true", help="list every miss by corpus file name"
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="score leadparse only"
    )
    parser.add_argument(
        "--no-corrections",
        action="store_true",
        help="score against the upstream values, ignoring quality_corrections.tsv",
    )
    parser.add_argument(
        "--min-reply-accuracy",
        type=float,
        default=None,
        help="minimum share of correct reply texts on every reply set (0 to 1)",
    )
    parser.add_argument(
        "--reply-target",
        action="append",
        default=[],
        metavar="SET=RATE",
        help=f"minimum reply accuracy for one set, one of {', '.join(REPLY_GROUPS)}",
    )
    parser.add_argument(
        "--ahead-of-baselines",
        action="store_true",
        help="fail when a baseline has a higher reply accuracy on any set",
    )
    parser.add_argument(
        "--min-precision",
        type=float,
        default=None,
        help="minimum precision of each kind in --kinds on each labelling source",
    )
    parser.add_argument(
        "--min-recall",
        type=float,
        default=None,
        help="minimum recall of each kind in --kinds on each labelling source",
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["auto_reply", "bounce"],
        choices=SCORED_KINDS,
        help="kinds the precision and recall thresholds apply to",
    )
    parser.add_argument(
        "--max-exceptions",
        type=int,
        default=None,
        help="maximum number of corpus emails on which parse_lead may raise",
    )
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    if not CORPUS.is_dir():
        print(
            f"error: corpus not found at {CORPUS}; place the public corpus in "
            "shared/corpus beside the repository",
            file=sys.stderr,
        )
        return 2
    # leadparse and the baselines log per message; the figures are the output.
    logging.disable(logging.CRITICAL)
    baselines = {} if args.no_baselines else load_baselines()
    report = run(baselines, use_corrections=not args.no_corrections)
    print(f"corpus: {CORPUS}  date: {datetime.now(UTC):%Y-%m-%d}")
    print_tables(report, args.markdown)
    if args.verbose:
        print("\nmisses:")
        for miss in report.misses:
            print(f"  {miss}")
        for source, items in report.exceptions.items():
            for item in items:
                print(f"  exception in {source}: {item}")
        for source, items in report.slow.items():
            for item in items:
                print(f"  slow in {source}: {item}")
    failures = check_thresholds(report, args)
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
