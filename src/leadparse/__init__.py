"""leadparse: turn raw inbound email into clean, qualified sales-lead records.

>>> from leadparse import parse_lead
>>> lead = parse_lead(raw_bytes)
>>> payload = lead.model_dump(mode="json")
"""

from __future__ import annotations

import logging

from leadparse._version import __version__
from leadparse.api import parse_lead
from leadparse.errors import DefectError, LeadparseError, NotEmailError, StageError
from leadparse.model import (
    Address,
    Attachment,
    Bounce,
    Channel,
    Classification,
    Contact,
    Defect,
    Extracted,
    Forwarded,
    Lead,
    Provenance,
    ScoreReason,
    Sender,
    Threading,
)
from leadparse.pipeline import (
    BodyCandidate,
    Envelope,
    MessageDraft,
    Pipeline,
    Stage,
    registered_stages,
    stage,
)
from leadparse.policy import Limits, Policy

__all__ = [
    "Address",
    "Attachment",
    "BodyCandidate",
    "Bounce",
    "Channel",
    "Classification",
    "Contact",
    "Defect",
    "DefectError",
    "Envelope",
    "Extracted",
    "Forwarded",
    "Lead",
    "LeadparseError",
    "Limits",
    "MessageDraft",
    "NotEmailError",
    "Pipeline",
    "Policy",
    "Provenance",
    "ScoreReason",
    "Sender",
    "Stage",
    "StageError",
    "Threading",
    "__version__",
    "parse_lead",
    "registered_stages",
    "stage",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
