"""Web-form notification stage: read ``Label: value`` fields into a contact.

Website contact forms mail their submissions as lines such as
``Name: Marta Silva`` or, once an HTML table is flattened to text,
``Company: | Example Foods Lda``. This stage fills ``draft.form_fields`` and
``draft.form_contact``. The classify stage reads ``draft.form_fields`` to mark
the mail as a ``web_form`` lead.

A mail counts as a form only when at least two known fields are present, one
of them a contact field (name, email or phone), and either a name or message
field is among them or three known fields are. So an ordinary mail with a
``Subject:`` line, or a signature with ``Phone:`` and ``Email:`` lines, is not
a form.
"""

from __future__ import annotations

import logging
import re
import unicodedata

from leadparse._phones import find_phones, region_for_domain
from leadparse.model import Contact
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["FIELD_LABELS", "contact_from_fields", "forms_stage", "read_form_fields"]

logger = logging.getLogger(__name__)

SCAN_CHARS = 64 * 1024
"""Characters of body text scanned for form fields."""

_MAX_FIELDS = 100
_MAX_VALUE_CHARS = 10_000

FIELD_LABELS: dict[str, frozenset[str]] = {
    "name": frozenset(
        {
            "name",
            "full name",
            "your name",
            "contact name",
            "contact",
            "nome",
            "nom",
            "nombre",
            "naam",
            "nome completo",
            "nombre completo",
            "nom complet",
            "vollständiger name",
            "imię i nazwisko",
            "navn",
            "namn",
            "nimi",
            "имя",
            "名前",
            "氏名",
            "姓名",
        }
    ),
    "given_name": frozenset(
        {
            "first name",
            "firstname",
            "first",
            "given name",
            "forename",
            "vorname",
            "prénom",
            "prenom",
            "primeiro nome",
            "voornaam",
            "imię",
            "fornavn",
            "förnamn",
            "etunimi",
        }
    ),
    "family_name": frozenset(
        {
            "last name",
            "lastname",
            "last",
            "surname",
            "family name",
            "nachname",
            "familienname",
            "nom de famille",
            "apellido",
            "apellidos",
            "cognome",
            "sobrenome",
            "apelido",
            "achternaam",
            "nazwisko",
            "efternavn",
            "efternamn",
            "sukunimi",
            "фамилия",
        }
    ),
    "email": frozenset(
        {
            "email",
            "e-mail",
            "e mail",
            "email address",
            "e-mail address",
            "your email",
            "your e-mail",
            "e-mail-adresse",
            "emailadresse",
            "courriel",
            "adresse e-mail",
            "adresse email",
            "adresse électronique",
            "correo",
            "correo electrónico",
            "correo electronico",
            "email de contato",
            "indirizzo email",
            "indirizzo e-mail",
            "mail",
            "e-post",
            "sähköposti",
            "メールアドレス",
        }
    ),
    "phone": frozenset(
        {
            "phone",
            "phone number",
            "telephone",
            "telephone number",
            "tel",
            "tel.",
            "telefon",
            "telefonnummer",
            "téléphone",
            "telephone/mobile",
            "teléfono",
            "telefono",
            "telefone",
            "telefoon",
            "mobile",
            "mobile phone",
            "mobile number",
            "cell",
            "cell phone",
            "handy",
            "mobil",
            "móvil",
            "movil",
            "celular",
            "cellulare",
            "portable",
            "numéro de téléphone",
            "número de teléfono",
            "puhelin",
            "телефон",
            "電話番号",
            "phone/mobile",
            "contact number",
            "whatsapp",
        }
    ),
    "company": frozenset(
        {
            "company",
            "company name",
            "organization",
            "organisation",
            "organization name",
            "business",
            "business name",
            "firma",
            "firmenname",
            "unternehmen",
            "société",
            "societe",
            "entreprise",
            "empresa",
            "azienda",
            "società",
            "organização",
            "bedrijf",
            "företag",
            "yritys",
            "firm",
            "компания",
            "会社名",
        }
    ),
    "role": frozenset(
        {
            "job title",
            "title",
            "position",
            "role",
            "job role",
            "funktion",
            "position/title",
            "poste",
            "fonction",
            "cargo",
            "puesto",
            "ruolo",
            "functie",
            "stanowisko",
            "titel",
            "должность",
            "役職",
        }
    ),
    "website": frozenset(
        {
            "website",
            "web site",
            "url",
            "website url",
            "company website",
            "homepage",
            "webseite",
            "site web",
            "site internet",
            "sitio web",
            "sito web",
            "página web",
            "web",
        }
    ),
    "message": frozenset(
        {
            "message",
            "your message",
            "comments",
            "comment",
            "questions",
            "question",
            "inquiry",
            "enquiry",
            "details",
            "how can we help",
            "how can we help you",
            "nachricht",
            "ihre nachricht",
            "anfrage",
            "mensaje",
            "mensagem",
            "messaggio",
            "bericht",
            "commentaires",
            "commentaire",
            "votre message",
            "description",
            "request",
            "wiadomość",
            "meddelande",
            "viesti",
            "сообщение",
        }
    ),
}
"""Canonical field name mapped to the lower-cased labels that mean it."""

_CONTACT_FIELDS = frozenset({"name", "given_name", "family_name", "email", "phone"})
_NAME_FIELDS = frozenset({"name", "given_name", "family_name", "message"})
_LABEL_INDEX = {
    label: canonical for canonical, labels in FIELD_LABELS.items() for label in labels
}

# "Label: value", "Label: | value" and "Label | value" (flattened table cells).
# The label is short and has no sentence punctuation, so prose lines such as
# "Note: we will call you" only count when the label is a known field.
_FIELD_LINE = re.compile(
    r"^[ \t>*•·-]{0,4}\**([^\n:：|*]{1,40}?)\**[ \t]*(?:[:：][ \t]*\|?|\|)[ \t]*(.*)$"
)
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")


def _normalize_label(label: str) -> str:
    label = unicodedata.normalize("NFC", label).strip().strip("*").strip()
    return " ".join(label.lower().split())


def canonical_field(label: str) -> str | None:
    """Return the canonical field name for a form label, if it is a known one."""
    return _LABEL_INDEX.get(_normalize_label(label))


def read_form_fields(text: str) -> dict[str, str]:
    """Read ``Label: value`` pairs from flattened form text, in order.

    Lines that continue a message field are joined to it. A label alone on a
    line takes the next line as its value (table cells flattened onto
    separate lines). Quoted lines (``>``) are skipped.

    Returns:
        Label (as written) mapped to value, or ``{}`` when the text does not
        look like a form (see the module docs).
    """
    fields: dict[str, str] = {}
    lines = text[:SCAN_CHARS].splitlines()
    current: str | None = None
    index = 0
    while index < len(lines) and len(fields) < _MAX_FIELDS:
        line = lines[index]
        index += 1
        if line.lstrip().startswith(">"):
            current = None
            continue

        match = _FIELD_LINE.match(line)
        label = match.group(1).strip() if match else ""
        if match and (canonical_field(label) or _looks_like_label(label)):
            value = match.group(2).strip().strip("|").strip()
            if not value and index < len(lines) and not _FIELD_LINE.match(lines[index]):
                value = lines[index].strip().strip("|").strip()
                index += 1
            if label not in fields:
                fields[label] = value[:_MAX_VALUE_CHARS]
            current = label
            continue

        if current is not None and canonical_field(current) == "message":
            if line.strip():
                joined = f"{fields[current]}\n{line.strip()}".strip()
                fields[current] = joined[:_MAX_VALUE_CHARS]
            continue
        if line.strip():
            current = None

    return fields if _is_form(fields) else {}


def _looks_like_label(label: str) -> bool:
    # Unknown labels are kept only when they read like a field name: a few
    # words, no URL or sentence punctuation.
    words = label.split()
    return 0 < len(words) <= 4 and not any(ch in label for ch in "/.?!@<>()[]\"'")


def _is_form(fields: dict[str, str]) -> bool:
    known = {canonical_field(label) for label, value in fields.items() if value}
    known.discard(None)
    if len(known) < 2 or not known & _CONTACT_FIELDS:
        return False
    return bool(known & _NAME_FIELDS) or len(known) >= 3


def contact_from_fields(fields: dict[str, str], default_region: str) -> Contact:
    """Build a contact from form fields.

    Args:
        fields: label mapped to value, as :func:`read_form_fields` returns.
        default_region: ISO region for phone numbers without a country code,
            tried after the region of the form's email domain.
    """
    by_field: dict[str, str] = {}
    for label, value in fields.items():
        canonical = canonical_field(label)
        if canonical and value and canonical not in by_field:
            by_field[canonical] = value

    emails = [
        address.lower()
        for address in dict.fromkeys(_EMAIL.findall(by_field.get("email", "")))
    ]
    domain = emails[0].partition("@")[2] if emails else None
    regions = [r for r in (region_for_domain(domain), default_region) if r]
    phones = find_phones(by_field["phone"], regions) if "phone" in by_field else []

    full_name = by_field.get("name")
    given_name = by_field.get("given_name")
    family = by_field.get("family_name")
    if full_name and family and not given_name and " " not in full_name.strip():
        # "Nombre: Ana" next to "Apellido: Ruiz" is a given name.
        given_name, full_name = full_name, None
    if full_name and given_name and not family and " " not in full_name.strip():
        # "Nom: Martin" next to "Prénom: Claire" is a family name.
        family, full_name = full_name, None
    if not full_name and (given_name or family):
        full_name = " ".join(part for part in (given_name, family) if part)
    elif full_name and not (given_name or family):
        parts = full_name.split()
        if len(parts) >= 2:
            given_name, family = parts[0], " ".join(parts[1:])

    return Contact(
        full_name=full_name,
        given_name=given_name,
        family_name=family,
        company=by_field.get("company"),
        role=by_field.get("role"),
        emails=emails,
        phones=phones,
        website=by_field.get("website"),
    )


@stage("forms")
def forms_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Fill ``draft.form_fields`` and ``draft.form_contact`` from the body text."""
    fields = read_form_fields(draft.lead.body_text)
    if not fields:
        return draft

    draft.form_fields = fields
    draft.form_contact = contact_from_fields(fields, policy.default_region)
    logger.debug(
        "read %d form fields from message %r", len(fields), draft.lead.message_id
    )
    return draft
