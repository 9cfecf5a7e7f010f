"""The receiver's commands: reparse, purge, forget, leads, stats, dns-records."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from server_support import lead_message

from leadparse._version import __version__
from leadparse.server.cli import register
from leadparse.server.store import IncomingMessage, SQLiteStore
from leadparse.server.worker import parse_message

NOW = datetime.now(UTC)


@pytest.fixture
def cli() -> click.Group:
    @click.group()
    def group() -> None:
        """Test group."""

    register(group)
    return group


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("LEADPARSE_CONFIG", "LEADPARSE_STORAGE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def _fill(data_dir: Path) -> SQLiteStore:
    """Store and parse three messages: two recent, one 200 days old."""
    store = SQLiteStore(data_dir)
    rows = [
        ("req-old", NOW - timedelta(days=200), "old@example.org", 1),
        ("req-bob", NOW - timedelta(days=1), "bob@example.org", 2),
        ("req-carol", NOW, "carol@example.org", 3),
    ]
    for request_id, received_at, sender, index in rows:
        message_id = store.put_message(
            IncomingMessage(
                request_id=request_id,
                received_at=received_at,
                mail_from=sender,
                rcpt_tos=("sales@leads.test",),
                raw=lead_message(index, sender=sender),
            )
        )
        [job] = store.claim_jobs(1)
        message = store.get_message(message_id)
        result = parse_message(
            "leadparse:parse_lead",
            message.raw,
            message.mail_from,
            message.rcpt_tos,
            message.received_at,
        )
        store.complete_job(job.id, result, actor="worker")
    return store


def test_register_adds_every_command(cli: click.Group) -> None:
    assert sorted(cli.commands) == [
        "dlq",
        "dns-records",
        "forget",
        "leads",
        "migrate",
        "purge",
        "reparse",
        "serve",
        "stats",
        "suppress",
    ]


def test_main_cli_exposes_server_commands() -> None:
    from leadparse.cli import main

    assert {"serve", "reparse", "dns-records"} <= set(main.commands)


def test_dns_records_printed(cli: click.Group, runner: CliRunner) -> None:
    result = runner.invoke(
        cli,
        [
            "dns-records",
            "--domain",
            "leads.example.com",
            "--mx",
            "mx1.example.com, MX2.example.com.",
            "--dmarc-rua",
            "dmarc@example.com",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "leads.example.com.\t3600\tIN\tMX\t10 mx1.example.com.",
        "leads.example.com.\t3600\tIN\tMX\t20 mx2.example.com.",
        'leads.example.com.\t3600\tIN\tTXT\t"v=spf1 -all"',
        (
            "leadparse._domainkey.leads.example.com.\t3600\tIN\tTXT\t"
            '"v=DKIM1; k=rsa; p=<PUBLIC-KEY-BASE64>"'
        ),
        (
            "_dmarc.leads.example.com.\t3600\tIN\tTXT\t"
            '"v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc@example.com"'
        ),
    ]


def test_dns_records_invalid_domain(cli: click.Group, runner: CliRunner) -> None:
    result = runner.invoke(
        cli, ["dns-records", "--domain", "leads_example", "--mx", "mx1.example.com"]
    )
    assert result.exit_code == 1
    assert "invalid host name 'leads_example'" in result.output


def test_stats_counts_kinds_and_states(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    _fill(tmp_path).close()
    result = runner.invoke(cli, ["stats", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "duplicates": 0,
        "jobs_by_state": {"done": 3},
        "leads_by_kind": {"lead": 3},
        "messages": 3,
    }


def test_leads_prints_json_lines(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    _fill(tmp_path).close()
    since = (NOW - timedelta(days=2)).isoformat()
    result = runner.invoke(
        cli,
        ["leads", "--kind", "lead", "--since", since, "--data-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    leads = [json.loads(line) for line in result.output.splitlines()]
    assert [lead["from"]["email"] for lead in leads] == [
        "bob@example.org",
        "carol@example.org",
    ]


def test_leads_rejects_invalid_since(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(
        cli, ["leads", "--since", "yesterday", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "invalid time 'yesterday'" in result.output


def test_forget_prints_count(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    _fill(tmp_path).close()
    result = runner.invoke(
        cli, ["forget", "Bob@Example.org", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert result.output == "deleted 1 messages\n"
    store = SQLiteStore(tmp_path)
    assert store.stats().messages == 2
    store.close()


def test_purge_uses_retention_window(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    _fill(tmp_path).close()
    result = runner.invoke(cli, ["purge", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("deleted 1 messages received before ")
    result = runner.invoke(cli, ["purge", "--days", "1", "--data-dir", str(tmp_path)])
    assert result.output.startswith("deleted 1 messages received before ")
    store = SQLiteStore(tmp_path)
    assert [store.get_message(i).request_id for i in store.message_ids()] == [
        "req-carol"
    ]
    store.close()


def test_reparse_by_id_audited(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    _fill(tmp_path).close()
    result = runner.invoke(
        cli,
        [
            "reparse",
            "--id",
            "req-bob",
            "--reason",
            "signature rules changed",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "reparsed 1 messages: lead 0, duplicate 0, updated 1, skipped 0, failed 0\n"
    )
    store = SQLiteStore(tmp_path)
    [entry] = store.audit_entries(action="reparse")
    store.close()
    assert entry.request_id == "req-bob"
    assert entry.reason == "signature rules changed"
    assert entry.actor == getpass.getuser()
    assert entry.parser_version == __version__


def test_reparse_window_and_all(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    _fill(tmp_path).close()
    since = (NOW - timedelta(days=2)).isoformat()
    result = runner.invoke(
        cli,
        ["reparse", "--since", since, "--reason", "r", "--data-dir", str(tmp_path)],
    )
    assert result.output.startswith("reparsed 2 messages: ")
    result = runner.invoke(
        cli, ["reparse", "--all", "--reason", "r", "--data-dir", str(tmp_path)]
    )
    assert result.output.startswith("reparsed 3 messages: ")


def test_reparse_needs_one_selection(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(
        cli,
        ["reparse", "--all", "--id", "x", "--reason", "r", "--data-dir", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "choose exactly one of --all, --since/--until, or --id" in result.output


def test_reparse_unknown_id(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(
        cli, ["reparse", "--id", "nope", "--reason", "r", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "no message with request id 'nope'" in result.output


def test_invalid_config_reported(
    cli: click.Group, runner: CliRunner, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[storage]\nretention_days = 0\n")
    result = runner.invoke(cli, ["purge", "--config", str(config)])
    assert result.exit_code == 1
    assert "storage.retention_days (from " in result.output
    assert "Input should be greater than 0 (got 0)" in result.output


def test_serve_domain_and_port_options_set_smtp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import leadparse.server.app as app
    from leadparse.cli import main as leadparse_main

    seen: dict[str, object] = {}

    async def fake_run_server(settings: object, role: str = "all") -> None:
        seen["settings"] = settings
        seen["role"] = role

    monkeypatch.setattr(app, "run_server", fake_run_server)
    result = CliRunner().invoke(
        leadparse_main,
        [
            "serve", "--data-dir", str(tmp_path), "--smtp-port", "2626",
            "--domain", "Leads.Example.net", "--accept", "sales@example.org",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    settings = seen["settings"]
    assert settings.smtp.port == 2626  # type: ignore[attr-defined]
    assert settings.smtp.accept == (  # type: ignore[attr-defined]
        "sales@example.org",
        "*@leads.example.net",
    )
