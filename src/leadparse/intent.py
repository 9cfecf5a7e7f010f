"""Intent stage: label what the sender wants from their own words."""

from __future__ import annotations

import re
from functools import lru_cache

from leadparse._caseless import CaselessPattern, FoldedText, caseless
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["intent_stage"]


@lru_cache(maxsize=64)
def _compile(patterns: tuple[str, ...]) -> CaselessPattern:
    return caseless(re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE))


def intent_text(draft: MessageDraft, policy: Policy) -> str:
    """Return the text intent is read from: subject, new text, attachment text.

    Quoted history and signatures are excluded, so a prospect's earlier words
    or a footer slogan cannot create a label.
    """
    lead = draft.lead
    limit = policy.limits.max_intent_chars
    pieces = [(lead.subject or "")[:limit], lead.stripped_text[:limit]]
    pieces.extend(item.text[:limit] for item in lead.attachments if item.text)
    return "\n".join(pieces)


@stage("intent")
def intent_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Fill ``extracted.intent`` in vocabulary order."""
    text = FoldedText(intent_text(draft, policy))
    labels = []
    for label, patterns in policy.intent_vocabulary.items():
        if patterns and _compile(tuple(patterns)).found_in(text):
            labels.append(label)
    draft.lead.extracted.intent = labels
    return draft
