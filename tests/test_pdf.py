"""PDF text extraction: limits and broken files become defects."""

from __future__ import annotations

import time
from pathlib import Path

from leadparse._pdf import extract_pdf_text, inflated_size_exceeds

MAX_PDF_BYTES = 32 * 1024 * 1024

ATTACHMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "attachments"


def _extract(
    name: str, *, max_pages: int = 20, max_chars: int = 10_000, seconds: float = 30.0
):  # type: ignore[no-untyped-def]
    data = (ATTACHMENTS / name).read_bytes()
    return extract_pdf_text(
        data,
        max_pages=max_pages,
        max_chars=max_chars,
        deadline=time.monotonic() + seconds,
    )


def test_pdf_text_single_page() -> None:
    result = _extract("quote.pdf")

    assert result.text == "Quote request 2024-113 for 40 licenses"
    assert result.defects == []


def test_pdf_text_char_limit() -> None:
    result = _extract("quote.pdf", max_chars=13)

    assert result.text == "Quote request"


def test_pdf_truncated_defects() -> None:
    result = _extract("truncated.pdf")

    assert result.text == ""
    assert [code for code, _message in result.defects] == [
        "pdf_truncated",
        "pdf_invalid",
    ]


def test_pdf_encrypted_defect() -> None:
    result = _extract("encrypted.pdf")

    assert result.text == ""
    assert result.defects == [
        ("pdf_encrypted", "PDF is encrypted with a password; text not extracted")
    ]


def test_pdf_page_limit() -> None:
    result = _extract("three_pages.pdf", max_pages=1)

    assert result.text == "Page one text"
    assert result.defects == [
        ("pdf_page_limit", "PDF has more than 1 pages; rest skipped")
    ]


def test_pdf_deadline_passed() -> None:
    result = _extract("three_pages.pdf", seconds=-1.0)

    assert result.text == ""
    assert result.defects == [
        ("pdf_time_limit", "PDF reading stopped at page 1: time limit")
    ]


def test_pdf_too_large_not_opened() -> None:
    result = extract_pdf_text(
        b"%PDF-1.4\n" + b"0" * MAX_PDF_BYTES,
        max_pages=1,
        max_chars=10,
        deadline=time.monotonic() + 5,
    )

    assert result.text == ""
    assert [code for code, _message in result.defects] == ["pdf_too_large"]


def test_pdf_garbage_bytes() -> None:
    result = extract_pdf_text(
        b"%PDF-1.7\n\x00\xff garbage %%EOF\n",
        max_pages=1,
        max_chars=10,
        deadline=time.monotonic() + 5,
    )

    assert result.text == ""
    assert [code for code, _message in result.defects] == ["pdf_invalid"]


def _flate_pdf(inflated: bytes) -> bytes:
    import zlib

    stream = zlib.compress(inflated, 9)
    return (
        b"%PDF-1.4\n1 0 obj\n<< /Length "
        + str(len(stream)).encode()
        + b" /Filter /FlateDecode >>\nstream\n"
        + stream
        + b"\nendstream\nendobj\ntrailer\n<< >>\n%%EOF\n"
    )


def test_inflated_size_detects_flate_bomb() -> None:
    data = _flate_pdf(b" " * (20 * 1024 * 1024))

    assert len(data) < 100_000
    assert inflated_size_exceeds(data, 10 * 1024 * 1024)
    assert not inflated_size_exceeds(data, 30 * 1024 * 1024)


def test_flate_bomb_pdf_not_read() -> None:
    import time

    data = _flate_pdf(b" " * (20 * 1024 * 1024))

    result = extract_pdf_text(
        data,
        max_pages=5,
        max_chars=1000,
        deadline=time.monotonic() + 10,
        max_inflated_bytes=1024 * 1024,
    )

    assert result.text == ""
    assert [code for code, _ in result.defects] == ["pdf_too_large"]
