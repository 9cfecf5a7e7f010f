"""Signature stage: split the signature from the sender's new text."""

from __future__ import annotations

from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy


@stage("signature")
def signature_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Copy ``message_text`` to ``stripped_text``."""
    # TODO: detect signatures; until then nothing is removed.
    draft.lead.stripped_text = draft.lead.message_text
    return draft
