"""Text from PDF attachments with pdfminer.six, bounded in pages, bytes and time."""

from __future__ import annotations

import io
import logging
import re
import time
import warnings
import zlib
from dataclasses import dataclass, field

from pdfminer.converter import TextConverter
from pdfminer.layout import LAParams
from pdfminer.pdfdocument import (
    PDFEncryptionError,
    PDFNoValidXRefWarning,
    PDFPasswordIncorrect,
)
from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
from pdfminer.pdfpage import PDFPage
from pdfminer.psexceptions import PSException

__all__ = ["PdfText", "extract_pdf_text", "inflated_size_exceeds", "is_pdf"]

logger = logging.getLogger(__name__)

# "stream" keyword then its end-of-line (ISO 32000-1 section 7.3.8.1), not the
# tail of "endstream".
_STREAM_START = re.compile(rb"(?<!end)stream\r?\n")
_INFLATE_STEP = 1 << 20


def inflated_size_exceeds(data: bytes, limit: int) -> bool:
    """Tell whether the PDF's Flate streams inflate to more than *limit* bytes.

    pdfminer inflates a stream whole before reading it, so a small file can
    expand to gigabytes. Each stream is inflated here in 1 MiB steps and
    thrown away; streams that are not zlib data are left to pdfminer. The
    work is bounded by the file size plus *limit* bytes of output.
    NOTE: only one level of Flate is measured; a stream compressed twice
    counts at its once-inflated size.
    """
    total = 0
    position = 0
    view = memoryview(data)
    while True:
        match = _STREAM_START.search(data, position)
        if match is None:
            return False
        end = data.find(b"endstream", match.end())
        end = len(data) if end < 0 else end
        inflater = zlib.decompressobj()
        pending = view[match.end() : end]
        try:
            while pending and total <= limit and not inflater.eof:
                output = inflater.decompress(pending, _INFLATE_STEP)
                if not output and len(inflater.unconsumed_tail) == len(pending):
                    break
                total += len(output)
                pending = memoryview(inflater.unconsumed_tail)
        except zlib.error:
            pass
        if total > limit:
            return True
        position = end


# PDF 1.7 (ISO 32000-1) section 7.5.5: the file ends with "%%EOF"; writers may
# append a line break or a few bytes of padding after it.
_EOF_MARKER = b"%%EOF"
_EOF_WINDOW = 1024


@dataclass
class PdfText:
    """Text read from a PDF and the problems found, as (code, message) pairs."""

    text: str = ""
    defects: list[tuple[str, str]] = field(default_factory=list)


def is_pdf(data: bytes) -> bool:
    """Tell whether *data* starts like a PDF file (``%PDF-`` within 1 KiB)."""
    return b"%PDF-" in data[:1024]


def extract_pdf_text(
    data: bytes,
    *,
    max_pages: int,
    max_chars: int,
    deadline: float,
    max_bytes: int = 32 * 1024 * 1024,
    max_inflated_bytes: int = 64 * 1024 * 1024,
) -> PdfText:
    """Extract the text of the first pages of a PDF; never raises on bad input.

    Args:
        data: the PDF file.
        max_pages: pages read at most; a defect notes when the file has more.
        max_chars: characters kept.
        deadline: ``time.monotonic()`` value after which no further page is
            read. NOTE: a single page is never interrupted, so one page with a
            huge content stream can overrun the deadline.
        max_bytes: PDFs larger than this are not opened.
        max_inflated_bytes: PDFs whose streams inflate to more are not read.
    """
    result = PdfText()
    if len(data) > max_bytes:
        result.defects.append(
            (
                "pdf_too_large",
                (
                    f"PDF of {len(data)} bytes is larger than limits.max_pdf_bytes="
                    f"{max_bytes}; text not extracted"
                ),
            )
        )
        return result
    if inflated_size_exceeds(data, max_inflated_bytes):
        result.defects.append(
            (
                "pdf_too_large",
                (
                    "PDF streams inflate to more than limits.max_pdf_inflated_bytes="
                    f"{max_inflated_bytes}; "
                    "text not extracted"
                ),
            )
        )
        return result
    if _EOF_MARKER not in data[-_EOF_WINDOW:]:
        result.defects.append(
            ("pdf_truncated", "PDF has no %%EOF marker at its end; text may be partial")
        )

    output = io.StringIO()
    manager = PDFResourceManager(caching=True)
    device = TextConverter(manager, output, laparams=LAParams())
    interpreter = PDFPageInterpreter(manager, device)
    try:
        with warnings.catch_warnings(record=True) as caught:
            # pdfminer warns (PDFNoValidXRefWarning) when it rebuilds a broken
            # cross-reference table; that becomes a defect, not a warning.
            warnings.simplefilter("always")
            _read_pages(
                data, interpreter, output, max_pages, max_chars, deadline, result
            )
        if any(issubclass(w.category, PDFNoValidXRefWarning) for w in caught):
            result.defects.append(
                ("pdf_invalid_xref", "PDF cross-reference table is invalid; rebuilt")
            )
    except PDFPasswordIncorrect:
        result.defects.append(
            ("pdf_encrypted", "PDF is encrypted with a password; text not extracted")
        )
    except PDFEncryptionError as exc:
        result.defects.append(
            ("pdf_encrypted", f"PDF encryption is not supported: {str(exc)[:200]}")
        )
    except (
        PSException,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        EOFError,
        AssertionError,
        RecursionError,
    ) as exc:
        # pdfminer reports broken files through its own exceptions and also
        # through plain built-in ones raised deep in its parser.
        logger.debug("pdfminer failed on a PDF", exc_info=True)
        result.defects.append(
            ("pdf_invalid", f"PDF could not be read: {type(exc).__name__}")
        )
    finally:
        device.close()
    result.text = output.getvalue()[:max_chars].strip()
    return result


def _read_pages(
    data: bytes,
    interpreter: PDFPageInterpreter,
    output: io.StringIO,
    max_pages: int,
    max_chars: int,
    deadline: float,
    result: PdfText,
) -> None:
    pages = PDFPage.get_pages(io.BytesIO(data), maxpages=max_pages + 1)
    for number, page in enumerate(pages, start=1):
        if number > max_pages:
            result.defects.append(
                ("pdf_page_limit", f"PDF has more than {max_pages} pages; rest skipped")
            )
            return
        if time.monotonic() > deadline:
            result.defects.append(
                ("pdf_time_limit", f"PDF reading stopped at page {number}: time limit")
            )
            return
        interpreter.process_page(page)
        if output.tell() >= max_chars:
            return
