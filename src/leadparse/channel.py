"""Channel stage: which inbound address the message reached, and its campaign."""

from __future__ import annotations

from leadparse._headers import parse_addresses, raw_header
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["channel_stage"]

# Headers that MTAs add to name the envelope recipient, most reliable first.
_RECIPIENT_HEADERS = ("x-original-to", "delivered-to", "envelope-to", "x-envelope-to")


def _source_address(draft: MessageDraft) -> str | None:
    if draft.envelope is not None and draft.envelope.rcpt_tos:
        return draft.envelope.rcpt_tos[0].strip().strip("<>").lower() or None
    if draft.message is not None:
        for name in _RECIPIENT_HEADERS:
            addresses, _ = parse_addresses(raw_header(draft.message, name))
            if addresses and addresses[0].email:
                return addresses[0].email
    for address in [*draft.lead.to, *draft.lead.cc]:
        if address.email:
            return address.email
    return None


@stage("channel")
def channel_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Fill ``channel``: the source address, its plus tag and the campaign.

    The campaign comes from ``policy.campaign_aliases`` (full address first,
    then local part without the tag); with no alias it is the plus tag.
    """
    channel = draft.lead.channel
    address = _source_address(draft)
    channel.source_address = address
    if not address or "@" not in address:
        return draft
    local, _, domain = address.rpartition("@")
    base, separator, tag = local.partition("+")
    channel.plus_tag = tag or None if separator else None
    aliases = {key.lower(): value for key, value in policy.campaign_aliases.items()}
    channel.campaign = (
        aliases.get(address)
        or aliases.get(f"{base}@{domain}")
        or aliases.get(local)
        or aliases.get(base)
        or channel.plus_tag
    )
    return draft
