"""Settings layers and the errors for invalid configuration."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from leadparse.server.config import ConfigError, load_settings


def test_defaults_listen_on_loopback() -> None:
    settings = load_settings(env={})
    assert settings.smtp.host == "127.0.0.1"
    assert settings.smtp.port == 2525
    assert settings.storage.data_dir == Path("leadparse-data")
    assert settings.smtp.accept == ("*@localhost",)
    assert settings.smtp.max_message_bytes == 25 * 1024 * 1024
    assert settings.workers.processes is None
    assert settings.encryption.key_id is None


def test_layers_override_in_order(tmp_path: Path) -> None:
    config = tmp_path / "leadparse.toml"
    config.write_text(
        '[smtp]\nport = 2600\nhost = "0.0.0.0"\naccept = ["*@Leads.Example.com."]\n'
        '[storage]\ndata_dir = "/srv/leads"\n'
    )
    settings = load_settings(
        config,
        env={"LEADPARSE_SMTP_PORT": "2700", "LEADPARSE_WORKERS_PROCESSES": "3"},
        overrides={"smtp.port": 2800, "storage.data_dir": None},
    )
    assert settings.smtp.port == 2800
    assert settings.smtp.host == "0.0.0.0"
    assert settings.smtp.accept == ("*@leads.example.com",)
    assert settings.storage.data_dir == Path("/srv/leads")
    assert settings.workers.processes == 3


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[storage]\nretention_days = 7\n")
    settings = load_settings(env={"LEADPARSE_CONFIG": str(config)})
    assert settings.storage.retention_days == 7


def test_env_list_split_on_commas() -> None:
    settings = load_settings(
        env={"LEADPARSE_SMTP_ACCEPT": "*@leads.test, sales@example.test"}
    )
    assert settings.smtp.accept == ("*@leads.test", "sales@example.test")


def test_invalid_port_names_key_and_source() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(env={"LEADPARSE_SMTP_PORT": "70000"})
    assert str(error.value) == (
        "invalid configuration: smtp.port (from environment variable "
        "LEADPARSE_SMTP_PORT): Input should be less than or equal to 65535 "
        "(got '70000')"
    )


def test_unknown_key_lists_expected_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[storage]\nretention = 5\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config, env={})
    assert str(error.value) == (
        f"invalid configuration: storage.retention (from {config}): unknown key; "
        "expected one of: data_dir, url, pool_size, retention_days"
    )


def test_unknown_env_key_in_known_section_rejected() -> None:
    with pytest.raises(ConfigError, match=r"smtp\.prot \(from environment variable"):
        load_settings(env={"LEADPARSE_SMTP_PROT": "25"})


def test_unrelated_env_variables_ignored() -> None:
    settings = load_settings(env={"LEADPARSE_CACHE_DIR": "/tmp/x", "HOME": "/root"})
    assert settings.smtp.port == 2525


def test_require_tls_without_certificate_rejected() -> None:
    with pytest.raises(
        ConfigError, match="require_tls is true but tls_cert is not set"
    ):
        load_settings(env={}, overrides={"smtp.require_tls": True})


def test_invalid_accept_pattern_rejected() -> None:
    with pytest.raises(ConfigError, match="expected '\\*@domain' or 'local@domain'"):
        load_settings(env={}, overrides={"smtp.accept": ["leads.example.com"]})


def test_short_key_rejected_without_echoing_it() -> None:
    secret = base64.b64encode(b"0123456789").decode()
    with pytest.raises(ConfigError) as error:
        load_settings(
            env={
                "LEADPARSE_ENCRYPTION_KEYS": f"k1={secret}",
                "LEADPARSE_ENCRYPTION_KEY_ID": "k1",
            }
        )
    message = str(error.value)
    assert "key 'k1' decodes to 10 bytes; expected 16, 24 or 32" in message
    assert secret not in message


def test_key_id_must_name_a_configured_key() -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    with pytest.raises(ConfigError) as error:
        load_settings(
            env={
                "LEADPARSE_ENCRYPTION_KEYS": f"k1={key}",
                "LEADPARSE_ENCRYPTION_KEY_ID": "k2",
            }
        )
    assert str(error.value) == (
        "invalid configuration: encryption: key_id 'k2' is not in "
        "encryption.keys; add that key or set key_id to one of: k1"
    )


def test_missing_config_file_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"configuration file not found: .*absent"):
        load_settings(missing, env={})


def test_invalid_toml_reported(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[smtp\nport = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(config, env={})


def test_short_api_token_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16 characters") as caught:
        load_settings(
            None, overrides={"api.token": "short", "storage.data_dir": tmp_path}
        )

    assert "short" not in str(caught.value)
