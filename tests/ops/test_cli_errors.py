"""Errors through the real CLI: one line with the cause and the remedy, no traceback, no raw
pydantic dump; ``--debug`` shows the traceback; ``--version``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.harness import simulator_env
from simulators.runner import SimulatorCluster

CLI = [sys.executable, "-m", "service"]


def itsm(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    return subprocess.run(
        [*CLI, *args], env={**base, "COLUMNS": "300", **env}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    assert "pydantic" not in result.stderr and "validation error" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode != 0
    return lines[0]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nonsense", "ITSM_SYNC_DATABASE_URL is not a database URL: use postgresql+psycopg://"),
        (
            "postgresql+psycopg://sync:pw-Secret9@127.0.0.1:9/itsm",
            "cannot connect to the database at 127.0.0.1:9: connection refused: start "
            "PostgreSQL or fix the host and port in ITSM_SYNC_DATABASE_URL",
        ),
        (
            "sqlite:////no/such/folder/itsm.db",
            "SQLite cannot open the database file named by ITSM_SYNC_DATABASE_URL: does its "
            "folder exist",
        ),
    ],
)
def test_bad_database_url_is_one_line(tmp_path: Path, url: str, expected: str) -> None:
    result = itsm(["status"], tmp_path, ITSM_SYNC_DATABASE_URL=url)
    line = one_line(result)
    assert expected in line
    assert "pw-Secret9" not in result.stdout + result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = itsm(["--debug", "status"], tmp_path, ITSM_SYNC_DATABASE_URL="nonsense")
    assert result.returncode == 1
    assert "Traceback" in result.stderr or "ArgumentError" in result.stderr
    assert "is not a database URL" in result.stderr.strip().splitlines()[-1]


def test_invalid_setting_names_the_variable_not_a_pydantic_dump(tmp_path: Path) -> None:
    line = one_line(itsm(["status"], tmp_path, ITSM_SYNC_JIRA__COLOUR="blue"))
    assert line == (
        "error: ITSM_SYNC_JIRA__COLOUR (jira.colour): not a setting (`itsm-sync config` shows "
        "every name)"
    )
    result = itsm(["config"], tmp_path, ITSM_SYNC_SYNC__WORKERS="lots")
    assert "ITSM_SYNC_SYNC__WORKERS (sync.workers): Input should be a valid integer" in one_line(
        result
    )


def test_invalid_key_in_the_config_file_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "itsm-sync.yaml"
    config.write_text("jira:\n  project: OPS\n  colour: blue\n")
    line = one_line(itsm(["status", "--config", str(config)], tmp_path))
    assert f"{config}:3 jira.colour" in line


def test_version(tmp_path: Path) -> None:
    result = itsm(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == "itsm-sync 0.1.0"


def test_tls_failure_says_which_setting_to_set(tls_sims: SimulatorCluster, tmp_path: Path) -> None:
    env = simulator_env(tls_sims, f"sqlite:///{tmp_path / 'tls.db'}")
    result = itsm(["sync", "--once", "--timeout", "5"], tmp_path, **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    for system in ("servicenow", "jira"):
        assert (
            f"{system}: list incident: TLS certificate not trusted (certificate verify failed"
            if system == "servicenow"
            else "jira: search: TLS certificate not trusted (certificate verify failed"
        ) in result.stdout, result.stdout
        assert (
            f"set ITSM_SYNC_{system.upper()}__CA_BUNDLE to the CA file that signed it"
            in result.stdout
        )


def test_a_mistyped_variable_is_named_not_silently_ignored(tmp_path: Path) -> None:
    result = itsm(
        ["config"], tmp_path, ITSM_SYNC_DATABSE_URL="postgresql+psycopg://x@db/itsm",
        ITSM_SYNC_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1/test",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "warning: ITSM_SYNC_DATABSE_URL is not a setting (ignored): did you mean "
        "ITSM_SYNC_DATABASE_URL?"
    ]
