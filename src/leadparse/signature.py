"""Signature stage: split the signature from the sender's new text.

A signature starts at the earliest of these in the last lines of the text:

* the delimiter line ``-- `` (RFC 3676 section 4.3), also sent as ``--``.
  A ``--`` inside a sentence is punctuation.
* a sign-off line ("Thanks,", "Best regards", "Mit freundlichen Grüßen",
  "С уважением", ...), kept as the signature's first line.
* a mobile-client line ("Sent from my iPhone", "Von meinem iPhone gesendet").
* a name signed with a dash ("-Ana"), or a rule line above a short footer.
* with no marker at all, a trailing block of short lines that starts with the
  sender's name, or is made of name, title, company, phone and URL lines.

Every candidate needs sender text above it and only short, non-prose lines
below it. Contact details (name, role, company, phones, emails, website) are
then read from the signature alone, so a quoted person's details are never
credited to the sender. For a forward, the signature at the end of the
forwarded body is read, because it belongs to the forwarded sender.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import phonenumbers

from leadparse._caseless import FoldedText, caseless
from leadparse._phones import find_phones, region_for_domain
from leadparse._quote_patterns import (
    DASH_NAME,
    MAX_LINE_CHARS,
    MOBILE_LINE,
    RULE_LINE,
    SIGN_OFF,
    SIGNATURE_DELIMITER,
)
from leadparse.model import Contact
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy
from leadparse.quotes import FORWARD_BODY_START_KEY, FORWARD_START_KEY

__all__ = [
    "SignatureSplit",
    "phones_in_text",
    "read_contact",
    "signature_stage",
    "split_signature",
]

logger = logging.getLogger(__name__)

_SCAN_LINES = 60
"""Lines at the end of the text searched for the start of a signature."""

_MAX_SIGNATURE_LINES = 20
"""Non-blank lines a signature may have below its first line."""

_MAX_SIGNATURE_LINE_CHARS = 100

# Job titles in the languages the quote stage reads. English acronyms are
# matched case-sensitively below, everything else ignoring case.
_TITLE_WORDS = re.compile(
    r"\b(?:head|manager|management|director|directora?|vice president|chief"
    r"|engineer|lead|officer|founder|co-?founder|owner|president|consultant"
    r"|coordinator|specialist|buyer|purchaser|purchasing|procurement|analyst"
    r"|architect|administrator|partner|principal|associate|assistant"
    r"|executive|representative|supervisor|developer|designer|scientist"
    r"|professor|secretary|treasurer|advisor|adviser|strategist|recruiter"
    r"|controller|accountant|attorney|counsel|agent|intern|chairman|chair"
    r"|geschäftsführer(?:in)?|leiter(?:in)?|einkauf|einkäufer(?:in)?"
    r"|vertrieb|prokurist(?:in)?|inhaber(?:in)?|vorstand|referent(?:in)?"
    r"|sachbearbeiter(?:in)?|directeur|directrice|responsable|gérante?"
    r"|ingénieure?|chargée? d[e']|chef de|gerente|jefe|jefa|ingenier[oa]"
    r"|coordinador[a]?|diretora?|coordenador[a]?|engenheir[oa]|direttore"
    r"|direttrice|responsabile|amministratore|ingegnere|hoofd|inkoper"
    r"|eigenaar|directie|inköpare|inköpschef|ansvarig|vd|direktør|leder"
    r"|daglig leder|indkøber|innkjøper|toimitusjohtaja|johtaja|päällikkö"
    r"|dyrektor|kierownik|prezes|specjalista|директор|руководитель"
    r"|менеджер|начальник|специалист)\b"
    r"|\b(?:CEO|CTO|CFO|COO|CIO|CMO|CISO|CPO|CRO|VP|SVP|EVP|GM|MD|HR)\b"
    r"|部長|課長|係長|代表取締役|取締役|社長|マネージャー|担当|经理|經理|总监"
    r"|總監|主管|总经理|總經理|董事",
    re.IGNORECASE,
)

# Departments: "Director, Product Management" is one title, not a title and
# a company.
_DEPARTMENT = re.compile(
    r"^(?:(?:and|&|of|for|the|product|products|management|sales|marketing"
    r"|engineering|operations|procurement|purchasing|finance|data|it|hr"
    r"|human resources|business development|development|customer success"
    r"|support|research|strategy|legal|facilities|logistics|partnerships"
    r"|growth|emea|apac|americas|north america|europe|dach|global)\s*)+$",
    re.IGNORECASE,
)

_LEGAL_SUFFIX = re.compile(
    r"(?:\b(?:Inc|LLC|L\.L\.C|Ltd|Limited|GmbH|AG|SA|SAS|SARL|SL|S\.L|BV|B\.V"
    r"|NV|N\.V|AB|Oy|Oyj|A/S|AS|ASA|ApS|SpA|S\.p\.A|Srl|S\.r\.l|Lda|Ltda"
    r"|Corp|Corporation|Co|KK|K\.K|PLC|plc|LLP|LP|Pty|KG|KGaA|SE|GbR|UG"
    r"|e\.V|Sp\. z o\.o|sp\. z o\.o|ООО|АО|ЗАО|ПАО)\b\.?"
    r"|\bS\.A\.S?\.?|\bS\.A\b|株式会社|有限会社|有限公司|股份有限公司|集团)",
)

_EMAIL = re.compile(r"[\w.+'-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>()\"'|,;]{1,200}[^\s<>()\"'|,;.:!?]",
    re.IGNORECASE,
)
_SOCIAL = re.compile(
    r"linkedin\.com|twitter\.com|x\.com/|facebook\.com|instagram\.com"
    r"|youtube\.com|xing\.com|calendly\.com|t\.co/|bit\.ly/",
    re.IGNORECASE,
)
_PHONE_LIKE = re.compile(r"(?:\+|\(|\b)\d[\d \t().\/-]{5,}\d")
_FAX = re.compile(
    r"(?:\b(?:fax|telefax|télécopie|faks|факс)|(?<![\w.])f)[ \t]*[.:]?[ \t]*"
    r"(?:\+|\(|\d)[\d \t().\/-]{5,}\d",
    re.IGNORECASE,
)
_LABEL_LINE = re.compile(
    r"^(?:t|m|p|e|w|tel|phone|mobile|mob|cell|direct|office|skype|email"
    r"|e-mail|web|website|fax|handy|mobil|telefon|téléphone|portable|móvil"
    r"|celular|cellulare|telefoon|mobiel|puh|gsm|тел)\b\.?[ \t]*[:.]",
    re.IGNORECASE,
)
_DISCLAIMER = re.compile(
    r"confidential|intended (?:solely )?(?:only )?for|intended recipient"
    r"|privileged|disclaimer|vertraulich|Empfänger|destinataire|confidencial"
    r"|riservat|consider the environment|unsubscribe|mailing list|listinfo"
    r"|Registergericht|Handelsregister|Sitz der Gesellschaft|Amtsgericht",
    re.IGNORECASE,
)
_MAILING_FOOTER = re.compile(
    r"mailing list|unsubscribe|listinfo|mailman", re.IGNORECASE
)
_CREDENTIALS = re.compile(
    r",?[ \t]+(?:Ph\.?D\.?|MBA|M\.?D\.?|CPA|PE|Esq\.?|MSc|BSc|MA|BA|Dr\.?"
    r"|Dipl\.?-\w+\.?|PMP|CFA)\.?$",
)
_NAME_PARTICLES = frozenset(
    {
        "van",
        "von",
        "de",
        "der",
        "den",
        "da",
        "di",
        "del",
        "della",
        "la",
        "le",
        "du",
        "dos",
        "das",
        "do",
        "bin",
        "al",
        "ter",
        "ten",
        "zu",
        "y",
    }
)
# NOTE: person names are recognized in Latin, Cyrillic and CJK scripts only.
# A name in another script is found only when it matches the sender's name.
_NAME_WORD = re.compile(r"^(?:[A-ZÀ-ÖØ-ÞА-ЯЁ][a-zß-öø-ÿа-яё'’-]+|[A-Z]\.)$")
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")
_CJK_NAME = re.compile(r"^[\u3040-\u30ff\u4e00-\u9fff]{2,6}$")
_SEGMENT_SPLIT = re.compile(r"[ \t]+[|·•][ \t]+|[ \t]*\|[ \t]*")
_COUNTRY_CODE = re.compile(r"(?:\+|\b00)[ \t]?(\d[\d \t().-]{6,20}\d)")
_WORD = re.compile(r"\w+")
# Words that introduce the writer's own number in running text ("Please call
# me at ...", "Telefon: ...", "appelez-moi au ...").
_PHONE_CUE = re.compile(
    r"\b(?:call|phone|tel|mobile|cell|reach|ring|whatsapp|anruf|rufen|telefon|handy"
    r"|mobil|appel|téléphone|portable|llam|teléfono|móvil|ligar|ligue|telefone"
    r"|celular|chiam|telefono|cellulare|bel|telefoon|ringa|soita|puhelin"
    r"|zadzwoń|позвон|телефон)\w*|電話|电话",
    re.IGNORECASE,
)
_PHONE_CUE_CASELESS = caseless(_PHONE_CUE)
_SIGN_OFF_NAME = re.compile(r"[,.!][ \t]*[-–—]?[ \t]*([^\W\d_][\w .'-]*)$")
_SINGLE_NAME = re.compile(r"^[A-ZÀ-ÖØ-ÞА-ЯЁ][a-zß-öø-ÿа-яё'’-]{1,20}$")


@dataclass(frozen=True)
class SignatureSplit:
    """The result of :func:`split_signature`."""

    stripped_text: str
    """The text above the signature, trailing whitespace removed."""
    signature: str | None
    """The signature without the ``-- `` delimiter line, or ``None``."""


def split_signature(text: str, *, sender_name: str | None = None) -> SignatureSplit:
    """Split *text* into the message and the signature at its end.

    Args:
        text: the sender's new text (quotes already removed).
        sender_name: the sender's display name; a trailing block that starts
            with it, or with its first word, is a signature.

    Returns:
        The split; ``stripped_text`` is *text* unchanged when no signature
        was found.
    """
    lines = text.split("\n")
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    if last < 1:
        return SignatureSplit(stripped_text=text, signature=None)

    start = _signature_start(lines, last, _name_tokens(sender_name))
    if start is None:
        return SignatureSplit(stripped_text=text, signature=None)

    stripped = "\n".join(lines[:start]).rstrip()
    body = lines[start : last + 1]
    if SIGNATURE_DELIMITER.match(body[0]):
        body = body[1:]
    signature = "\n".join(body).strip("\n").rstrip()
    return SignatureSplit(stripped_text=stripped, signature=signature or None)


def _signature_start(lines: list[str], last: int, sender: set[str]) -> int | None:
    first_text = next(i for i, line in enumerate(lines) if line.strip())
    lowest = max(first_text + 1, last - _SCAN_LINES)
    # The non-blank lines below each candidate line are a suffix of this list,
    # so each line is stripped and classified once, not once per line above.
    below = [
        text[:MAX_LINE_CHARS].strip()
        for text in lines[lowest + 1 : last + 1]
        if text.strip()
    ]
    tail_start = max(0, len(below) - _MAX_SIGNATURE_LINES)
    tail_like: list[bool] | None = None
    consumed = 0
    for index in range(lowest, last + 1):
        if index > lowest and lines[index].strip():
            consumed += 1
        line = lines[index][:MAX_LINE_CHARS].strip()
        if not line:
            continue
        after = below[consumed:]
        signature_like = False
        if consumed >= tail_start:
            if tail_like is None:
                tail_like = _signature_like_suffixes(below[tail_start:])
            signature_like = tail_like[consumed - tail_start]
        if _is_start(lines, index, line, after, signature_like, sender):
            return index
    return None


def _is_start(
    lines: list[str],
    index: int,
    line: str,
    after: list[str],
    signature_like: bool,
    sender: set[str],
) -> bool:
    """Tell whether a signature starts at ``lines[index]``.

    Args:
        lines: the text's lines.
        index: the candidate line's index.
        line: the candidate line, cut to ``MAX_LINE_CHARS`` and stripped.
        after: the non-blank lines below it up to the text's last non-blank
            line, each cut and stripped the same way.
        signature_like: whether *after* fits a signature (see
            ``_signature_like_suffixes``); it is only read when *after* has at
            most ``_MAX_SIGNATURE_LINES`` lines.
        sender: the sender's name tokens.
    """
    if SIGNATURE_DELIMITER.match(lines[index]):
        return bool(after) and len(after) <= _MAX_SIGNATURE_LINES * 2
    if len(after) > _MAX_SIGNATURE_LINES or not signature_like:
        return False
    if SIGN_OFF.match(line) or DASH_NAME.match(line):
        return True
    if MOBILE_LINE.match(line):
        return len(after) <= 3
    if RULE_LINE.match(line):
        # A ruler starts a signature only above a footer or contact block.
        # Above more sentences or a real "-- " delimiter it is decoration.
        return bool(after) and not any(
            SIGNATURE_DELIMITER.match(item) or _is_sentence(item) for item in after
        )

    # No marker: the block must start a paragraph.
    if lines[index - 1].strip():
        return False
    if _matches_sender(line, sender):
        return len(after) <= 8
    block = [line, *after]
    if _is_person_name(line):
        return 1 <= len(after) <= 8 and any(_is_contact_line(item) for item in after)
    return len(block) >= 2 and all(_is_contact_line(item) for item in block)


def _signature_like_suffixes(lines: list[str]) -> list[bool]:
    """Tell, for each k up to ``len(lines)``, whether ``lines[k:]`` fits a signature.

    Read from the top, the first disclaimer or list footer line decides yes
    and the first prose line decides no; with neither, the answer is yes.
    The list is filled from the bottom so each line is tested once.
    """
    result = [True] * (len(lines) + 1)
    for k in range(len(lines) - 1, -1, -1):
        line = lines[k]
        if _DISCLAIMER.search(line):
            # A legal disclaimer or list footer ends the signature, so its
            # sentences are not the sender's text.
            result[k] = True
        elif _is_prose(line):
            result[k] = False
        else:
            result[k] = result[k + 1]
    return result


def _is_prose(line: str) -> bool:
    if _URL.search(line) or _EMAIL.search(line):
        return len(line) > 2 * _MAX_SIGNATURE_LINE_CHARS
    if len(line) > _MAX_SIGNATURE_LINE_CHARS:
        return True
    words = len(line.split())
    if words >= 12:
        return True
    return line.endswith(("?", "？")) or (line.endswith((".", "!")) and words >= 6)


def _is_sentence(line: str) -> bool:
    if _URL.search(line) or _EMAIL.search(line) or _DISCLAIMER.search(line):
        return False
    return len(line.split()) >= 3 and line.endswith((".", "!", "?", "。", "！", "？"))


def _name_tokens(name: str | None) -> set[str]:
    if not name:
        return set()
    return {
        word.casefold()
        for word in _WORD.findall(name)
        if len(word) > 1 and not word.isdigit()
    }


def _clean_name(line: str) -> str:
    line = line.strip().strip("*_").strip()
    line = re.sub(r"^(?:[-–—~]+)[ \t]*", "", line)
    line = _CREDENTIALS.sub("", line).strip()
    return line.rstrip(",.;").strip()


def _matches_sender(line: str, sender: set[str]) -> bool:
    if not sender:
        return False
    cleaned = _clean_name(line)
    words = cleaned.split()
    if not 1 <= len(words) <= 4 or any(ch.isdigit() or ch == "@" for ch in cleaned):
        return False
    tokens = [word.casefold() for word in _WORD.findall(cleaned) if len(word) > 1]
    return bool(tokens) and tokens[0] in sender


def _is_person_name(line: str) -> bool:
    cleaned = _clean_name(line)
    if not cleaned or len(cleaned) > 40:
        return False
    if _CJK_NAME.match(cleaned):
        return True
    words = cleaned.split()
    if not 2 <= len(words) <= 4:
        return False
    if _TITLE_WORDS.search(cleaned) or _LEGAL_SUFFIX.search(cleaned):
        return False
    if SIGN_OFF.match(cleaned):
        return False
    named = 0
    for word in words:
        if word.casefold() in _NAME_PARTICLES:
            continue
        if not _NAME_WORD.match(word):
            return False
        named += 1
    return named >= 2


def _is_contact_line(line: str) -> bool:
    """Return whether *line* is a title, company, phone, address or URL line."""
    if _is_prose(line):
        return False
    if _EMAIL.search(line) or _URL.search(line) or _LABEL_LINE.match(line):
        return True
    digits = sum(ch.isdigit() for ch in line)
    if digits >= 7 and _PHONE_LIKE.search(line):
        return True
    short = len(line) <= 80
    return short and bool(_TITLE_WORDS.search(line) or _LEGAL_SUFFIX.search(line))


# --- Contact extraction ---


def read_contact(
    signature: str | None,
    *,
    sender_name: str | None = None,
    sender_domain: str | None = None,
    default_region: str = "US",
) -> Contact | None:
    """Read name, role, company, phones, emails and website from a signature.

    Args:
        signature: the signature text from :func:`split_signature`.
        sender_name: the display name of the person who wrote the signature.
        sender_domain: the domain of that person's address; its country-code
            TLD is the second region tried for phone numbers.
        default_region: the region tried last for phone numbers.

    Returns:
        The contact, or ``None`` when the signature contains no detail.
    """
    if not signature:
        return None
    segments = _segments(signature)
    if not segments:
        return None

    sender = _name_tokens(sender_name)
    name_index, full_name = _find_name(segments, sender)
    role_index, role, company = _find_role(segments, name_index)
    if company is None:
        company = _find_company(segments, name_index, role_index)

    text = "\n".join(segments)
    phones = _find_phones(text, sender_domain, default_region)
    emails = list(dict.fromkeys(match.lower() for match in _EMAIL.findall(text)))
    website = _find_website(text)
    given, family = _split_name(full_name)

    contact = Contact(
        full_name=full_name,
        given_name=given,
        family_name=family,
        company=company,
        role=role,
        emails=emails,
        phones=phones,
        website=website,
    )
    if contact == Contact():
        return None
    return contact


def _segments(signature: str) -> list[str]:
    """Return the signature's lines, split on ``|`` and ``·``, without noise."""
    segments: list[str] = []
    for raw in signature.split("\n"):
        line = raw[:MAX_LINE_CHARS].strip().strip("*_").strip()
        if not line or SIGNATURE_DELIMITER.match(line) or RULE_LINE.match(line):
            continue
        if _MAILING_FOOTER.search(line) or _DISCLAIMER.search(line):
            break
        if MOBILE_LINE.match(line):
            continue
        for part in _SEGMENT_SPLIT.split(line):
            part = part.strip().strip("*_").strip()
            if part:
                segments.append(part)
    return segments


def _find_name(segments: list[str], sender: set[str]) -> tuple[int | None, str | None]:
    # A sign-off may carry the name: "Thanks, Ana" or "Best, Bob Smith".
    for index, segment in enumerate(segments[:4]):
        if SIGN_OFF.match(segment):
            match = _SIGN_OFF_NAME.search(segment)
            if match:
                return index, _clean_name(match.group(1))
            # The line under a sign-off is the writer's name when it looks
            # like one, even a lone first name ("Thanks,\nAna").
            following = index + 1
            if following < len(segments) and (
                _matches_sender(segments[following], sender)
                or _is_person_name(segments[following])
                or _SINGLE_NAME.match(_clean_name(segments[following]))
            ):
                return following, _clean_name(segments[following])
            continue
        if DASH_NAME.match(segment):
            return index, _clean_name(segment)

    for index, segment in enumerate(segments[:6]):
        if _matches_sender(segment, sender):
            return index, _clean_name(segment)
    for index, segment in enumerate(segments[:6]):
        if SIGN_OFF.match(segment):
            continue
        if _is_person_name(segment):
            return index, _clean_name(segment)
    return None, None


def _find_role(
    segments: list[str], name_index: int | None
) -> tuple[int | None, str | None, str | None]:
    for index, segment in enumerate(segments):
        if index == name_index or SIGN_OFF.match(segment):
            continue
        if len(segment) > 80 or _EMAIL.search(segment) or _URL.search(segment):
            continue
        if sum(ch.isdigit() for ch in segment) >= 5:
            continue
        if not _TITLE_WORDS.search(segment):
            continue
        if _LEGAL_SUFFIX.search(segment) and "," not in segment:
            continue
        role, company = _split_role(segment)
        return index, role, company
    return None, None, None


def _split_role(segment: str) -> tuple[str, str | None]:
    """Split "Role, Company" or "Role at Company"; keep "Director, Sales" whole."""
    for separator in (" at ", " @ ", " bei ", " chez ", " en ", " presso "):
        head, found, rest = segment.partition(separator)
        if found and _TITLE_WORDS.search(head) and rest.strip():
            return head.strip(), rest.strip()
    if "," in segment:
        head, _, rest = segment.partition(",")
        rest = rest.strip()
        department = _DEPARTMENT.match(rest) or _TITLE_WORDS.search(rest)
        if (
            rest
            and _TITLE_WORDS.search(head)
            and (_LEGAL_SUFFIX.search(rest) or not department)
        ):
            return head.strip(), rest
    return segment.strip(), None


def _find_company(
    segments: list[str], name_index: int | None, role_index: int | None
) -> str | None:
    used = {name_index, role_index}
    for index, segment in enumerate(segments):
        if index in used or len(segment) > 80:
            continue
        if _LEGAL_SUFFIX.search(segment) and not _EMAIL.search(segment):
            return segment
    if role_index is None or role_index + 1 >= len(segments):
        return None
    candidate = segments[role_index + 1]
    if role_index + 1 == name_index or not _is_plain_company(candidate):
        return None
    return candidate


def _is_plain_company(segment: str) -> bool:
    if len(segment) > 60 or len(segment.split()) > 6:
        return False
    if _EMAIL.search(segment) or _URL.search(segment) or _LABEL_LINE.match(segment):
        return False
    if any(ch.isdigit() for ch in segment) or _TITLE_WORDS.search(segment):
        return False
    return not SIGN_OFF.match(segment) and not MOBILE_LINE.match(segment)


def phones_in_text(
    text: str, *, sender_domain: str | None = None, default_region: str = "US"
) -> list[str]:
    """Find the writer's phone numbers on lines of *text* that ask for a call.

    Only lines with a cue word ("call me", "phone", "Telefon", "appeler") are
    read, so order numbers and prices in the text are not taken for phones.
    """
    if not _PHONE_CUE_CASELESS.found_in(FoldedText(text)):
        # A cue word found on a line is also found in the whole text, so
        # without one in the text no line qualifies.
        return []
    lines = [
        line
        for line in (raw[:MAX_LINE_CHARS] for raw in text.split("\n"))
        if _PHONE_CUE.search(line)
    ]
    if not lines:
        return []
    return _find_phones("\n".join(lines), sender_domain, default_region)


def _find_phones(text: str, domain: str | None, default_region: str) -> list[str]:
    without_fax = _FAX.sub(" ", text)
    regions = [_region_in_text(without_fax), region_for_domain(domain), default_region]
    return find_phones(without_fax, [region for region in regions if region])


def _region_in_text(text: str) -> str | None:
    """Return the region of the first number written with a country code."""
    match = _COUNTRY_CODE.search(text)
    if match is None:
        return None
    digits = re.sub(r"\D", "", match.group(1))
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    if number.country_code is None:
        return None
    region = phonenumbers.region_code_for_country_code(number.country_code)
    return None if region in (None, "ZZ", "001") else str(region)


def _find_website(text: str) -> str | None:
    urls = [match.group(0) for match in _URL.finditer(text)]
    for url in urls:
        if not _SOCIAL.search(url):
            return url
    return urls[0] if urls else None


def _split_name(full_name: str | None) -> tuple[str | None, str | None]:
    if not full_name:
        return None, None
    words = full_name.split()
    # CJK names put the family name first and need no space, so the order of
    # the words is no reliable guide. Such names stay unsplit.
    if len(words) == 1 or _CJK_CHAR.search(full_name):
        # A lone word may be a first name or a nickname ("Ana", "Bob"), so
        # it is not split; the From display name is the better source.
        return None, None
    # Particles ("van", "de") belong to the family name.
    family_start = len(words) - 1
    while family_start > 1 and words[family_start - 1].casefold() in _NAME_PARTICLES:
        family_start -= 1
    return words[0], " ".join(words[family_start:])


def _join_parts(*parts: str) -> str:
    return "\n\n".join(part.strip("\n").rstrip() for part in parts if part.strip())


@stage("signature")
def signature_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Set ``stripped_text``, ``signature`` and ``draft.signature_contact``.

    The contact's phones are the signature's, then numbers on lines of the
    writer's own text that ask for a call (see :func:`phones_in_text`).
    For a forward, the forwarding person's own sign-off above the forward is
    left out of ``stripped_text`` (it stays in ``message_text``) and
    ``signature`` is the forwarded sender's signature.
    """
    lead = draft.lead
    text = lead.message_text
    forward_start = draft.extras.get(FORWARD_START_KEY)
    body_start = draft.extras.get(FORWARD_BODY_START_KEY)
    sender_name = lead.from_.name
    sender_domain = lead.from_.domain

    if (
        draft.forwarded_text is not None
        and isinstance(forward_start, int)
        and isinstance(body_start, int)
    ):
        own = split_signature(text[:forward_start], sender_name=sender_name)
        forwarded_sender = draft.forwarded_sender
        if forwarded_sender is not None:
            sender_name = forwarded_sender.name
            email = forwarded_sender.email or ""
            sender_domain = email.rpartition("@")[2] or None
        forwarded = split_signature(text[body_start:], sender_name=sender_name)
        lead.stripped_text = _join_parts(
            own.stripped_text, text[forward_start:body_start], forwarded.stripped_text
        )
        lead.signature = forwarded.signature
        writer_text = forwarded.stripped_text
    else:
        split = split_signature(text, sender_name=sender_name)
        lead.stripped_text = split.stripped_text
        lead.signature = split.signature
        writer_text = split.stripped_text

    contact = read_contact(
        lead.signature,
        sender_name=sender_name,
        sender_domain=sender_domain,
        default_region=policy.default_region,
    )
    extra_phones = phones_in_text(
        writer_text, sender_domain=sender_domain, default_region=policy.default_region
    )
    if extra_phones:
        contact = contact or Contact()
        phones = list(dict.fromkeys([*contact.phones, *extra_phones]))
        contact = contact.model_copy(update={"phones": phones})
    draft.signature_contact = contact
    return draft
