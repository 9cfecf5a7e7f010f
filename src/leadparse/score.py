"""Score stage: a 0-100 lead score with the reason for every point."""

from __future__ import annotations

import re

from leadparse.model import ScoreReason
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["score_stage"]

_SENIOR_ROLE = re.compile(
    r"\b(?:chief|c[etfoi]o|vp|vice president|head|director|president|founder|"
    r"owner|partner|geschäftsführer|leiter|directeur|director[a]?|gerente)\b",
    re.IGNORECASE,
)


@stage("score")
def score_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Fill ``extracted.lead_score`` and ``score_reasons``.

    Only mail classified as ``lead`` scores above zero. Points come from
    intent labels (``policy.intent_weights``), a business address, a phone
    number, a known company, a senior role and a message of some substance.
    """
    lead = draft.lead
    extracted = lead.extracted
    reasons: list[ScoreReason] = []

    if lead.classification.kind != "lead":
        reasons.append(
            ScoreReason(
                code="not_a_lead",
                points=0,
                detail=f"classified as {lead.classification.kind}",
            )
        )
        extracted.lead_score = 0
        extracted.score_reasons = reasons
        return draft

    for label in extracted.intent:
        points = policy.intent_weights.get(label, 0)
        if points:
            reasons.append(ScoreReason(code=f"intent_{label}", points=points))

    domain = (
        extracted.email.rsplit("@", 1)[1]
        if extracted.email and "@" in extracted.email
        else None
    )
    if domain and domain not in policy.free_mail_domains:
        reasons.append(ScoreReason(code="business_email", points=10, detail=domain))
    elif domain:
        reasons.append(ScoreReason(code="free_mail_address", points=-5, detail=domain))
    if extracted.phone_e164:
        reasons.append(ScoreReason(code="phone_given", points=10))
    if extracted.company and extracted.sources.get("company") != "domain":
        reasons.append(ScoreReason(code="company_given", points=5))
    if extracted.role:
        senior = bool(_SENIOR_ROLE.search(extracted.role))
        reasons.append(
            ScoreReason(
                code="senior_role" if senior else "role_given",
                points=10 if senior else 5,
                detail=extracted.role,
            )
        )
    words = len(lead.stripped_text.split())
    if words >= 20:
        reasons.append(
            ScoreReason(code="detailed_message", points=5, detail=f"{words} words")
        )
    elif words < 3 and not lead.attachments:
        reasons.append(ScoreReason(code="empty_message", points=-10))

    total = sum(reason.points for reason in reasons)
    extracted.lead_score = max(0, min(100, total))
    extracted.score_reasons = reasons
    return draft
