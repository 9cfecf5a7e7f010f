"""Attachment stage: list non-body parts with checksums."""

from __future__ import annotations

from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy


@stage("attachments")
def attachments_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """List nothing yet."""
    # TODO: attachment extraction.
    return draft
