"""Shared test helpers: fixture paths and the public corpus location."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CORPUS = ROOT.parent / "shared" / "corpus"


def corpus_or_skip(*parts: str) -> Path:
    """Return a path inside the public corpus, or skip when it is absent."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"public email corpus not found at {path}; it lives beside the repo"
        )
    return path


def message(*lines: str, body: str = "Hello") -> bytes:
    """Build a small message from header lines and a body, with CRLF endings."""
    return ("\r\n".join([*lines, "", body]) + "\r\n").encode("utf-8")
