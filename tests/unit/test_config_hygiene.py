"""Configuration hygiene (issue 12 item 6; docs/configuration.md): secrets masked, unknown
``CHAT_BRIDGE_*`` variables reported (refused with ``--strict``), values read from
``CHAT_BRIDGE_<NAME>_FILE``, ``chat-bridge migrate``, and a clear error for PostgreSQL
without its driver. ``bridge.cli.main`` runs in-process; the environment is the test's."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import MASK, load_settings, mask_text, unknown_variables
from bridge.errors import ConfigError
from state.db import discover_migrations


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CHAT_BRIDGE_* of the calling shell; a store in the test's directory."""
    for name in list(os.environ):
        if name.upper().startswith("CHAT_BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CHAT_BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")


def config_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["config", *args]) == 0
    dumped: dict[str, object] = json.loads(capsys.readouterr().out)
    return dumped


def test_config_masks_passwords_tokens_and_the_database_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "CHAT_BRIDGE_CREDENTIALS",
        json.dumps(
            [
                {"kind": "basic", "username": "app", "password": "pw-basic-1", "users": ["*"]},
                {"kind": "bearer", "token": "tok-bearer-2", "users": ["*"]},
            ]
        ),
    )
    monkeypatch.setenv("CHAT_BRIDGE_DATABASE_URL", "postgresql://bridge:pw-db-3@db.test:5432/chat")
    dumped = config_json(capsys)
    text = json.dumps(dumped)
    for secret in ("pw-basic-1", "tok-bearer-2", "pw-db-3"):
        assert secret not in text
    assert dumped["database_url"] == f"postgresql://bridge:{MASK}@db.test:5432/chat"
    basic, bearer = dumped["credentials"]  # type: ignore[misc]
    assert basic["password"] == MASK and basic["username"] == "app"
    assert bearer["token"] == MASK
    # the values themselves are intact for the code that uses them
    settings = load_settings()
    assert settings.credentials[1].token is not None
    assert settings.credentials[1].token.get_secret_value() == "tok-bearer-2"
    assert "pw-db-3" in settings.database_url


def test_an_invalid_setting_is_reported_without_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "CHAT_BRIDGE_CREDENTIALS",
        json.dumps([{"kind": "oauth", "token": "tok-leaked", "users": ["*"]}]),
    )
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "credentials.0.kind" in err
    assert "tok-leaked" not in err


def test_mask_text_hides_url_passwords_only() -> None:
    assert mask_text("see postgresql+asyncpg://u:p%40ss@h/db and http://h/x") == (
        f"see postgresql+asyncpg://u:{MASK}@h/db and http://h/x"
    )


def test_unknown_variables_are_warned_with_a_suggestion_and_refused_when_strict(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_BRIDGE_HTTP_PROT", "9000")
    monkeypatch.setenv("CHAT_BRIDGE_SOMETHING_ELSE", "1")
    monkeypatch.setenv("CHAT_BRIDGE_TEST_POSTGRES_URL", "postgresql://x/y")  # the tests' own
    monkeypatch.setenv("CHAT_BRIDGE_SHUTDOWN_TIMEOUT", "4")
    dumped = config_json(capsys)
    assert dumped["shutdown_timeout"] == 4.0
    assert main(["config"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "chat-bridge: warning: unknown environment variable CHAT_BRIDGE_HTTP_PROT"
        " (did you mean CHAT_BRIDGE_HTTP_PORT?)",
        "chat-bridge: warning: unknown environment variable CHAT_BRIDGE_SOMETHING_ELSE",
    ]
    for command in (["config"], ["serve"], ["migrate"]):
        assert main([*command, "--strict"]) == 2
        out, err_text = capsys.readouterr()
        assert out == ""
        assert "error: unknown environment variable CHAT_BRIDGE_HTTP_PROT" in err_text


def test_known_variables_pass_strict(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "port").write_text("8181\n")
    monkeypatch.setenv("CHAT_BRIDGE_HTTP_PORT_FILE", str(tmp_path / "port"))
    monkeypatch.setenv("CHAT_BRIDGE_CONFIG", str(tmp_path / "none.yaml"))
    (tmp_path / "none.yaml").write_text("log_level: DEBUG\n")
    assert unknown_variables(os.environ) == []
    dumped = config_json(capsys, "--strict")
    assert (dumped["http_port"], dumped["log_level"]) == (8181, "DEBUG")


def test_values_come_from_files_less_one_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    token = tmp_path / "credentials.json"
    token.write_text(json.dumps([{"kind": "bearer", "token": "from-a-file", "users": ["*"]}]))
    root = tmp_path / "root"
    root.write_text("http://api.test/base\n\n")  # one newline goes, the other stays
    monkeypatch.setenv("CHAT_BRIDGE_CREDENTIALS_FILE", str(token))
    monkeypatch.setenv("CHAT_BRIDGE_SIP_DOMAIN_FILE", str(root))
    settings = load_settings()
    assert settings.credentials[0].token is not None
    assert settings.credentials[0].token.get_secret_value() == "from-a-file"
    assert settings.sip_domain == "http://api.test/base\n"
    assert "from-a-file" not in json.dumps(config_json(capsys))


def test_a_value_and_its_file_together_or_a_missing_file_are_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    secret = tmp_path / "url"
    secret.write_text("sqlite:///x.db\n")
    monkeypatch.setenv("CHAT_BRIDGE_DATABASE_URL_FILE", str(secret))
    with pytest.raises(ConfigError, match="both CHAT_BRIDGE_DATABASE_URL and .*_FILE are set"):
        load_settings()
    monkeypatch.delenv("CHAT_BRIDGE_DATABASE_URL")
    assert load_settings().database_url == "sqlite:///x.db"
    monkeypatch.setenv("CHAT_BRIDGE_DATABASE_URL_FILE", str(tmp_path / "missing"))
    assert main(["config"]) == 2
    assert "CHAT_BRIDGE_DATABASE_URL_FILE: cannot read" in capsys.readouterr().err


def test_migrate_prints_the_schema_version(capsys: pytest.CaptureFixture[str]) -> None:
    latest = discover_migrations()[-1].version
    for _ in range(2):  # the second run finds nothing to do
        assert main(["migrate"]) == 0
        assert capsys.readouterr().out == f"schema version {latest}\n"


def test_migrate_reports_an_unreachable_store_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "CHAT_BRIDGE_DATABASE_URL", "postgresql://bridge:pw-unreachable@127.0.0.1:1/chat"
    )
    assert main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chat-bridge: cannot migrate the store:")
    assert "pw-unreachable" not in err


def test_postgres_without_its_driver_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if the extra were not installed
    monkeypatch.setenv("CHAT_BRIDGE_DATABASE_URL", "postgresql://bridge:pw@db.test/chat")
    for command in ("serve", "migrate", "config"):
        assert main([command]) == 2
        err = capsys.readouterr().err
        assert "asyncpg, is not installed: pip install 'chat-bridge[postgres]'" in err
    # the embedded default (SQLite) does not need it
    monkeypatch.setenv("CHAT_BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    assert main(["migrate"]) == 0
