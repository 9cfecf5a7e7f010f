"""Body stage: choose text/plain when it has content, else render the HTML."""

from __future__ import annotations

from html import escape

from leadparse._html import flat_text, html_depth, html_to_text, sanitize_html
from leadparse._uuencode import split_uuencoded
from leadparse.pipeline import MessageDraft, stage
from leadparse.policy import Policy

__all__ = ["body_stage"]


def _bounded_html(draft: MessageDraft, policy: Policy) -> str:
    html = "\n".join(part.text for part in draft.html_parts)
    limit = policy.limits.max_html_bytes
    if len(html) > limit:
        draft.add_defect(
            "html_too_large",
            f"HTML body has {len(html)} characters, more than "
            f"limits.max_html_bytes={limit}; the rest was not rendered",
            draft.html_parts[0].path,
        )
        html = html[:limit]
    return html


@stage("body")
def body_stage(draft: MessageDraft, policy: Policy) -> MessageDraft:
    """Fill ``body_text``, ``body_source`` and the sanitized ``body_html``."""
    lead = draft.lead
    plain = "\n".join(part.text for part in draft.plain_parts)
    html = _bounded_html(draft, policy) if draft.html_parts else ""
    too_deep = bool(html) and html_depth(html) > policy.limits.max_html_depth
    if too_deep:
        # libxml2 drops content nested past its own depth limit, and the
        # sanitizer slows down sharply on deep trees, so such markup is read
        # by its tags alone and shown as escaped text.
        draft.add_defect(
            "html_too_deep",
            f"HTML nests deeper than limits.max_html_depth="
            f"{policy.limits.max_html_depth}; rendered from its tags alone",
            draft.html_parts[0].path,
        )

    if "begin " in plain:
        plain, draft.uuencoded_text = split_uuencoded(plain)
    if plain.strip():
        lead.body_text = plain.strip("\n")
        lead.body_source = "text/plain"
    elif html.strip() and too_deep:
        lead.body_text = flat_text(html)
        lead.body_source = "text/html"
    elif html.strip():
        rendered = html_to_text(html)
        lead.body_text = rendered.text
        lead.body_source = "text/html"
        draft.html_quote_start = rendered.quote_start
    elif draft.plain_parts:
        lead.body_source = "text/plain"

    if html.strip() and too_deep:
        lead.body_html = "<pre>" + escape(flat_text(html)) + "</pre>"
    elif html.strip():
        lead.body_html = sanitize_html(html)

    limit = policy.limits.max_text_chars
    if len(lead.body_text) > limit:
        draft.add_defect(
            "text_too_large",
            f"body text has {len(lead.body_text)} characters, more than "
            f"limits.max_text_chars={limit}; later stages read only the start",
        )
    return draft
