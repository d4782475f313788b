"""``itsm-sync check`` against the simulators: all ✓ when configured right; for each
misconfiguration a ✗ line saying what to do, and exit 1; nothing written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.harness import register_webhooks, simulator_env
from simulators.runner import SimulatorCluster
from sync import store

CLI = [sys.executable, "-m", "service"]


def check(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    return subprocess.run(
        [*CLI, "check"], env={**base, "COLUMNS": "300", **env}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def good(sims: SimulatorCluster, tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'check.db'}"
    store.migrate(store.make_engine(url))
    register_webhooks(sims, "http://itsm-sync.example:8000")
    return simulator_env(sims, url, api_token="check-admin-token")


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line[:1] in "✓✗"]


def test_all_good_is_all_ticks_and_writes_nothing(
    sims: SimulatorCluster, good: dict[str, str], tmp_path: Path
) -> None:
    for url in sims.urls.values():
        httpx.delete(f"{url}/_sim/requests").raise_for_status()
    result = check(tmp_path, good)
    assert result.returncode == 0, result.stdout + result.stderr
    out = lines(result)
    assert out and all(line.startswith("✓") for line in out), result.stdout
    for expected in (
        "✓ database reachable, schema at",
        "✓ servicenow/default: signed in as admin",
        "✓ servicenow/default: mapped incident fields exist",
        "✓ jira/default: project OPS",
        "✓ jira/default: issue type 'Incident' in OPS",
        "✓ jira/default: mapped fields exist",
        "✓ jira/default: webhook registered with issue-link events",
        "✓ statuspage/default: page simpage0001",
    ):
        assert any(line.startswith(expected) for line in out), (expected, result.stdout)
    for name, url in sims.urls.items():
        entries = httpx.get(f"{url}/_sim/requests").json()["requests"]
        assert entries, name  # the log works: check read something
        writes = [e for e in entries if str(e.get("method", "GET")) not in ("GET", "HEAD")]
        assert not writes, (name, writes)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"ITSM_SYNC_SERVICENOW__PASSWORD": "wrong"},
            "✗ servicenow/default: sign in as admin: credentials refused (HTTP 401): fix "
            "ITSM_SYNC_SERVICENOW__USERNAME / ITSM_SYNC_SERVICENOW__PASSWORD",
        ),
        (
            {"ITSM_SYNC_JIRA__API_TOKEN": "wrong"},
            "✗ jira/default: sign in as admin@example.com: credentials refused (HTTP 401): fix "
            "ITSM_SYNC_JIRA__EMAIL / ITSM_SYNC_JIRA__API_TOKEN",
        ),
        (
            {"ITSM_SYNC_STATUSPAGE__API_KEY": "wrong"},
            "✗ statuspage/default: sign in: API key refused (HTTP 401): fix "
            "ITSM_SYNC_STATUSPAGE__API_KEY",
        ),
        (
            {"ITSM_SYNC_STATUSPAGE__PAGE_ID": "nopage"},
            "✗ statuspage/default: page nopage: no such page for this key: fix "
            "ITSM_SYNC_STATUSPAGE__PAGE_ID",
        ),
        ({"ITSM_SYNC_JIRA__PROJECT": "NOPE"}, "✗ jira/default: project NOPE: "),
        (
            {"ITSM_SYNC_SYNC__JIRA_ISSUE_TYPE": "Outage"},
            "✗ jira/default: issue type 'Outage' in OPS: add it to the project's issue type scheme",
        ),
        ({"ITSM_SYNC_SERVICENOW__URL": "http://127.0.0.1:9"}, "connection refused: check "),
        ({"ITSM_SYNC_JIRA__WEBHOOK_SECRET": ""}, "set ITSM_SYNC_JIRA__WEBHOOK_SECRET"),
    ],
)
def test_each_misconfiguration_is_a_cross_with_the_remedy(
    good: dict[str, str], tmp_path: Path, change: dict[str, str], expected: str
) -> None:
    result = check(tmp_path, {**good, **change})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    crosses = [line for line in lines(result) if line.startswith("✗")]
    assert any(expected in line for line in crosses), result.stdout


def test_a_missing_mapped_field(good: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "jira.yaml").write_text(
        "system: jira\nobject_type: issue\nfields:\n"
        "  title:\n    path: summary\n  customer_impact:\n    path: customfield_99999\n"
    )
    (folder / "servicenow.yaml").write_text(
        "system: servicenow\nobject_type: incident\nfields:\n"
        "  title:\n    path: short_description\n  customer_impact:\n    path: u_blast_radius\n"
    )
    result = check(tmp_path, {**good, "ITSM_SYNC_MAPPINGS_DIR": str(folder)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗ jira/default: mapped fields exist (2): no field customfield_99999: create the" in (
        result.stdout
    )
    assert (
        "✗ servicenow/default: mapped incident fields exist (2): no column u_blast_radius on "
        "incident: create it" in result.stdout
    )


def test_an_unmigrated_database(good: dict[str, str], tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    result = check(tmp_path, {**good, "ITSM_SYNC_DATABASE_URL": f"sqlite:///{fresh}"})
    assert result.returncode == 1
    assert f"✗ database: no SQLite file at {fresh}: run `itsm-sync migrate`" in result.stdout
    assert not fresh.exists()  # check created nothing
    old = tmp_path / "old.db"
    engine = store.make_engine(f"sqlite:///{old}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('0003')")
    result = check(tmp_path, {**good, "ITSM_SYNC_DATABASE_URL": f"sqlite:///{old}"})
    assert "✗ database schema at 0003, this version needs" in result.stdout
    assert "run `itsm-sync migrate`" in result.stdout


def test_a_jira_webhook_without_issue_link_events(
    sims: SimulatorCluster, good: dict[str, str], tmp_path: Path
) -> None:
    httpx.delete(f"{sims.urls['jira']}/_sim/webhooks").raise_for_status()
    httpx.post(
        f"{sims.urls['jira']}/_sim/webhooks",
        json={"url": "http://x.example/webhooks/jira", "events": ["jira:issue_updated"]},
    ).raise_for_status()
    result = check(tmp_path, good)
    assert (
        "✗ jira/default: webhook registered with issue-link events: add the issue link "
        "created/deleted events" in result.stdout
    )
    httpx.delete(f"{sims.urls['jira']}/_sim/webhooks").raise_for_status()
    result = check(tmp_path, good)
    assert "✗ jira/default: webhook registered with issue-link events: register one" in (
        result.stdout
    )


def test_a_component_id_the_mapping_names_that_the_page_lacks(
    good: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    shipped = (Path(__file__).resolve().parents[2] / "mapping/defaults/statuspage.yaml").read_text()
    assert "cmpsearch001" in shipped
    (folder / "statuspage.yaml").write_text(shipped.replace("cmpsearch001", "cmpgone00001"))
    result = check(tmp_path, {**good, "ITSM_SYNC_MAPPINGS_DIR": str(folder)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗ statuspage/default: components (4 on the page): no component cmpgone00001 on " in (
        result.stdout
    ), result.stdout
