"""The deploy files parse and name real commands and options (no docker build here)."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import yaml
from typer.main import get_command

from service.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _options(*path: str) -> set[str]:
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def _assert_itsm_sync_args(args: list[str]) -> None:
    """``args`` after the ``itsm-sync`` program: a real command with real options."""
    command, *rest = args
    known = _options(command)
    for arg in rest:
        if arg.startswith("--"):
            assert arg.split("=")[0] in known, (command, arg, known)


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f.endswith("-slim") for f in froms), froms
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD .*/healthz", text, re.M)
    assert re.search(r'^ENTRYPOINT \["itsm-sync"\]', text, re.M)
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    _assert_itsm_sync_args(cmd)
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        assert (ROOT / source).exists(), source
    assert "8000" in re.findall(r"^EXPOSE (\d+)", text, re.M)


def test_compose_runs_the_service_on_postgresql() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:")
    app_service = services["itsm-sync"]
    assert app_service["build"] == "."
    _assert_itsm_sync_args(app_service["command"])
    url = app_service["environment"]["ITSM_SYNC_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@db:5432/" in url
    assert app_service["depends_on"]["db"]["condition"] == "service_healthy"
    assert "db-data" in compose["volumes"]


def test_systemd_unit_names_real_commands() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "itsm-sync.service")
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service["User"] != "root"
    program, *args = shlex.split(service["ExecStart"])
    assert program.endswith("/itsm-sync")
    _assert_itsm_sync_args(args)
    assert service["ExecReload"].endswith("-HUP $MAINPID")  # SIGHUP reloads the mappings
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_env_example_names_only_real_settings() -> None:
    from config.settings import Settings

    text = (ROOT / "deploy" / "itsm-sync.env.example").read_text()
    names = re.findall(r"^(ITSM_SYNC_[A-Z_]+)=", text, re.M)
    assert "ITSM_SYNC_SERVICENOW__WEBHOOK_SECRET" in names
    for name in names:
        path = name.removeprefix("ITSM_SYNC_").lower().split("__")
        model: type = Settings
        for part in path:
            fields = model.model_fields  # type: ignore[attr-defined]
            assert part in fields, name
            annotation = fields[part].annotation
            model = annotation if isinstance(annotation, type) else object


def test_license_and_changelog() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
