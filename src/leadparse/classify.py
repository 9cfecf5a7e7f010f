"""Classification stage: lead, auto-reply, bounce or bulk mail."""

from __future__ import annotations

from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy


@stage("classify")
def classify_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Leave the default kind ``lead``."""
    # TODO: classification rules.
    return draft
