"""Settings: environment names later issues rely on, config files, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import ConfigFileError, Settings, load_settings


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "ITSM_SYNC_SERVICENOW__URL": "https://acme.service-now.com",
        "ITSM_SYNC_SERVICENOW__USERNAME": "sync",
        "ITSM_SYNC_SERVICENOW__PASSWORD": "sn-pass-123",
        "ITSM_SYNC_JIRA__URL": "https://acme.atlassian.net",
        "ITSM_SYNC_JIRA__EMAIL": "sync@acme.test",
        "ITSM_SYNC_JIRA__API_TOKEN": "jira-token-456",
        "ITSM_SYNC_JIRA__PROJECT": "INC",
        "ITSM_SYNC_STATUSPAGE__URL": "https://api.statuspage.io/v1",
        "ITSM_SYNC_STATUSPAGE__API_KEY": "sp-key-789",
        "ITSM_SYNC_STATUSPAGE__PAGE_ID": "abc123",
        "ITSM_SYNC_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1/test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.servicenow.url == "https://acme.service-now.com"
    assert s.servicenow.username == "sync"
    assert s.servicenow.password.get_secret_value() == "sn-pass-123"
    assert (s.jira.url, s.jira.email, s.jira.project) == (
        "https://acme.atlassian.net",
        "sync@acme.test",
        "INC",
    )
    assert s.jira.api_token.get_secret_value() == "jira-token-456"
    assert s.statuspage.api_key.get_secret_value() == "sp-key-789"
    assert s.statuspage.page_id == "abc123"
    assert s.database_url.startswith("postgresql+psycopg://")
    shown = repr(s) + str(s) + s.model_dump_json()
    for secret in ("sn-pass-123", "jira-token-456", "sp-key-789"):
        assert secret not in shown


def test_defaults_point_at_the_simulators() -> None:
    s = Settings()
    assert s.servicenow.url == "http://127.0.0.1:8701"
    assert s.jira.url == "http://127.0.0.1:8702"
    assert s.statuspage.url == "http://127.0.0.1:8703/v1"
    assert s.database_url == "sqlite:///./itsm-sync.db"


def test_config_file_and_environment_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "itsm-sync.yaml"
    f.write_text("jira:\n  url: https://from-file.atlassian.net\n  project: FILE\n")
    monkeypatch.setenv("ITSM_SYNC_JIRA__PROJECT", "ENV")
    s = load_settings(f)
    assert s.jira.url == "https://from-file.atlassian.net"
    assert s.jira.project == "ENV"  # the environment wins over the file


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"nope\.yaml: config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_values_name_the_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("jira:\n  timeout_seconds: -1\n  colour: blue\n")
    with pytest.raises(ConfigFileError) as info:
        load_settings(f)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{f}:2 jira.timeout_seconds: Input should be greater than 0",
        f"{f}:3 jira.colour: Extra inputs are not permitted",
    ]


def test_environment_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_SYNC_STATUSPAGE__TIMEOUT_SECONDS", "soon")
    with pytest.raises(ValidationError, match=r"statuspage\.timeout_seconds"):
        Settings()


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("jira: [unclosed\n")
    with pytest.raises(ConfigFileError, match=r"broken\.yaml: not valid YAML"):
        load_settings(f)
