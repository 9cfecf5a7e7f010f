"""The stage pipeline: an ordered list of named stages run over one message.

A stage is any callable ``stage(draft, policy) -> draft`` with a ``name``
attribute. It reads and fills the :class:`MessageDraft`, treats the policy as
read-only, and does no network or disk I/O of its own (attachment storage goes
through ``policy.attachment_store``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from leadparse.errors import StageError
from leadparse.model import Address, Contact, Defect, Lead
from leadparse.policy import Policy

__all__ = [
    "ENTRY_POINT_GROUP",
    "BodyCandidate",
    "Envelope",
    "MessageDraft",
    "Pipeline",
    "Stage",
    "registered_stages",
    "stage",
]

ENTRY_POINT_GROUP = "leadparse.stages"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: MAIL FROM and RCPT TO addresses as the server saw them."""

    mail_from: str | None = None
    rcpt_tos: tuple[str, ...] = ()


@dataclass
class BodyCandidate:
    """A decoded text part that may become the body."""

    path: str
    content_type: str
    text: str


@dataclass(eq=False)
class MessageDraft:
    """The message being built: parsed MIME, intermediate results and the lead.

    Stages communicate through these fields. ``extras`` is free for custom
    stages; keys should be prefixed with the stage's package name.
    """

    raw: bytes
    lead: Lead
    envelope: Envelope | None = None
    message: Message | None = None
    """The MIME tree, parsed with the stdlib ``email`` compat32 policy."""

    plain_parts: list[BodyCandidate] = field(default_factory=list)
    html_parts: list[BodyCandidate] = field(default_factory=list)
    attachment_parts: list[tuple[str, Message]] = field(default_factory=list)
    """Non-body parts with their MIME path, in tree order."""

    uuencoded_text: str = ""
    """uuencoded blocks cut out of the body text; the attachment stage reads them."""

    html_quote_start: int | None = None
    """Offset in ``lead.body_text`` where HTML quote markup began, if any."""

    forwarded_text: str | None = None
    """The forwarded message's body, when the message forwards another one."""

    forwarded_sender: Address | None = None
    """The original sender of a forwarded message, credited as the lead."""

    signature_contact: Contact | None = None
    """Contact details read from the sender's signature."""

    form_fields: dict[str, str] = field(default_factory=dict)
    """``Field: value`` pairs read from a web-form notification."""

    form_contact: Contact | None = None
    """Contact details read from web-form fields."""

    extras: dict[str, Any] = field(default_factory=dict)
    deadline: float = float("inf")
    """``time.monotonic()`` value after which optional stages are skipped."""

    def add_defect(self, code: str, message: str, part: str | None = None) -> None:
        """Record a defect on the lead, once per code, message and part."""
        # Messages can quote raw input, whose undecodable bytes arrive as lone
        # surrogates that no JSON encoder accepts.
        message = replace_surrogates(message)
        defect = Defect(code=code, message=message, part=part)
        if defect not in self.lead.defects:
            self.lead.defects.append(defect)


_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """Replace lone surrogates, which no UTF-8 encoder accepts, by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


@runtime_checkable
class Stage(Protocol):
    """The stage contract: take the draft and a read-only policy, return the draft."""

    name: str

    def __call__(self, draft: MessageDraft, policy: Policy) -> MessageDraft: ...


StageFunction = Callable[[MessageDraft, Policy], MessageDraft]


class _NamedStage:
    def __init__(self, name: str, func: StageFunction, always_run: bool) -> None:
        self.name = name
        self.always_run = always_run
        self._func = func
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, draft: MessageDraft, policy: Policy) -> MessageDraft:
        return self._func(draft, policy)

    def __repr__(self) -> str:
        return f"<stage {self.name!r}>"


def stage(
    name: str, *, always_run: bool = False
) -> Callable[[StageFunction], _NamedStage]:
    """Turn a function ``(draft, policy) -> draft`` into a named stage.

    Args:
        name: the stage's name in a pipeline; unique within one pipeline.
        always_run: run the stage even after the time limit has passed.
    """

    def decorate(func: StageFunction) -> _NamedStage:
        return _NamedStage(name, func, always_run)

    return decorate


def registered_stages() -> dict[str, Stage]:
    """Load the stages that installed packages register in ``leadparse.stages``.

    An entry point may name a stage object, or a zero-argument factory that
    returns one. An entry point that fails to load is logged and skipped.
    """
    found: dict[str, Stage] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
            obj = loaded if isinstance(loaded, Stage) else loaded()
        except Exception:
            logger.exception("failed to load stage entry point %r", point.value)
            continue
        if not isinstance(obj, Stage):
            logger.error(
                "entry point %r is not a stage: it must be callable with a name",
                point.value,
            )
            continue
        found[point.name] = obj
    return found


class Pipeline:
    """An ordered list of uniquely named stages."""

    def __init__(self, stages: Iterable[Stage] = ()) -> None:
        self._stages: list[Stage] = []
        for item in stages:
            self.append(item)

    @classmethod
    def default(cls, *, plugins: bool = False) -> Pipeline:
        """Build the built-in pipeline.

        Args:
            plugins: also add every stage registered under ``leadparse.stages``,
                placed by its ``after`` or ``before`` attribute (a stage name),
                else before the final ``identity`` stage.
        """
        from leadparse._stages import DEFAULT_STAGES

        pipeline = cls(DEFAULT_STAGES)
        if plugins:
            for item in registered_stages().values():
                after = getattr(item, "after", None)
                before = getattr(item, "before", None)
                if after:
                    pipeline.insert_after(after, item)
                elif before:
                    pipeline.insert_before(before, item)
                else:
                    pipeline.insert_before("identity", item)
        return pipeline

    @property
    def names(self) -> list[str]:
        """Stage names in run order."""
        return [item.name for item in self._stages]

    def __iter__(self) -> Iterator[Stage]:
        return iter(list(self._stages))

    def __len__(self) -> int:
        return len(self._stages)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __repr__(self) -> str:
        return f"Pipeline({self.names!r})"

    def copy(self) -> Pipeline:
        """Return an independent pipeline with the same stages."""
        return Pipeline(self._stages)

    def get(self, name: str) -> Stage:
        """Return the stage called *name*."""
        return self._stages[self._index(name)]

    def append(self, item: Stage) -> Pipeline:
        """Add *item* as the last stage."""
        self._check_new(item)
        self._stages.append(item)
        return self

    def insert_before(self, name: str, item: Stage) -> Pipeline:
        """Insert *item* just before the stage called *name*."""
        self._check_new(item)
        self._stages.insert(self._index(name), item)
        return self

    def insert_after(self, name: str, item: Stage) -> Pipeline:
        """Insert *item* just after the stage called *name*."""
        self._check_new(item)
        self._stages.insert(self._index(name) + 1, item)
        return self

    def replace(self, name: str, item: Stage) -> Pipeline:
        """Put *item* where the stage called *name* was."""
        index = self._index(name)
        if item.name != name and item.name in self.names:
            raise StageError(f"a stage named {item.name!r} is already in {self!r}")
        _check_contract(item)
        self._stages[index] = item
        return self

    def remove(self, name: str) -> Pipeline:
        """Remove the stage called *name*."""
        del self._stages[self._index(name)]
        return self

    def run(self, draft: MessageDraft, policy: Policy) -> MessageDraft:
        """Run every stage in order and return the finished draft.

        A stage that raises does not stop the run: the exception becomes a
        ``stage_failed`` defect and the next stage gets the draft as it was.
        Past ``draft.deadline`` only stages marked ``always_run`` still run.
        """
        skipped: list[str] = []
        for item in self._stages:
            if time.monotonic() > draft.deadline and not getattr(
                item, "always_run", False
            ):
                skipped.append(item.name)
                continue
            try:
                result = item(draft, policy)
            except Exception as exc:
                logger.warning(
                    "stage %r failed on message %r",
                    item.name,
                    draft.lead.message_id,
                    exc_info=True,
                )
                draft.add_defect(
                    "stage_failed",
                    f"stage {item.name!r} raised {type(exc).__name__}: "
                    f"{str(exc)[:200]}",
                )
                continue
            if not isinstance(result, MessageDraft):
                raise StageError(
                    f"stage {item.name!r} returned {type(result).__name__}; "
                    "a stage must return the MessageDraft it was given"
                )
            draft = result
            draft.lead.provenance.stages.append(item.name)
        if skipped:
            draft.add_defect(
                "time_limit_exceeded",
                "parse passed limits.max_seconds; skipped stages: "
                + ", ".join(skipped),
            )
        return draft

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise StageError(
                f"no stage named {name!r}; stages are {', '.join(self.names)}"
            ) from None

    def _check_new(self, item: Stage) -> None:
        _check_contract(item)
        if item.name in self.names:
            raise StageError(f"a stage named {item.name!r} is already in {self!r}")


def _check_contract(item: object) -> None:
    if not isinstance(item, Stage) or not isinstance(getattr(item, "name", None), str):
        raise StageError(
            f"{item!r} is not a stage: a stage is a callable (draft, policy) -> draft "
            "with a str 'name' attribute; decorate a function with @leadparse.stage"
        )
