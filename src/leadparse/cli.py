"""The ``leadparse`` command line."""

from __future__ import annotations

import importlib
import itertools
import json
import mailbox
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

import click

from leadparse._version import __version__
from leadparse.api import parse_lead
from leadparse.errors import LeadparseError
from leadparse.model import Lead

__all__ = ["main"]

_SERVER_COMMANDS = (
    "serve",
    "reparse",
    "purge",
    "forget",
    "leads",
    "stats",
    "dns-records",
)


@dataclass
class _Item:
    """One message to parse, or a source that could not be read."""

    label: str
    raw: bytes | None = None
    error: str | None = None


# An mbox envelope line: "From " then a sender and a ctime-style date, as in
# "From ann@example.org Tue Mar  5 09:14:22 2024" (RFC 4155 section 2).
_ENVELOPE = re.compile(
    rb"^From \S+ +.*\b\d{1,2}:\d{2}(?::\d{2})?\b.*\b\d{4}\b[^\r\n]*\r?\n?$"
)


def _is_envelope(line: bytes, previous: bytes | None) -> bool:
    # A separator starts the data or follows a blank line; a body line that
    # merely begins with "From " is not one.
    at_start = previous is None or not previous.strip()
    return at_start and _ENVELOPE.match(line) is not None


def _looks_like_mbox(data: bytes) -> bool:
    if not data.startswith(b"From "):
        return False
    previous: bytes | None = None
    separators = 0
    for line in data.splitlines(keepends=True):
        if _is_envelope(line, previous):
            separators += 1
            if separators > 1:
                return True
        previous = line
    return False


def _split_mbox_bytes(label: str, data: bytes) -> Iterator[_Item]:
    # mboxrd framing: an envelope line opens a message; ">From " lines inside
    # bodies were quoted by the writer and are unquoted here.
    messages: list[list[bytes]] = []
    previous: bytes | None = None
    for line in data.splitlines(keepends=True):
        if _is_envelope(line, previous):
            messages.append([])
            previous = line
            continue
        previous = line
        if not messages:
            messages.append([])
        if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
            line = line[1:]
        messages[-1].append(line)
    for index, lines in enumerate(messages, start=1):
        yield _Item(f"{label}#{index}", b"".join(lines))


def _maildir_items(path: Path) -> Iterator[_Item]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.iterkeys()):
        try:
            yield _Item(f"{path}/{key}", box.get_bytes(key))
        except OSError as exc:
            yield _Item(f"{path}/{key}", error=f"cannot read: {exc.strerror or exc}")


def _file_items(path: Path) -> Iterator[_Item]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield _Item(str(path), error=f"cannot read: {exc.strerror or exc}")
        return
    if path.suffix.lower() == ".mbox" or _looks_like_mbox(data):
        yield from _split_mbox_bytes(str(path), data)
    else:
        yield _Item(str(path), data)


def _is_maildir(path: Path) -> bool:
    return all((path / name).is_dir() for name in ("cur", "new", "tmp"))


def _items(sources: tuple[str, ...], stdin: IO[bytes]) -> Iterator[_Item]:
    for source in sources:
        if source == "-":
            data = stdin.read()
            if _looks_like_mbox(data):
                yield from _split_mbox_bytes("<stdin>", data)
            else:
                yield _Item("<stdin>", data)
            continue
        path = Path(source)
        if not path.exists():
            yield _Item(source, error="not found")
        elif path.is_dir() and _is_maildir(path):
            yield from _maildir_items(path)
        elif path.is_dir():
            yield from _folder_items(path)
        else:
            yield from _file_items(path)


_MAIL_SUFFIXES = (".eml", ".mbox", ".msg822")


def _folder_items(folder: Path) -> Iterator[_Item]:
    skipped = 0
    found = False
    for entry in sorted(folder.rglob("*")):
        if entry.suffix.lower() not in _MAIL_SUFFIXES:
            skipped += entry.is_file()
            continue
        if entry.is_dir() and not _is_maildir(entry):
            yield _Item(str(entry), error="is a folder, not a message file")
        elif entry.is_symlink() and not entry.exists():
            yield _Item(str(entry), error="broken symbolic link")
        elif entry.is_file():
            found = True
            yield from _file_items(entry)
    if skipped:
        click.echo(
            f"leadparse: {folder}: skipped {skipped} file(s) without an "
            f"{', '.join(_MAIL_SUFFIXES)} extension",
            err=True,
        )
    if not found:
        yield _Item(str(folder), error="folder has no .eml or .mbox files")


def _sample_path() -> Path:
    return Path(str(resources.files("leadparse") / "samples" / "demo-request.eml"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="leadparse")
def main() -> None:
    """Turn raw inbound email into clean, qualified sales-lead records."""


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(allow_dash=True))
@click.option(
    "--sample",
    is_flag=True,
    help="Parse the demo-request email bundled with leadparse.",
)
@click.option(
    "--jsonl",
    "force_jsonl",
    is_flag=True,
    help="Print JSON Lines even for one message.",
)
@click.option(
    "--strict", is_flag=True, help="Treat any defect as a failure of that message."
)
@click.option(
    "--region",
    default=None,
    metavar="CC",
    help="Default phone region, an ISO 3166 code such as US or DE.",
)
def parse(
    paths: tuple[str, ...],
    sample: bool,
    force_jsonl: bool,
    strict: bool,
    region: str | None,
) -> None:
    """Parse emails and print each lead as JSON.

    PATHS are .eml files, folders of them, mbox files, Maildir folders, or "-"
    for standard input. One message prints indented JSON; several print JSON
    Lines. A summary by kind goes to standard error. The exit status is 1 when
    any input could not be read or parsed.
    """
    from leadparse.policy import Policy

    if sample:
        paths = (*paths, str(_sample_path()))
    if not paths:
        raise click.UsageError(
            "give at least one PATH, '-' for standard input, or --sample"
        )
    update: dict[str, object] = {"strict": strict}
    if region:
        update["default_region"] = region.upper()
    policy = Policy().model_copy(update=update)

    # Inputs are read one at a time; only the first two are looked at ahead,
    # to choose between one indented JSON document and JSON Lines.
    stream = _items(paths, sys.stdin.buffer)
    head = list(itertools.islice(stream, 2))
    single = len(head) == 1 and not force_jsonl
    counts: Counter[str] = Counter()
    failed = 0
    # The progress counter shares the terminal only when stdout goes elsewhere.
    show_progress = sys.stderr.isatty() and not sys.stdout.isatty() and not single
    done = 0
    for item in itertools.chain(head, stream):
        done += 1
        if show_progress:
            click.echo(f"\rparsing: {done} done", err=True, nl=False)
        if item.error is not None or item.raw is None:
            failed += 1
            click.echo(f"leadparse: {item.label}: {item.error}", err=True)
            continue
        try:
            lead = parse_lead(item.raw, policy=policy)
        except LeadparseError as exc:
            failed += 1
            click.echo(f"leadparse: {item.label}: {exc}", err=True)
            continue
        counts[lead.classification.kind] += 1
        click.echo(_dump(lead, single))
    if show_progress:
        click.echo("", err=True)
    if not single:
        summary = (
            ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none"
        )
        click.echo(
            f"parsed {sum(counts.values())} message(s): {summary}; {failed} failed",
            err=True,
        )
    if failed:
        sys.exit(1)


def _dump(lead: Lead, indent: bool) -> str:
    payload = lead.model_dump(mode="json")
    if indent:
        return json.dumps(payload, indent=2, ensure_ascii=False)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


@main.command()
def schema() -> None:
    """Print the JSON Schema of the Lead record."""
    click.echo(json.dumps(lead_json_schema(), indent=2, ensure_ascii=False))


def lead_json_schema() -> dict[str, object]:
    """Return the JSON Schema of :class:`Lead` in its serialized form."""
    return Lead.model_json_schema(mode="serialization", by_alias=True)


def _register_server_commands(group: click.Group) -> None:
    # The server extra is optional: its commands load aiosmtpd and aiohttp
    # only when run, and are replaced by a hint when the extra is missing.
    try:
        server_cli = importlib.import_module("leadparse.server.cli")
    except ImportError as exc:
        reason = str(exc)

        for name in _SERVER_COMMANDS:

            @group.command(name=name, context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def missing(args: tuple[str, ...], _reason: str = reason) -> None:
                raise click.ClickException(
                    f"this command needs the server extra ({_reason}); "
                    "install it with: pip install 'leadparse[server]'"
                )

        return
    server_cli.register(group)


_register_server_commands(main)
