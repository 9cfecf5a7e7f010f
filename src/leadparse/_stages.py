"""The built-in stages in their default order."""

from __future__ import annotations

from leadparse.attachments import attachments_stage
from leadparse.body import body_stage
from leadparse.channel import channel_stage
from leadparse.classify import classify_stage
from leadparse.contact import contact_stage
from leadparse.decode import decode_stage
from leadparse.forms import forms_stage
from leadparse.identity import identity_stage
from leadparse.intent import intent_stage
from leadparse.normalize import normalize_stage
from leadparse.pipeline import Stage
from leadparse.quotes import quotes_stage
from leadparse.score import score_stage
from leadparse.signature import signature_stage

DEFAULT_STAGES: tuple[Stage, ...] = (
    decode_stage,
    body_stage,
    forms_stage,
    quotes_stage,
    signature_stage,
    attachments_stage,
    classify_stage,
    contact_stage,
    normalize_stage,
    channel_stage,
    intent_stage,
    score_stage,
    identity_stage,
)
