from __future__ import annotations

import json
import mailbox
from pathlib import Path

from click.testing import CliRunner

from leadparse.cli import lead_json_schema, main

from .conftest import ROOT, message


def test_docs_schema_matches_model() -> None:
    stored = json.loads((ROOT / "docs" / "schema.json").read_text(encoding="utf-8"))

    assert stored == lead_json_schema(), "run: leadparse schema > docs/schema.json"


def test_schema_names_contract_fields() -> None:
    schema = lead_json_schema()
    properties = schema["properties"]
    assert isinstance(properties, dict)

    for name in (
        "message_id",
        "threading",
        "from",
        "to",
        "cc",
        "reply_to",
        "subject",
        "date",
        "received_at",
        "body_text",
        "body_source",
        "message_text",
        "stripped_text",
        "signature",
        "quoted_text",
        "body_html",
        "forwarded",
        "extracted",
        "classification",
        "channel",
        "attachments",
        "idempotency_key",
        "provenance",
        "defects",
    ):
        assert name in properties, name


def test_schema_command_prints_json() -> None:
    result = CliRunner().invoke(main, ["schema"])

    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "Lead"


def test_parse_sample_prints_one_json_document() -> None:
    result = CliRunner().invoke(main, ["parse", "--sample"])

    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["message_id"] == "abc123@contoso.com"


def test_parse_stdin() -> None:
    raw = message("From: a@example.org", "Subject: via stdin")

    result = CliRunner().invoke(main, ["parse", "-"], input=raw)

    assert result.exit_code == 0
    assert json.loads(result.output)["subject"] == "via stdin"


def _write(path: Path, subject: str) -> Path:
    path.write_bytes(message("From: a@example.org", f"Subject: {subject}"))
    return path


def test_parse_folder_prints_json_lines_and_summary(tmp_path: Path) -> None:
    _write(tmp_path / "a.eml", "first")
    _write(tmp_path / "b.eml", "second")

    result = CliRunner().invoke(main, ["parse", str(tmp_path)])

    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert [json.loads(line)["subject"] for line in lines] == ["first", "second"]
    assert "parsed 2 message(s): 2 lead; 0 failed" in result.stderr


def test_parse_reports_unreadable_and_continues(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.eml", "fine")
    bad = tmp_path / "bad.eml"
    bad.write_bytes(b"this is not an email")

    result = CliRunner().invoke(
        main, ["parse", str(bad), str(good), str(tmp_path / "gone.eml")]
    )

    assert result.exit_code == 1
    assert json.loads(result.stdout.strip())["subject"] == "fine"
    assert f"{bad}: input is not an email message" in result.stderr
    assert f"{tmp_path / 'gone.eml'}: not found" in result.stderr
    assert "1 lead; 2 failed" in result.stderr


def test_parse_mbox(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "inbox.mbox")
    for subject in ("one", "two", "three"):
        box.add(
            message(
                "From: a@example.org", f"Subject: {subject}", body="From here on\nx"
            )
        )
    box.flush()
    box.close()

    result = CliRunner().invoke(main, ["parse", str(tmp_path / "inbox.mbox")])

    assert result.exit_code == 0
    leads = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [lead["subject"] for lead in leads] == ["one", "two", "three"]
    assert leads[0]["body_text"] == "From here on\nx"


def test_parse_maildir(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    box.add(message("From: a@example.org", "Subject: in maildir"))
    box.close()

    result = CliRunner().invoke(main, ["parse", "--jsonl", str(tmp_path / "Mail")])

    assert result.exit_code == 0
    assert json.loads(result.stdout.strip())["subject"] == "in maildir"


def test_parse_without_paths_is_usage_error() -> None:
    result = CliRunner().invoke(main, ["parse"])

    assert result.exit_code == 2
    assert "give at least one PATH" in result.output


def test_parse_eml_with_envelope_and_from_body_line(tmp_path: Path) -> None:
    raw = (
        b"From ana@example.org Tue Mar  5 09:14:22 2024\n"
        + message("From: Ana <ana@example.org>", "Subject: demo")
        + b"\nFrom our side we need a demo.\n"
    )
    path = tmp_path / "one.eml"
    path.write_bytes(raw)

    result = CliRunner().invoke(main, ["parse", str(path)])

    assert result.exit_code == 0
    lead = json.loads(result.stdout)
    assert lead["subject"] == "demo"
    assert "From our side we need a demo." in lead["body_text"]


def test_parse_folder_reports_skipped_and_odd_entries(tmp_path: Path) -> None:
    _write(tmp_path / "good.eml", "fine")
    (tmp_path / "notes.txt").write_text("not mail")
    (tmp_path / "dir.eml").mkdir()
    (tmp_path / "gone.eml").symlink_to(tmp_path / "missing-target")

    result = CliRunner().invoke(main, ["parse", str(tmp_path)])

    assert result.exit_code == 1
    assert json.loads(result.stdout.strip())["subject"] == "fine"
    assert f"{tmp_path / 'dir.eml'}: is a folder, not a message file" in result.stderr
    assert f"{tmp_path / 'gone.eml'}: broken symbolic link" in result.stderr
    assert (
        "skipped 1 file(s) without an .eml, .mbox, .msg822 extension" in result.stderr
    )
