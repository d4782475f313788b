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
