"""No built-in secrets: nothing has a default outside the simulator profile; ``run`` refuses to
start without them; a delivery signed with a constant from our docs is rejected; secrets are
masked in ``config`` and in every log line (the database password included)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.logging import JsonFormatter, RedactingFormatter
from config.settings import Settings, missing_for_run
from service.harness import WEBHOOK_SECRETS

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "service"]
DB_PASSWORD = "db-pass-Zq81"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    return {**env, "COLUMNS": "200", **extra}


def configured(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A production-like configuration: every secret set, none of them a documented one."""
    base = dict(
        ITSM_SYNC_SERVICENOW__PASSWORD="prod-sn-pass",
        ITSM_SYNC_SERVICENOW__WEBHOOK_SECRET="prod-sn-hook-7f3a",
        ITSM_SYNC_JIRA__API_TOKEN="prod-jira-token",
        ITSM_SYNC_JIRA__WEBHOOK_SECRET="prod-jira-hook-91c2",
        ITSM_SYNC_STATUSPAGE__API_KEY="prod-sp-key",
        ITSM_SYNC_STATUSPAGE__WEBHOOK_SECRET="prod-sp-hook-5d0e",
        ITSM_SYNC_API_TOKENS='[{"name": "ops", "token": "prod-api-token", "role": "admin"}]',
        ITSM_SYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'ops.db'}",
        ITSM_SYNC_SYNC__POLL_INTERVAL_SECONDS="3600",
    )
    return clean_env(**{**base, **extra})


def documented_constants() -> set[str]:
    """Every secret-looking constant printed in our docs, README and the demo harness."""
    found = set(WEBHOOK_SECRETS.values())
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        found |= set(re.findall(r"\b(?:sim|demo)-[a-z]+(?:-[a-z]+)*\b", doc.read_text()))
    return found | {"admin", "sim-servicenow-secret", "sim-jira-secret", "sim-statuspage-secret"}


def test_no_secret_has_a_default() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    for section, names in (
        (s.servicenow, ("password", "webhook_secret")),
        (s.jira, ("api_token", "webhook_secret")),
        (s.statuspage, ("api_key", "webhook_secret")),
    ):
        for name in names:
            assert getattr(section, name) is None, name
    assert s.api_tokens == []


def test_missing_for_run_names_each_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("ITSM_SYNC_")]:
        monkeypatch.delenv(key)
    s = Settings.model_validate(
        {
            "jira": {"api_token": "t", "webhook_secret": "w"},
            "statuspage": {"api_key": "k", "webhooks": False},
            "instances": {"jira": {"eu": {"api_token": "t2"}}},
        }
    )
    assert missing_for_run(s) == [
        "ITSM_SYNC_SERVICENOW__PASSWORD",
        "ITSM_SYNC_SERVICENOW__WEBHOOK_SECRET",
        "ITSM_SYNC_INSTANCES__JIRA__EU__WEBHOOK_SECRET",
        "ITSM_SYNC_API_TOKENS",
    ]


def test_run_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    env = configured(tmp_path)
    del env["ITSM_SYNC_JIRA__WEBHOOK_SECRET"], env["ITSM_SYNC_API_TOKENS"]
    result = subprocess.run(
        [*CLI, "run", "--port", "0"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ITSM_SYNC_JIRA__WEBHOOK_SECRET" in lines[0] and "ITSM_SYNC_API_TOKENS" in lines[0]
    assert "SERVICENOW" not in lines[0] and "Traceback" not in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``itsm-sync run`` configured for production (no simulators behind it: polls fail)."""
    port = _free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "run", "--port", str(port), "--workers-in-process"],
            env=configured(tmp_path, ITSM_SYNC_INTAKE__REJECTION_BURST="1000"), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_delivery_signed_with_any_documented_constant_is_rejected(
    running: tuple[str, Path],
) -> None:
    url, log = running
    constants = documented_constants()
    assert {"sim-servicenow-secret", "demo-jira-secret", "sim-token"} <= constants
    body = json.dumps({"table": "incident", "record": {"sys_id": "x"}}).encode()
    jira_body = json.dumps({"webhookEvent": "jira:issue_updated", "issue": {"id": "1"}}).encode()
    with httpx.Client(base_url=url, timeout=10) as client:
        for constant in sorted(constants):
            sig = "sha256=" + hmac.new(constant.encode(), jira_body, hashlib.sha256).hexdigest()
            answers = [
                client.post(
                    "/webhooks/servicenow", content=body,
                    headers={"X-ServiceNow-Secret": constant},
                ),
                client.post("/webhooks/jira", content=jira_body, headers={"X-Hub-Signature": sig}),
                client.post(f"/webhooks/statuspage?token={constant}", content=b"{}"),
            ]  # fmt: skip
            assert [a.status_code for a in answers] == [401, 401, 401], constant
        # The configured secret is accepted (so the 401s above are about the constants).
        ok = client.post(
            "/webhooks/servicenow",
            content=body,
            headers={"X-ServiceNow-Secret": "prod-sn-hook-7f3a"},
        )
        assert ok.status_code in (202, 400), ok.text
    for secret in ("prod-sn-hook-7f3a", "prod-sn-pass", "prod-api-token"):
        assert secret not in log.read_text()


def test_config_masks_every_secret_and_the_database_password(tmp_path: Path) -> None:
    env = configured(
        tmp_path,
        ITSM_SYNC_DATABASE_URL=f"postgresql+psycopg://sync:{DB_PASSWORD}@db.example:5432/itsm",
    )
    result = subprocess.run(
        [*CLI, "config"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name, value in env.items():
        if name.startswith("ITSM_SYNC_") and any(
            word in name for word in ("PASSWORD", "TOKEN", "KEY", "SECRET")
        ):
            for secret in re.findall(r'"token": "([^"]+)"', value) or [value]:
                assert secret not in result.stdout, name
    assert DB_PASSWORD not in result.stdout
    assert "postgresql+psycopg://sync:***@db.example:5432/itsm" in result.stdout


@pytest.mark.parametrize("formatter", [JsonFormatter(), RedactingFormatter("%(message)s")])
def test_every_log_line_is_masked(formatter: logging.Formatter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log = logging.getLogger("itsm_sync.test_secrets")
    log.addHandler(handler)
    try:
        url = f"postgresql+psycopg://sync:{DB_PASSWORD}@db.example/itsm"
        log.warning("cannot reach %s", url, extra={"database": url})
        log.warning("headers %s", {"X-ServiceNow-Secret": "hook-secret-1", "Authorization": "x"})
        try:
            raise RuntimeError(f"connect to {url} failed")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert DB_PASSWORD not in text and "hook-secret-1" not in text
    assert "sync:***@db.example" in text


def _refused(connector: object, secret: str) -> bool:
    """Whether ``connector`` refuses a delivery proven with ``secret`` (its signature check)."""
    from connectors.errors import AuthFailed, ConnectorError

    record = json.dumps({"table": "incident", "record": {"sys_id": "a" * 32}}).encode()
    issue = json.dumps({"webhookEvent": "jira:issue_updated", "issue": {"id": "1", "key": "K-1"}})
    mac = hmac.new(secret.encode(), issue.encode(), hashlib.sha256).hexdigest()
    system = getattr(connector, "system", "")
    try:
        if system == "servicenow":
            connector.parse_webhook({"X-ServiceNow-Secret": secret}, record)  # type: ignore[attr-defined]
        elif system == "jira":
            connector.parse_webhook({"X-Hub-Signature": "sha256=" + mac}, issue.encode())  # type: ignore[attr-defined]
        else:
            connector.parse_webhook({}, b'{"component": {"id": "c1"}}', {"token": secret})  # type: ignore[attr-defined]
    except AuthFailed:
        return True
    except (ConnectorError, KeyError, ValueError):
        return False  # past the signature: the body's shape is not what is tested here
    return False


def test_rotation_accepts_the_previous_secret_until_it_is_removed() -> None:
    from config.settings import JiraSettings, ServiceNowSettings, StatuspageSettings
    from connectors.jira import JiraConnector
    from connectors.servicenow import ServiceNowConnector
    from connectors.statuspage import StatuspageConnector

    rotating = {"webhook_secret": "new-secret", "webhook_secret_previous": "old-secret"}
    done = {"webhook_secret": "new-secret"}
    for settings, accepted in ((rotating, {"new-secret", "old-secret"}), (done, {"new-secret"})):
        connectors = [
            ServiceNowConnector(ServiceNowSettings.model_validate(settings)),
            JiraConnector(JiraSettings.model_validate(settings)),
            StatuspageConnector(StatuspageSettings.model_validate(settings)),
        ]
        for connector in connectors:
            for secret in ("new-secret", "old-secret", "other"):
                assert _refused(connector, secret) == (secret not in accepted), (
                    connector.system, settings, secret,
                )  # fmt: skip
