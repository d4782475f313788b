"""The real webhook payloads recorded in api-contracts are parsed into observations."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from config.settings import JiraSettings, ServiceNowSettings, StatuspageSettings
from connectors.errors import AuthFailed, Fatal
from connectors.jira import JiraConnector
from connectors.servicenow import ServiceNowConnector
from connectors.statuspage import StatuspageConnector
from tests.contracts import CONTRACTS

JIRA_SECRET = "recorded-secret"


def signed(body: bytes, secret: str = JIRA_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature": f"sha256={digest}",
        "X-Atlassian-Webhook-Identifier": "d-1",
        "Content-Type": "application/json",
    }


@pytest.fixture
def jira() -> JiraConnector:
    # parse_webhook makes no call: the URL is never contacted.
    return JiraConnector(JiraSettings.model_validate({"webhook_secret": JIRA_SECRET}))


@pytest.mark.parametrize(
    ("name", "key", "status"),
    [
        ("issue_created.json", "BUG-15", "Open"),
        ("issue_updated__status.json", "TEST-1", None),
        ("comment_created.json", "ZUL-1", None),
    ],
)
def test_jira_recorded_deliveries(
    jira: JiraConnector, name: str, key: str, status: str | None
) -> None:
    body = (CONTRACTS / "jira" / "webhooks" / name).read_bytes()
    [obs] = jira.parse_webhook(signed(body), body)
    payload = json.loads(body)
    assert obs.ref.key == key and obs.ref.id == payload["issue"]["id"]
    assert obs.delivery_id == "d-1"
    assert obs.version[0] > 0
    if status:
        assert obs.fields["status"]["name"] == status


def test_jira_signature_is_checked(jira: JiraConnector) -> None:
    body = (CONTRACTS / "jira" / "webhooks" / "issue_created.json").read_bytes()
    with pytest.raises(AuthFailed):
        jira.parse_webhook(signed(body, "another-secret"), body)
    with pytest.raises(AuthFailed):
        jira.parse_webhook(signed(body), body.replace(b"BUG-15", b"BUG-16"))
    with pytest.raises(AuthFailed):
        jira.parse_webhook({}, body)
    with pytest.raises(Fatal, match="not a Jira issue delivery"):
        jira.parse_webhook(signed(b"[]"), b"[]")


@pytest.fixture
def statuspage() -> StatuspageConnector:
    return StatuspageConnector(StatuspageSettings.model_validate({"webhook_secret": "tok"}))


@pytest.mark.parametrize(
    ("name", "object_type"),
    [
        ("incident_created.json", "incident"),
        ("incident_update.json", "incident"),
        ("component_status_update.json", "component"),
    ],
)
def test_statuspage_recorded_notifications(
    statuspage: StatuspageConnector, name: str, object_type: str
) -> None:
    body = (CONTRACTS / "statuspage" / "webhooks" / name).read_bytes()
    [obs] = statuspage.parse_webhook({}, body, {"token": "tok"})
    assert obs.ref.object_type == object_type
    assert obs.ref.id == json.loads(body)[object_type]["id"]
    assert obs.delivery_id
    with pytest.raises(AuthFailed):
        statuspage.parse_webhook({}, body, {"token": "nope"})
    with pytest.raises(AuthFailed):
        statuspage.parse_webhook({}, body)


def test_statuspage_update_is_newer_than_create(statuspage: StatuspageConnector) -> None:
    folder = CONTRACTS / "statuspage" / "webhooks"
    [created] = statuspage.parse_webhook(
        {}, (folder / "incident_created.json").read_bytes(), {"token": "tok"}
    )
    [updated] = statuspage.parse_webhook(
        {}, (folder / "incident_update.json").read_bytes(), {"token": "tok"}
    )
    assert updated.version > created.version
    assert created.delivery_id != updated.delivery_id


def test_servicenow_delivery_needs_the_secret() -> None:
    sn = ServiceNowConnector(ServiceNowSettings.model_validate({"webhook_secret": "s3"}))
    record = {
        "sys_id": "a" * 32,
        "number": "INC0010001",
        "sys_mod_count": "4",
        "sys_updated_on": "2026-11-25 10:00:00",
        "assigned_to": {"link": "https://x/api/now/table/sys_user/" + "b" * 32, "value": "b" * 32},
    }
    body = json.dumps(
        {"table": "incident", "operation": "update", "sys_id": "a" * 32, "record": record}
    ).encode()
    [obs] = sn.parse_webhook({"X-ServiceNow-Secret": "s3", "X-ServiceNow-Delivery": "a:4"}, body)
    assert obs.version == (4,) and obs.ref.key == "INC0010001"
    assert obs.fields["assigned_to"] == "b" * 32  # reference link dropped, value kept
    with pytest.raises(AuthFailed):
        sn.parse_webhook({"X-ServiceNow-Secret": "s4"}, body)
