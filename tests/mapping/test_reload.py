"""A running service picks up mapping changes; a broken file never replaces a working one."""

from __future__ import annotations

import os
from pathlib import Path

from mapping.registry import Reloader
from mapping.spec import Mapping, MappingFileError

JIRA = "system: jira\nobject_type: issue\nfields:\n  title: {path: summary}\n"


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, (stat.st_atime + 5, stat.st_mtime + 5))  # a visibly newer file


def test_reload_accepts_good_and_keeps_working_mapping_on_bad(tmp_path: Path) -> None:
    accepted: list[tuple[Mapping, list[str]]] = []
    rejected: list[MappingFileError] = []
    reloader = Reloader(
        tmp_path, on_accept=lambda m, d: accepted.append((m, d)), on_reject=rejected.append
    )
    assert reloader.current.get("jira").for_field("severity")  # the shipped default
    assert reloader.check() is False  # nothing changed

    touch(tmp_path / "jira.yaml", JIRA)
    assert reloader.check() is True
    assert [m.key for m, _ in accepted] == [("jira", "default")]
    assert "- severity <-> priority.name: no longer mapped" in accepted[0][1]
    assert not reloader.current.get("jira").for_field("severity")

    touch(tmp_path / "jira.yaml", JIRA + "  severity: {path: priority.name, values: {SEV9: x}}\n")
    assert reloader.check() is False
    assert len(rejected) == 1 and "jira.yaml:5 fields.severity.values: 'SEV9'" in str(rejected[0])
    assert reloader.current.get("jira").for_field("title")[0].path == "summary"  # still working
    assert len(accepted) == 1

    touch(tmp_path / "jira.yaml", JIRA.replace("summary", "customfield_10011"))
    assert reloader.check() is True
    assert reloader.current.get("jira").for_field("title")[0].path == "customfield_10011"
    assert len(accepted) == 2


def test_the_service_stores_every_accepted_version_with_who_and_the_diff(tmp_path: Path) -> None:
    from config.settings import Settings
    from service.runtime import Runtime
    from sync import store

    folder = tmp_path / "mappings"
    folder.mkdir()
    settings = Settings.model_validate(
        {"database_url": f"sqlite:///{tmp_path / 'db.sqlite'}", "mappings_dir": str(folder)}
    )
    runtime = Runtime(settings)
    try:
        touch(folder / "jira.yaml", JIRA)
        assert runtime.reloader.check() is True
        touch(folder / "jira.yaml", "system: jira\nobject_type: issue\nfields: {nope: {path: x}}\n")
        assert runtime.reloader.check() is False
        assert "jira.yaml:3 fields.nope: not a canonical field" in runtime.mapping_problems
        with store.session_scope(runtime.db) as s:
            versions = store.mapping_versions(s, system="jira", instance="default")
        assert len(versions) == 2  # the shipped default at start, then the admin's file
        assert "- severity <-> priority.name: no longer mapped" in versions[-1].diff
        assert versions[-1].source == JIRA and "@" in versions[-1].accepted_by
        assert runtime.mappings.get("jira").for_field("title")[0].path == "summary"
    finally:
        runtime.stop()
