"""vCard parsing into Contact: 2.1 quoted-printable, 3.0, 4.0 and Apple groups."""

from __future__ import annotations

from leadparse._vcard import normalize_lines, parse_vcard


def test_vcard21_soft_break_at_column_zero() -> None:
    card = (
        b"BEGIN:VCARD\r\nVERSION:2.1\r\n"
        b"FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:J=C3=BCrgen M=C3=BCller-L=C3=BCdensch=\r\n"
        b"=65id\r\nTEL;WORK;VOICE:+49 30 7654321\r\nEND:VCARD\r\n"
    )

    result = parse_vcard(card, None, ["US"])

    assert result.contact is not None
    assert result.contact.full_name == "Jürgen Müller-Lüdenscheid"
    assert result.contact.phones == ["+49307654321"]
    assert result.dropped_lines == 0


def test_vcard21_latin1_quoted_printable() -> None:
    card = (
        b"BEGIN:VCARD\r\nVERSION:2.1\r\n"
        b"N;CHARSET=ISO-8859-1;QUOTED-PRINTABLE:Gr=FC=DFer;J=F6rg\r\n"
        b"TITLE;CHARSET=x-unknown;ENCODING=QUOTED-PRINTABLE:Verk=C3=A4ufer\r\n"
        b"END:VCARD\r\n"
    )

    result = parse_vcard(card, None, ["DE"])

    assert result.contact is not None
    assert result.contact.family_name == "Grüßer"
    assert result.contact.given_name == "Jörg"
    assert result.contact.full_name == "Jörg Grüßer"
    assert result.contact.role == "Verkäufer"


def test_vcard40_uri_phone_and_apple_groups() -> None:
    card = (
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Ana Lopez\r\nN:Lopez;Ana;;;\r\n"
        b"ORG:Acme Corp;Sales\r\nTEL;TYPE=work;VALUE=uri:tel:+1-415-555-0134\r\n"
        b"EMAIL:Ana@Acme.EXAMPLE\r\nitem1.URL:https://acme.example\r\n"
        b"item1.X-ABLabel:_$!<HomePage>!$_\r\n"
        b"item2.EMAIL;type=INTERNET:ana.l@acme.example\r\nEND:VCARD\r\n"
    )

    result = parse_vcard(card, "utf-8", ["US"])

    assert result.contact is not None
    assert result.contact.company == "Acme Corp"
    assert result.contact.emails == ["ana@acme.example", "ana.l@acme.example"]
    assert result.contact.phones == ["+14155550134"]
    assert result.contact.website == "https://acme.example"


def test_vcard_national_phone_uses_region() -> None:
    card = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Kim\r\nTEL:030 7654321\r\nEND:VCARD\r\n"

    result = parse_vcard(card, None, ["DE"])

    assert result.contact is not None
    assert result.contact.phones == ["+49307654321"]


def test_vcard_garbage_lines_counted() -> None:
    text, dropped = normalize_lines(
        "BEGIN:VCARD\nVERSION:3.0\n%%% junk\nFN:Kim\n folded tail\n<br>\nEND:VCARD\n"
    )

    assert dropped == 2
    assert text == "BEGIN:VCARD\nVERSION:3.0\nFN:Kim\n folded tail\nEND:VCARD\n"


def test_vcard_without_card_gives_no_contact() -> None:
    result = parse_vcard(b"hello\r\nworld\r\n", None, ["US"])

    assert result.contact is None
    assert result.dropped_lines == 2


def test_vcard_charset_with_nul_falls_back() -> None:
    from leadparse._vcard import decode_vcard_bytes

    assert decode_vcard_bytes("Jürgen".encode(), "utf\x00-8") == "Jürgen"
    assert decode_vcard_bytes(b"J\xfcrgen", "bogus\x00") == "Jürgen"
