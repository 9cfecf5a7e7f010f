from __future__ import annotations

import random
import re
import string

import pytest

from leadparse import _bounce, classify, intent, signature
from leadparse._caseless import FoldedText, caseless
from leadparse._vocabulary import DEFAULT_INTENT_VOCABULARY

PIPELINE_PATTERNS = [
    classify._BOUNCE_BODY,
    classify._OOO_BODY,
    classify._OOO_NOTICE,
    classify._RECEIPT_PHRASE,
    classify._CHALLENGE,
    signature._PHONE_CUE,
    *(pattern for _reason, pattern in _bounce._REASON_PATTERNS),
    *(
        re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        for patterns in DEFAULT_INTENT_VOCABULARY.values()
    ),
]

# Texts that match some of the patterns, in mixed case and at line edges.
SAMPLES = [
    "",
    "Could we get a DEMO and Pricing for 250 Seats?",
    "I AM OUT OF THE OFFICE until Monday.\nBack on the 3rd.",
    "550 5.1.1 <a@example.org>: RecipientNotFound",
    "Mailbox is FULL; Over Quota",
    "Please verify you're a human: sender verification",
    "We have received your request (Ticket #123)",
    "Call me on +1 555 0100, or my Mobile",
    "telephone\ntel\nTELEFON",
    "request for PROPOSAL; RFP due; Ausschreibung",
    "schedule a call / book a meeting / quick call",
    "SSO, SAML and an SLA for on-premises",
    "undeliverable: delivery to the following recipient failed",
]


def _random_ascii(rng: random.Random) -> str:
    words = [
        "demo",
        "price",
        "quote",
        "trial",
        "rfp",
        "partner",
        "call",
        "away",
        "office",
        "failed",
        "user",
        "unknown",
        "mailbox",
        "full",
        "spam",
        "ticket",
        "received",
        "verify",
        "human",
    ]
    pieces = []
    for _ in range(rng.randint(0, 30)):
        if rng.random() < 0.6:
            word = rng.choice(words)
            pieces.append(
                "".join(ch.upper() if rng.random() < 0.3 else ch for ch in word)
            )
        else:
            pieces.append(
                "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 6)))
            )
    return rng.choice([" ", "\n", "", "-"]).join(pieces)


@pytest.mark.parametrize("pattern", PIPELINE_PATTERNS, ids=lambda p: p.pattern[:30])
def test_caseless_twin_matches_original(pattern: re.Pattern[str]) -> None:
    fast = caseless(pattern)
    rng = random.Random(pattern.pattern)
    texts = SAMPLES + [_random_ascii(rng) for _ in range(400)]

    assert fast.twin is not None
    for text in texts:
        assert fast.found_in(FoldedText(text)) == (pattern.search(text) is not None)


@pytest.mark.parametrize(
    "source",
    [
        r"(?-i:Foo)",
        r"[!-^]x",
        r"\N{LATIN SMALL LETTER A}",
        "ſ",
        "ı",
        r"[\u0100-\u017f]",
        r"(?i)abc",
        "İ",
    ],
)
def test_caseless_rejects_inexact_twin(source: str) -> None:
    fast = caseless(re.compile(source, re.IGNORECASE))

    assert fast.twin is None
    assert fast.required is None


def test_caseless_without_ignorecase_has_no_twin() -> None:
    fast = caseless(re.compile("abc"))

    assert fast.twin is None
    assert fast.found_in(FoldedText("xabcx"))
    assert not fast.found_in(FoldedText("ABC"))


def test_caseless_kelvin_sign_twin_matches_ascii() -> None:
    fast = caseless(re.compile("\u212a", re.IGNORECASE))

    assert fast.twin is not None
    assert fast.found_in(FoldedText("k"))
    assert fast.found_in(FoldedText("K"))
    assert not fast.found_in(FoldedText("x"))


def test_caseless_non_ascii_text_uses_original() -> None:
    # Under re.IGNORECASE the long s (U+017F) matches "s".
    fast = caseless(re.compile(r"\bseats\b", re.IGNORECASE))

    assert fast.required == ("seats",)
    assert fast.found_in(FoldedText("250 \u017feats"))
    assert fast.found_in(FoldedText("250 SEATS"))
    assert not fast.found_in(FoldedText("250 sets"))


def test_caseless_required_literals_of_alternation() -> None:
    fast = caseless(re.compile(r"\b(?:quick|short) call\b|\bTermin\b", re.IGNORECASE))

    assert fast.required == ("quick", "short", "termin")
    assert fast.found_in(FoldedText("a Short Call"))
    assert not fast.found_in(FoldedText("a short chat"))


def test_caseless_non_ascii_only_literals_skip_ascii_text() -> None:
    fast = caseless(re.compile("デモ|演示", re.IGNORECASE))

    assert fast.required == ()
    assert not fast.found_in(FoldedText("demo"))
    assert fast.found_in(FoldedText("デモ"))


def test_intent_compile_caches_caseless_pattern() -> None:
    patterns = DEFAULT_INTENT_VOCABULARY["pricing"]

    assert intent._compile(patterns) is intent._compile(patterns)
    assert intent._compile(patterns).twin is not None
