"""Tests for web-form field reading and the forms stage."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from leadparse.forms import contact_from_fields, forms_stage, read_form_fields
from leadparse.model import Lead, Provenance
from leadparse.pipeline import MessageDraft
from leadparse.policy import Policy


def _draft(body: str) -> MessageDraft:
    lead = Lead(
        received_at=datetime(2024, 3, 20, tzinfo=UTC),
        provenance=Provenance(
            raw_sha256=hashlib.sha256(body.encode()).hexdigest(),
            parser_version="test",
        ),
        body_text=body,
    )
    return MessageDraft(raw=body.encode(), lead=lead)


def test_forms_table_cells_with_pipe() -> None:
    fields = read_form_fields(
        "Name: | Marta Silva\nCompany: | Example Foods Lda\nPhone: | +351 21 123 4567\n"
    )
    assert fields == {
        "Name": "Marta Silva",
        "Company": "Example Foods Lda",
        "Phone": "+351 21 123 4567",
    }


def test_forms_label_alone_takes_next_line() -> None:
    fields = read_form_fields(
        "Nombre:\nAna\nApellido:\nRuiz\nCorreo:\nana@example.es\n"
    )
    assert fields == {"Nombre": "Ana", "Apellido": "Ruiz", "Correo": "ana@example.es"}
    contact = contact_from_fields(fields, "US")
    assert contact.given_name == "Ana"
    assert contact.family_name == "Ruiz"
    assert contact.full_name == "Ana Ruiz"
    assert contact.emails == ["ana@example.es"]


def test_forms_german_fields_and_multiline_message() -> None:
    draft = forms_stage(
        _draft(
            "Vorname: Jonas\nNachname: Weber\nE-Mail: Jonas.Weber@Example.de\n"
            "Telefon: 030 1234567\nFirma: Weber Logistik GmbH\n"
            "Funktion: Einkaufsleiter\nNachricht: Bitte ein Angebot\nfür 40 Paletten.\n"
        ),
        Policy(),
    )
    assert draft.form_fields["Nachricht"] == "Bitte ein Angebot\nfür 40 Paletten."
    contact = draft.form_contact
    assert contact is not None
    assert contact.full_name == "Jonas Weber"
    assert contact.company == "Weber Logistik GmbH"
    assert contact.role == "Einkaufsleiter"
    assert contact.emails == ["jonas.weber@example.de"]
    # The form email's domain (.de) sets the region before the policy default.
    assert contact.phones == ["+49301234567"]


def test_forms_french_fields_default_region() -> None:
    fields = read_form_fields(
        "Prénom : Claire\nNom : Martin\nCourriel : claire@example.com\n"
        "Téléphone : (415) 555-0134\nSociété : Martin SARL\n"
    )
    contact = contact_from_fields(fields, "US")
    assert contact.given_name == "Claire"
    assert contact.family_name == "Martin"
    assert contact.company == "Martin SARL"
    assert contact.phones == ["+14155550134"]


@pytest.mark.parametrize(
    "body",
    [
        "Subject: Renewal\nDate: Monday\n\nPlease renew our plan.",
        "Thanks!\n\nTom Hale\nPhone: +1 415 555 0134\nEmail: tom@example.com\n",
        "> Name: Quoted Person\n> Email: quoted@example.com\n> Message: hi\n",
        "Note: we are closed on Friday.\nCompany: Example Ltd\n",
    ],
)
def test_forms_ordinary_mail_is_not_form(body: str) -> None:
    assert read_form_fields(body) == {}
    assert forms_stage(_draft(body), Policy()).form_contact is None


def test_forms_name_split_into_parts() -> None:
    contact = contact_from_fields(
        {"Full name": "Marta Sofia Silva", "Email": "M.Silva@example.pt"}, "US"
    )
    assert contact.given_name == "Marta"
    assert contact.family_name == "Sofia Silva"
    assert contact.emails == ["m.silva@example.pt"]
    assert contact.phones == []
