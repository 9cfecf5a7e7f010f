"""The ``leadparse dlq`` commands: dead-lettered webhook deliveries and endpoints.

Like :mod:`leadparse.server.cli`, this module imports no aiohttp, so the
commands work on a host that only inspects the database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from leadparse.server.cli import (
    _actor,
    _config_option,
    _data_dir_option,
    _database_url_option,
    _load,
    _open,
)
from leadparse.server.store import DeliveryRecord

__all__ = ["dlq"]


def _record_json(record: DeliveryRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "lead_id": record.lead_id,
        "endpoint": record.endpoint,
        "webhook_id": record.webhook_id,
        "state": record.state,
        "attempts": record.attempts,
        "last_status": record.last_status,
        "last_error": record.last_error,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


@click.group()
def dlq() -> None:
    """Inspect and replay dead-lettered webhook deliveries."""


@dlq.command("list")
@_config_option
@_data_dir_option
@_database_url_option
@click.option("--endpoint", default=None, help="Only deliveries to this endpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines.")
def list_command(
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    endpoint: str | None,
    as_json: bool,
) -> None:
    """Print dead deliveries: id, endpoint, webhook id, attempts, last error."""
    settings = _load(
        config_file, **{"storage.data_dir": data_dir, "storage.url": database_url}
    )
    with _open(settings) as store:
        records = store.dead_letters(endpoint=endpoint)
    for record in records:
        if as_json:
            click.echo(json.dumps(_record_json(record), sort_keys=True))
            continue
        status = record.last_status if record.last_status is not None else "-"
        click.echo(
            f"{record.id}\t{record.endpoint}\t{record.webhook_id}\t"
            f"attempts={record.attempts}\tstatus={status}\t"
            f"error={record.last_error or '-'}\t{record.updated_at.isoformat()}"
        )
    if not as_json:
        click.echo(f"{len(records)} dead deliveries", err=True)


@dlq.command()
@_config_option
@_data_dir_option
@_database_url_option
@click.argument("delivery_ids", metavar="[ID]...", nargs=-1, type=int)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead delivery.")
def replay(
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    delivery_ids: tuple[int, ...],
    replay_all: bool,
) -> None:
    """Send deliveries again from the first attempt, with the same webhook id.

    IDs may name dead or delivered deliveries. A running server picks them
    up within webhooks.poll_interval seconds.
    """
    if replay_all == bool(delivery_ids):
        raise click.UsageError("give delivery ids or --all, not both or neither")
    settings = _load(
        config_file, **{"storage.data_dir": data_dir, "storage.url": database_url}
    )
    with _open(settings) as store:
        replayed = store.replay_deliveries(
            None if replay_all else list(delivery_ids),
            at=datetime.now(UTC),
            actor=_actor(),
        )
    click.echo(f"replayed {len(replayed)} deliveries")
    missing = sorted(set(delivery_ids) - set(replayed))
    if missing:
        raise click.ClickException(
            "not replayed (no such delivery, or still pending or sending): "
            + ", ".join(map(str, missing))
        )


@dlq.command()
@_config_option
@_data_dir_option
@_database_url_option
@click.argument("endpoint")
def enable(
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    endpoint: str,
) -> None:
    """Send to ENDPOINT again after it was disabled by a 410 Gone response."""
    settings = _load(
        config_file, **{"storage.data_dir": data_dir, "storage.url": database_url}
    )
    with _open(settings) as store:
        enabled = store.enable_endpoint(endpoint)
    if not enabled:
        raise click.ClickException(f"endpoint {endpoint!r} is not disabled")
    click.echo(f"enabled endpoint {endpoint}")


@dlq.command()
@_config_option
@_data_dir_option
@_database_url_option
def status(
    config_file: Path | None, data_dir: Path | None, database_url: str | None
) -> None:
    """Print delivery counts by endpoint and state, and disabled endpoints."""
    settings = _load(
        config_file, **{"storage.data_dir": data_dir, "storage.url": database_url}
    )
    with _open(settings) as store:
        counts = store.delivery_counts()
        disabled = store.disabled_endpoints()
    for endpoint, states in counts.items():
        for state, count in states.items():
            click.echo(f"{endpoint}.{state}\t{count}")
    for item in disabled:
        click.echo(
            f"{item.endpoint}.disabled\t{item.disabled_at.isoformat()}\t"
            f"{item.disabled_reason or '-'}"
        )
