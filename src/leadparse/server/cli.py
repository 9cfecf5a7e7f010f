"""Command-line commands of the receiver, added to the ``leadparse`` group.

This module imports neither aiosmtpd nor cryptography at import time. The
main CLI can therefore register these commands when the ``server`` extra is
missing, and ``serve`` then explains how to install it.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from leadparse.server.config import ConfigError, Settings, load_settings
from leadparse.server.store import Outcome, Store

__all__ = ["register"]

INSTALL_HINT = "install it with: pip install 'leadparse[server]'"

_F = TypeVar("_F", bound=Callable[..., Any])


def _config_option(func: _F) -> _F:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="TOML configuration file (default: $LEADPARSE_CONFIG if set).",
    )(func)


def _data_dir_option(func: _F) -> _F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of the database (default: ./leadparse-data).",
    )(func)


def _database_url_option(func: _F) -> _F:
    return click.option(
        "--database-url",
        default=None,
        help="postgresql:// URL of a shared database "
        "(default: storage.url, $LEADPARSE_STORAGE_URL; unset: SQLite in --data-dir).",
    )(func)


def _load(config_file: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config_file, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _open(settings: Settings) -> Iterator[Store]:
    from leadparse.server.app import open_store

    try:
        store = open_store(settings)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing.startswith(("psycopg", "psycopg_pool")):
            raise click.ClickException(
                f"PostgreSQL storage needs psycopg and psycopg_pool ({exc}); "
                f"{INSTALL_HINT}"
            ) from None
        raise click.ClickException(
            f"encryption needs the cryptography package ({exc}); {INSTALL_HINT}"
        ) from None
    try:
        yield store
    finally:
        store.close()


def _parse_time(value: str | None, option: str) -> datetime | None:
    """Parse an ISO 8601 date or date-time; naive values are taken as UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"invalid time {value!r}: expected ISO 8601 such as 2024-05-01 or "
            "2024-05-01T12:00:00+02:00",
            param_hint=option,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # getuser() raises when neither the environment nor the password
        # database names the user, as in some containers.
        return "unknown"


@click.command()
@_config_option
@_data_dir_option
@_database_url_option
@click.option(
    "--role",
    type=click.Choice(["all", "smtp", "worker", "delivery", "api"]),
    default="all",
    show_default=True,
    help="Part to run: smtp receives and stores, worker parses, delivery sends "
    "webhooks, api serves HTTP; all runs every part in one process.",
)
@click.option(
    "--host",
    "--smtp-host",
    "host",
    default=None,
    help="Address to listen on (default: 127.0.0.1).",
)
@click.option(
    "--port",
    "--smtp-port",
    "port",
    type=int,
    default=None,
    help="TCP port (default: 2525).",
)
@click.option(
    "--domain",
    "domains",
    multiple=True,
    help="Accept mail for every local part of this domain (adds *@DOMAIN to "
    "smtp.accept); repeat for several.",
)
@click.option(
    "--accept",
    "accept",
    multiple=True,
    help="Accepted recipient pattern, *@domain or local@domain; repeat for several "
    "(default: smtp.accept, $LEADPARSE_SMTP_ACCEPT).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Parse worker processes (default: number of CPUs; 0: store only).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Log level (default: INFO).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log line format (default: text).",
)
@click.option(
    "--api-host", default=None, help="Address of the HTTP API (default: 127.0.0.1)."
)
@click.option(
    "--api-port",
    type=int,
    default=None,
    help="TCP port of the HTTP API (default: 8025).",
)
@click.option(
    "--api-token",
    default=None,
    help="Bearer token with every API scope; the API starts only with a token "
    "(default: api.token, $LEADPARSE_API_TOKEN).",
)
# --- webhooks ---
@click.option(
    "--webhook-url",
    default=None,
    help="https:// URL that receives each new lead as a signed POST "
    "(endpoint 'default'; default: webhooks.url, $LEADPARSE_WEBHOOKS_URL).",
)
@click.option(
    "--webhook-secret",
    "webhook_secrets",
    multiple=True,
    help="Signing secret whsec_<base64>; repeat to sign with several while "
    "rotating. Prefer $LEADPARSE_WEBHOOKS_SECRETS, which other local users "
    "cannot read from the process list.",
)
@click.option(
    "--webhook-allow-http-loopback",
    is_flag=True,
    default=None,
    help="Allow a plain http:// webhook URL on a loopback address (development).",
)
# --- end webhooks ---
def serve(
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    role: str,
    host: str | None,
    port: int | None,
    domains: tuple[str, ...],
    accept: tuple[str, ...],
    workers: int | None,
    log_level: str | None,
    log_format: str | None,
    api_host: str | None,
    api_port: int | None,
    api_token: str | None,
    webhook_url: str | None,
    webhook_secrets: tuple[str, ...],
    webhook_allow_http_loopback: bool | None,
) -> None:
    """Receive mail over SMTP, store it and parse it into leads."""
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        raise click.ClickException(
            f"the serve command needs aiosmtpd; {INSTALL_HINT}"
        ) from None
    settings = _load(
        config_file,
        **{
            "storage.data_dir": data_dir,
            "storage.url": database_url,
            "smtp.host": host,
            "smtp.port": port,
            "smtp.accept": [*accept, *(f"*@{d.strip().lower()}" for d in domains)]
            or None,
            "workers.processes": workers,
            "logging.level": log_level,
            "logging.format": log_format,
            "api.host": api_host,
            "api.port": api_port,
            "api.token": api_token,
            "webhooks.url": webhook_url,
            "webhooks.secrets": list(webhook_secrets) or None,
            "webhooks.allow_http_loopback": webhook_allow_http_loopback,
        },
    )
    from leadparse.server.app import run_server
    from leadparse.server.logs import setup_logging

    setup_logging(settings.logging.level, settings.logging.format)
    try:
        asyncio.run(run_server(settings, role=role))
    except RuntimeError as exc:
        # A role whose module is missing; asyncio.run's own errors re-raise.
        if not str(exc).startswith("role "):
            raise
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings.smtp.host}:{settings.smtp.port}: {exc}"
        ) from None


@click.command()
@_config_option
@_data_dir_option
@click.option("--all", "all_messages", is_flag=True, help="Reparse every message.")
@click.option("--since", default=None, help="Reparse messages received at or after T.")
@click.option("--until", default=None, help="Reparse messages received before T.")
@click.option(
    "--id", "request_id", default=None, help="Reparse one message by request id."
)
@click.option("--reason", required=True, help="Why, recorded in the audit log.")
def reparse(
    config_file: Path | None,
    data_dir: Path | None,
    all_messages: bool,
    since: str | None,
    until: str | None,
    request_id: str | None,
    reason: str,
) -> None:
    """Run the parser again over stored raw messages and replace their leads.

    The audit log records each message with the parser version, the user
    who ran the command and the reason.
    """
    from leadparse.server.worker import describe_error, parse_message

    chosen = sum(
        [all_messages, since is not None or until is not None, bool(request_id)]
    )
    if chosen != 1:
        raise click.UsageError("choose exactly one of --all, --since/--until, or --id")
    if not reason.strip():
        raise click.BadParameter("must not be empty", param_hint="--reason")
    settings = _load(config_file, **{"storage.data_dir": data_dir})
    actor = _actor()
    counts = {str(outcome): 0 for outcome in Outcome} | {"failed": 0}
    with _open(settings) as store:
        ids = store.message_ids(
            since=_parse_time(since, "--since"),
            until=_parse_time(until, "--until"),
            request_id=request_id,
        )
        if request_id and not ids:
            raise click.ClickException(f"no message with request id {request_id!r}")
        # NOTE: messages are parsed one at a time in this process; a large
        # --all run takes about (messages x parse time).
        for message_id in ids:
            try:
                message = store.get_message(message_id)
                result = parse_message(
                    settings.workers.parser,
                    message.raw,
                    message.mail_from,
                    message.rcpt_tos,
                    message.received_at,
                )
            except Exception as exc:
                counts["failed"] += 1
                store.add_audit(
                    "reparse_failed",
                    actor=actor,
                    message_id=message_id,
                    reason=reason,
                    detail={"error": describe_error(exc)},
                )
                click.echo(
                    f"message {message_id}: reparse failed: {type(exc).__name__}",
                    err=True,
                )
                continue
            outcome = store.record_reparse(
                message_id, result, actor=actor, reason=reason
            )
            counts[str(outcome)] += 1
    summary = ", ".join(f"{name} {count}" for name, count in counts.items())
    click.echo(f"reparsed {len(ids)} messages: {summary}")
    if counts["failed"]:
        sys.exit(1)


@click.command()
@_config_option
@_data_dir_option
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=None,
    help="Retention in days (default: storage.retention_days, 90).",
)
def purge(config_file: Path | None, data_dir: Path | None, days: int | None) -> None:
    """Delete messages and leads older than the retention window."""
    settings = _load(
        config_file,
        **{"storage.data_dir": data_dir, "storage.retention_days": days},
    )
    before = datetime.now(UTC) - timedelta(days=settings.storage.retention_days)
    with _open(settings) as store:
        count = store.purge(before, actor=_actor())
    click.echo(f"deleted {count} messages received before {before.isoformat()}")


@click.command()
@_config_option
@_data_dir_option
@click.argument("email")
def forget(config_file: Path | None, data_dir: Path | None, email: str) -> None:
    """Delete every message and lead of one email address and print the count."""
    if "@" not in email:
        raise click.BadParameter(
            f"{email!r} is not an email address", param_hint="EMAIL"
        )
    settings = _load(config_file, **{"storage.data_dir": data_dir})
    with _open(settings) as store:
        count = store.forget(email, actor=_actor())
    click.echo(f"deleted {count} messages")


@click.command()
@_config_option
@_data_dir_option
@click.option(
    "--kind",
    type=click.Choice(["lead", "auto_reply", "bounce", "bulk"]),
    default=None,
    help="Only leads of this kind.",
)
@click.option("--since", default=None, help="Only messages received at or after T.")
def leads(
    config_file: Path | None, data_dir: Path | None, kind: str | None, since: str | None
) -> None:
    """Print stored leads as JSON Lines, oldest first."""
    settings = _load(config_file, **{"storage.data_dir": data_dir})
    moment = _parse_time(since, "--since")
    with _open(settings) as store:
        for payload in store.iter_leads(kind=kind, since=moment):
            click.echo(json.dumps(payload, ensure_ascii=False))


@click.command()
@_config_option
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(config_file: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Print counts of messages, leads by kind and jobs by state."""
    settings = _load(config_file, **{"storage.data_dir": data_dir})
    with _open(settings) as store:
        figures = store.stats()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "messages": figures.messages,
                    "duplicates": figures.duplicates,
                    "leads_by_kind": figures.leads_by_kind,
                    "jobs_by_state": figures.jobs_by_state,
                },
                sort_keys=True,
            )
        )
        return
    click.echo(f"messages\t{figures.messages}")
    click.echo(f"duplicates\t{figures.duplicates}")
    for kind, count in figures.leads_by_kind.items():
        click.echo(f"kind.{kind}\t{count}")
    for state, count in figures.jobs_by_state.items():
        click.echo(f"job.{state}\t{count}")


@click.command("dns-records")
@click.option(
    "--domain", required=True, help="The leads domain, e.g. leads.example.com."
)
@click.option(
    "--mx",
    required=True,
    help="Comma-separated MX hosts in order of preference.",
)
@click.option("--ttl", type=click.IntRange(min=1), default=3600, help="TTL in seconds.")
@click.option("--dkim-selector", default="leadparse", help="DKIM selector name.")
@click.option("--dmarc-rua", default=None, help="Address for DMARC aggregate reports.")
def dns_records_command(
    domain: str, mx: str, ttl: int, dkim_selector: str, dmarc_rua: str | None
) -> None:
    """Print MX, SPF, DKIM and DMARC records for a receive-only leads domain."""
    from leadparse.server.dns import dns_records

    hosts = [host.strip() for host in mx.split(",") if host.strip()]
    try:
        records = dns_records(
            domain,
            hosts,
            ttl=ttl,
            dkim_selector=dkim_selector,
            dmarc_report_address=dmarc_rua,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for record in records:
        click.echo(record)


@click.command()
@_config_option
@_data_dir_option
@_database_url_option
def migrate(
    config_file: Path | None, data_dir: Path | None, database_url: str | None
) -> None:
    """Apply pending schema migrations and print the schema version."""
    settings = _load(
        config_file, **{"storage.data_dir": data_dir, "storage.url": database_url}
    )
    from leadparse.server.store import MIGRATIONS, SchemaError

    try:
        # Opening a store applies pending migrations, in both backends.
        with _open(settings) as store:
            version = store.schema_version()
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        # psycopg is imported only with a PostgreSQL URL, so its errors are
        # recognized by module; their messages name the host, not the password.
        if not type(exc).__module__.startswith("psycopg"):
            raise
        raise click.ClickException(
            f"cannot migrate the PostgreSQL database: {type(exc).__name__}: {exc}"
        ) from None
    backend = "postgresql" if settings.storage.url else "sqlite"
    click.echo(f"schema version {version} of {len(MIGRATIONS)} ({backend})")


# --- acks ---


@click.command()
@_config_option
@_data_dir_option
@click.option(
    "--reason",
    default="manual",
    show_default=True,
    help="Why the address is suppressed, stored with its hash.",
)
@click.argument("email")
def suppress(
    config_file: Path | None, data_dir: Path | None, reason: str, email: str
) -> None:
    """Never send outbound acknowledgments to EMAIL; only its hash is stored."""
    from leadparse.server.acks import address_hash

    if "@" not in email:
        raise click.BadParameter(
            f"{email!r} is not an email address", param_hint="EMAIL"
        )
    settings = _load(config_file, **{"storage.data_dir": data_dir})
    with _open(settings) as store:
        added = store.add_suppression(address_hash(email), reason=reason)
    click.echo("suppressed" if added else "already suppressed")


# --- end acks ---


def register(group: click.Group) -> None:
    """Add the receiver's commands to *group* (the ``leadparse`` CLI).

    Commands: serve, migrate, reparse, purge, forget, leads, stats, dns-records,
    suppress, dlq.
    """
    for command in (serve, reparse, purge, forget, leads, stats, dns_records_command):
        group.add_command(command)
    group.add_command(migrate)
    group.add_command(suppress)
    # --- webhooks ---
    from leadparse.server.delivery_cli import dlq

    group.add_command(dlq)
    # --- end webhooks ---
