"""Exceptions raised by leadparse.

Every exception derives from :class:`LeadparseError` and also from the nearest
built-in, so ``except ValueError`` keeps working for callers who do not import
leadparse's types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leadparse.model import Defect, Lead

__all__ = ["DefectError", "LeadparseError", "NotEmailError", "StageError"]

_PREVIEW_BYTES = 60


def preview(data: bytes) -> str:
    """Return a short ``repr`` of the first bytes of *data* for error messages."""
    head = data[:_PREVIEW_BYTES]
    suffix = "..." if len(data) > _PREVIEW_BYTES else ""
    return f"{head!r}{suffix}"


class LeadparseError(Exception):
    """Base class of every error leadparse raises."""


class NotEmailError(LeadparseError, ValueError):
    """The input has no RFC 5322 header block, so it is not an email message."""

    def __init__(self, data: bytes, reason: str) -> None:
        self.data_preview = preview(data)
        self.reason = reason
        super().__init__(
            f"input is not an email message: {reason} (input starts with "
            f"{self.data_preview}); pass the raw RFC 5322 bytes, headers first"
        )


class DefectError(LeadparseError, ValueError):
    """A strict policy found defects in the message.

    Attributes:
        defects: every defect recorded, in the order found.
        lead: the lead as parsed despite the defects.
    """

    def __init__(self, defects: list[Defect], lead: Lead) -> None:
        self.defects = defects
        self.lead = lead
        codes = ", ".join(sorted({d.code for d in defects}))
        super().__init__(
            f"message has {len(defects)} defect(s) under a strict policy: {codes}; "
            "parse with Policy(strict=False) to record them on the lead instead"
        )


class StageError(LeadparseError, TypeError):
    """A pipeline stage is missing, duplicated, or breaks the stage contract."""
