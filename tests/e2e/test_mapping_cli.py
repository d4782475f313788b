"""`itsm-sync mapping ...` as an admin runs it: a real process, against the simulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from mapping.registry import DEFAULTS
from service.harness import simulator_env
from simulators.runner import SimulatorCluster

CLI = [sys.executable, "-m", "service", "mapping"]


def run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def sim_env(sims: SimulatorCluster) -> dict[str, str]:
    return simulator_env(sims)


def test_validate_reports_every_problem_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "servicenow.yaml"
    bad.write_text(
        "system: servicenow\nobject_type: incident\nfields:\n"
        "  severity:\n    path: priority\n    values: {SEV1: '1', P5: '5'}\n"
        "  state:\n    path: state\n    when: sevrity == 'SEV1'\n"
    )
    result = run(["validate", str(bad)])
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "servicenow.yaml:6 fields.severity.values: 'P5' is not a canonical severity"
        in result.stdout
    )
    assert "servicenow.yaml:9 fields.state.when: unknown field 'sevrity'" in result.stdout
    assert "2 problem(s)" in result.stdout
    good = run(["validate", *map(str, sorted(DEFAULTS.glob("*.yaml")))])
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count("✓") == 3


def test_a_broken_mappings_dir_stops_show(tmp_path: Path) -> None:
    (tmp_path / "jira.yaml").write_text(
        "system: jira\nobject_type: issue\nfields: {nope: {path: x}}\n"
    )
    result = run(["show"], env={"ITSM_SYNC_MAPPINGS_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "jira.yaml:3 fields.nope: not a canonical field" in result.stderr


def test_show_the_effective_mapping(tmp_path: Path) -> None:
    custom = tmp_path / "jira.yaml"
    custom.write_text(
        "system: jira\nobject_type: issue\nfields:\n"
        "  title: {path: summary}\n"
        "  team: {path: customfield_10011, direction: out}\n"
    )
    result = run(["show", "--system", "jira"], env={"ITSM_SYNC_MAPPINGS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "customfield_10011" in result.stdout and str(custom) in result.stdout
    assert "priority.name" not in result.stdout  # the admin's file replaced the default
    sn = run(["show", "--system", "servicenow"])
    assert "short_description" in sn.stdout and "owner:servicenow" in sn.stdout


def test_preview_is_a_dry_run_against_the_live_systems(sims: SimulatorCluster) -> None:
    created = httpx.post(
        f"{sims.urls['servicenow']}/api/now/table/incident",
        auth=("admin", "admin"),
        json={
            "short_description": "Checkout fails for all customers",
            "impact": "1",
            "urgency": "1",
            "assigned_to": "a11ce000000000000000000000000001",
            "business_service": "5e000000000000000000000000000001",
            "work_notes": "db01 is out of disk",
        },
    ).json()["result"]
    for url in sims.urls.values():
        httpx.delete(f"{url}/_sim/stats").raise_for_status()
    result = run(
        ["preview", "--system", "servicenow", "--id", created["number"], "--json"],
        env=sim_env(sims),
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    canonical = out["canonical"]
    assert canonical["title"] == "Checkout fails for all customers"
    assert canonical["severity"] == "SEV1" and canonical["assignee"] == "alice@example.com"
    assert canonical["services"] == ["checkout"]
    jira = out["targets"]["jira/default"]["would_write"]
    assert jira["priority"] == {"name": "Highest"} and jira["components"] == [{"name": "Checkout"}]
    assert jira["assignee"]["accountId"]  # alice, looked up in Jira by email
    # Not public: the status page would get nothing, and says why.
    assert "public" in out["targets"]["statuspage/default"]["skipped"]
    for name, url in sims.urls.items():
        stats = httpx.get(f"{url}/_sim/stats").json()
        writes = {
            k: n for k, n in stats.items() if k.split(" ")[0] in ("POST", "PUT", "PATCH", "DELETE")
        }
        assert writes == {}, f"preview wrote to {name}: {writes}"


def test_preview_names_what_is_missing(sims: SimulatorCluster) -> None:
    result = run(["preview", "--system", "servicenow", "--id", "INC9999999"], env=sim_env(sims))
    assert result.returncode == 1
    assert "INC9999999 not found" in result.stderr


def test_diff_says_what_changes_for_users(tmp_path: Path) -> None:
    old = DEFAULTS / "servicenow.yaml"
    new = tmp_path / "servicenow.yaml"
    new.write_text(
        old.read_text()
        .replace('SEV4: ["4", "5"]', 'SEV4: ["4"]')
        .replace("  description:\n    path: description\n", "")
        .replace(
            "  parent:\n    path: parent_incident\n",
            "  parent:\n    path: parent_incident\n    direction: in\n",
        )
    )
    result = run(["diff", str(old), str(new)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "- description <-> description: no longer mapped" in lines
    assert "- parent <-> parent_incident: no longer mapped" in lines
    assert "+ parent <- parent_incident: now mapped" in lines
    assert (
        "~ severity <- priority: values 'SEV1=1, SEV2=2, SEV3=3, SEV4=4|5' -> 'SEV1=1, SEV2=2, SEV3=3, SEV4=4'"
        in lines
    )
    same = run(["diff", str(old), str(old)])
    assert same.stdout.strip() == "no change for users"


def test_save_versions_and_rollback_from_the_cli(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    env = {
        "ITSM_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "ITSM_SYNC_MAPPINGS_DIR": str(folder),
    }
    mine = tmp_path / "jira.yaml"
    mine.write_text(
        (DEFAULTS / "jira.yaml")
        .read_text()
        .replace("path: summary\n", "path: summary\n    policy: owner:jira\n", 1)
    )
    saved = run(["save", str(mine), "--as", "ada"], env)
    assert saved.returncode == 0, saved.stderr
    assert "~ title <-> summary: policy 'latest' -> 'owner:jira'" in saved.stdout
    assert (folder / "jira.yaml").read_text() == mine.read_text()
    listed = run(["versions", "--system", "jira"], env)
    assert listed.returncode == 0, listed.stderr
    first = listed.stdout.splitlines()[0]
    assert "jira/default" in first and "(current)" in first and "by cli:ada" in first
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: jira\nobject_type: issue\nfields: {title: {nope: 1}}\n")
    refused = run(["save", str(bad)], env)
    assert refused.returncode == 2 and "bad.yaml:3" in refused.stderr
    assert (folder / "jira.yaml").read_text() == mine.read_text()  # nothing half-written
    version = first.split()[0]
    back = run(["rollback", version], env)
    assert back.returncode == 0, back.stderr
    gone = run(["rollback", "999"], env)
    assert gone.returncode == 1 and "no mapping version 999" in gone.stderr
