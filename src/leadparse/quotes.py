"""Quote stage: split the sender's new text from quoted history."""

from __future__ import annotations

from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy


@stage("quotes")
def quotes_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Copy the body to ``message_text``."""
    # TODO: detect quoted history; until then nothing is removed.
    draft.lead.message_text = draft.lead.body_text
    return draft
