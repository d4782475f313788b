"""The mapping service layer: check a pasted spec (file:line), save it, roll back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mapping.registry import DEFAULTS, load_mappings
from service.domain import mapping
from service.domain.errors import Forbidden, Invalid
from service.domain.roles import Actor
from sync import store

ADMIN = Actor.token("ada", "admin")
JIRA = (DEFAULTS / "jira.yaml").read_text()


@pytest.fixture
def db(tmp_path: Path) -> Engine:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate(engine)
    return engine


def test_a_bad_spec_names_file_and_line() -> None:
    bad = JIRA.replace("path: summary", "path: summary\n    bogus: 1", 1)
    result = mapping.validate(text=bad, name="jira.yaml")
    assert not result["ok"]
    where = [p["where"] for p in result["problems"]]
    line = bad.splitlines().index("    bogus: 1") + 1
    assert any(w == f"jira.yaml:{line - 1}" or w == f"jira.yaml:{line}" for w in where), where
    assert "bogus" in result["problems"][0]["text"]


def test_save_then_roll_back_keeps_every_version(db: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    edited = JIRA.replace("path: summary", "path: summary\n    policy: latest", 1)
    with store.session_scope(db) as s:
        saved = mapping.save(
            s, text=edited, directory=str(folder), mappings=load_mappings(None), actor=ADMIN
        )
    assert Path(saved["file"]) == folder / "jira.yaml"
    assert (folder / "jira.yaml").read_text() == edited
    with store.session_scope(db, readonly=True) as s:
        first = mapping.versions(s, system="jira")[0]
    assert first["accepted_by"] == "token:ada" and first["current"]
    with store.session_scope(db) as s:
        mapping.save(
            s, text=JIRA, directory=str(folder), mappings=load_mappings(folder), actor=ADMIN
        )
    with store.session_scope(db) as s:
        back = mapping.rollback(
            s,
            version_id=first["id"],
            directory=str(folder),
            mappings=load_mappings(folder),
            actor=ADMIN,
        )
    assert back["changes"][0].startswith(f"rolled back to version {first['id']}")
    assert (folder / "jira.yaml").read_text() == edited
    with store.session_scope(db, readonly=True) as s:
        listed = mapping.versions(s, system="jira")
    assert [v["current"] for v in listed] == [True, False, False]
    assert listed[0]["digest"] == first["digest"]


def test_an_invalid_spec_writes_nothing(db: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    with store.session_scope(db) as s, pytest.raises(Invalid, match=r"pasted.yaml:\d+"):
        mapping.save(
            s,
            text="system: jira\nobject_type: issue\nfields: {title: {nope: 1}}\n",
            directory=str(folder),
            mappings=load_mappings(None),
            actor=ADMIN,
        )
    assert list(folder.iterdir()) == []
    with store.session_scope(db, readonly=True) as s:
        assert mapping.versions(s) == []


def test_only_an_admin_saves(db: Engine, tmp_path: Path) -> None:
    with store.session_scope(db) as s, pytest.raises(Forbidden, match="admin"):
        mapping.save(
            s,
            text=JIRA,
            directory=str(tmp_path),
            mappings=load_mappings(None),
            actor=Actor.token("cm", "change-manager"),
        )


def test_without_a_mappings_dir_save_says_so(db: Engine) -> None:
    with store.session_scope(db) as s, pytest.raises(Invalid, match="mappings_dir"):
        mapping.save(s, text=JIRA, directory=None, mappings=load_mappings(None), actor=ADMIN)


def test_a_spec_posted_from_a_browser_is_stored_as_the_reloader_reads_it(
    db: Engine, tmp_path: Path
) -> None:
    """A textarea posts CRLF line ends; the file and the stored version must agree, or the
    reloader, which reads the file back, stores the same mapping again as someone else's."""
    with store.session_scope(db) as s:
        saved = mapping.save(
            s,
            text=JIRA.replace("\n", "\r\n"),
            directory=str(tmp_path),
            mappings=load_mappings(None),
            actor=ADMIN,
        )
    assert Path(saved["file"]).read_bytes() == JIRA.encode()
    assert saved["digest"] == load_mappings(tmp_path).get("jira").digest
