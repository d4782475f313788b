"""Several instances of one system, configured by name."""

from __future__ import annotations

import logging

import pytest

from config.settings import Settings
from connectors.registry import build_connectors


def test_named_instances_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_SYNC_INSTANCES__JIRA__EU__URL", "https://eu.example.net")
    monkeypatch.setenv("ITSM_SYNC_INSTANCES__JIRA__EU__API_TOKEN", "eu-token-value-42")
    monkeypatch.setenv("ITSM_SYNC_INSTANCES__JIRA__EU__PROJECT", "EUOPS")
    connectors = build_connectors(Settings())
    assert set(connectors) == {
        ("servicenow", "default"),
        ("jira", "default"),
        ("statuspage", "default"),
        ("jira", "eu"),
    }
    eu = connectors[("jira", "eu")]
    assert eu.instance == "eu"
    assert "eu.example.net" in repr(eu) and "EUOPS" in repr(eu)
    assert "eu-token-value-42" not in repr(eu)
    assert "eu-token-value-42" not in repr(Settings())


def test_default_is_not_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_SYNC_INSTANCES__JIRA__DEFAULT__URL", "https://x.example.net")
    with pytest.raises(ValueError, match="top-level 'jira' section"):
        build_connectors(Settings())


def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings.model_validate({"jira": {"api_token": "tok-that-must-not-leak"}})
    logging.getLogger("itsm_sync").info("settings: %s", settings)
    assert "tok-that-must-not-leak" not in caplog.text
    assert "tok-that-must-not-leak" not in settings.model_dump_json()
