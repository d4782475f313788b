"""Mappings: the versions in use (who, when, what changed), checking and previewing a spec
before it is saved, saving one, and rolling back to an earlier version.

A saved spec is a file in ``mappings_dir`` (the admin's folder); the runtime's reloader picks
it up like any edit of that folder, so the CLI, the API and the console change mappings the
one way the service already knows. The version is stored with who saved it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from connectors.base import Connector
from connectors.errors import ConnectorError
from mapping.engine import applies, build_incident, from_canonical, to_canonical
from mapping.model import Incident
from mapping.registry import MappingSet, diff_mappings, mapping_files
from mapping.spec import Mapping, MappingError, MappingFileError, load_mapping, parse_mapping
from mapping.transforms import TransformContext
from service.domain.errors import Invalid, NotFound
from service.domain.incidents import find
from service.domain.roles import Actor, Permission
from sync import store
from sync.people import context_for

MAX_SPEC = 200_000  # characters: a mapping file is a page or two


def _problems(exc: MappingFileError) -> list[dict[str, Any]]:
    return [
        {
            "file": p.file,
            "line": p.line,
            "path": p.path,
            "message": p.message,
            "where": f"{p.file}:{p.line}" if p.line else p.file,
            "text": str(p),
        }
        for p in exc.problems
    ]


def _version(v: store.MappingVersion, current: bool) -> dict[str, Any]:
    return {
        "id": v.id,
        "system": v.system,
        "instance": v.instance,
        "digest": v.digest,
        "accepted_at": v.accepted_at.isoformat(),
        "accepted_by": v.accepted_by,
        "diff": v.diff.splitlines(),
        "current": current,
    }


def versions(
    s: Session, *, system: str | None = None, instance: str = "default"
) -> list[dict[str, Any]]:
    """Every stored version (one system instance's, or all), newest first, without sources."""
    statement = select(store.MappingVersion)
    if system is not None:
        statement = statement.where(
            col(store.MappingVersion.system) == system,
            col(store.MappingVersion.instance) == instance,
        )
    rows = list(
        s.exec(
            statement.order_by(col(store.MappingVersion.accepted_at), col(store.MappingVersion.id))
        )
    )
    latest: dict[tuple[str, str], int | None] = {(v.system, v.instance): v.id for v in rows}
    return [_version(v, latest[(v.system, v.instance)] == v.id) for v in reversed(rows)]


def version_source(s: Session, *, version_id: int) -> dict[str, Any]:
    row = s.get(store.MappingVersion, version_id)
    if row is None:
        raise NotFound(f"no mapping version {version_id}", field="version")
    return {**_version(row, False), "source": row.source}


def normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check(text: str, *, name: str = "pasted.yaml") -> Mapping:
    """The spec parsed, or :class:`MappingFileError` with every problem and its line. Line
    ends are made ``\n`` (a browser posts a textarea with ``\r\n``; the file, read back by
    the reloader, must have the digest the version was stored with)."""
    text = normalise(text)
    if len(text) > MAX_SPEC:
        raise Invalid(f"the spec has {len(text)} characters; at most {MAX_SPEC}", field="spec")
    if not text.strip():
        raise Invalid("the spec is empty: paste a mapping file", field="spec")
    return parse_mapping(text, name=name)


def validate(*, text: str, name: str = "pasted.yaml") -> dict[str, Any]:
    """``{"ok": bool, "problems": [...]}`` plus, when it parses, what it maps."""
    try:
        mapping = check(text, name=name)
    except MappingFileError as exc:
        return {"ok": False, "problems": _problems(exc)}
    return {
        "ok": True,
        "problems": [],
        "system": mapping.system,
        "instance": mapping.instance,
        "object_type": mapping.object_type,
        "fields": len(mapping.fields),
        "digest": mapping.digest,
    }


def validate_files(paths: list[Path]) -> list[dict[str, Any]]:
    """Each file checked (for ``itsm-sync mapping validate``)."""
    out = []
    for path in paths:
        try:
            mapping = load_mapping(path)
        except MappingFileError as exc:
            out.append({"file": str(path), "ok": False, "problems": _problems(exc)})
            continue
        out.append(
            {
                "file": str(path),
                "ok": True,
                "problems": [],
                "system": mapping.system,
                "instance": mapping.instance,
                "fields": len(mapping.fields),
            }
        )
    return out


def preview(
    s: Session,
    *,
    text: str,
    ident: str,
    mappings: MappingSet,
    connectors: MappingABC[tuple[str, str], Connector],
    name: str = "pasted.yaml",
) -> dict[str, Any]:
    """A dry run of a pasted spec against a stored incident: its problems (with ``file:line``),
    what changes for users compared with the mapping in use, what it would write to the
    incident's record now and with the mapping in use, and what it reads from the record's
    last observed state. Nothing is written anywhere."""
    result = validate(text=text, name=name)
    if not result["ok"]:
        return result
    spec = check(text, name=name)
    row = find(s, ident=ident)
    incident = Incident.model_validate({**row.data, "id": row.id})
    try:
        current: Mapping | None = mappings.get(spec.system, spec.instance)
    except KeyError:
        current = None
    result["incident"] = {"id": row.id, "title": incident.title}
    result["changes"] = diff_mappings(current, spec) if current else ["(a new system instance)"]
    connector = connectors.get(spec.key)
    ctx = context_for(connector) if connector is not None else TransformContext(spec.system)

    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (ConnectorError, MappingError) as exc:
            return {"error": str(exc)}

    if not applies(spec, incident):
        rule = spec.when.source if spec.when else ""
        result["would_write"] = {"skipped": f"the incident does not match: {rule}"}
    else:
        result["would_write"] = attempt(lambda: from_canonical(spec, incident, ctx))
    if current is not None and applies(current, incident):
        result["writes_now"] = attempt(lambda: from_canonical(current, incident, ctx))
    link = next((x for x in store.links_of(s, row.id) if (x.system, x.instance) == spec.key), None)
    result["would_read"] = None
    if link is not None:
        seen = store.latest_observation(
            s,
            system=link.system,
            instance=link.instance,
            object_type=link.object_type,
            remote_id=link.remote_id,
        )
        if seen is not None:
            result["would_read"] = attempt(
                lambda: build_incident(to_canonical(spec, seen.fields, ctx)).model_dump(
                    mode="json", exclude_defaults=True
                )
            )
    return result


def _target_file(directory: Path, mapping: Mapping) -> Path:
    """The admin's file that holds this system instance, or a new one named after it."""
    for path in mapping_files(directory):
        if path.parent != directory:
            continue
        try:
            if load_mapping(path).key == mapping.key:
                return path
        except MappingFileError:
            continue
    suffix = "" if mapping.instance == "default" else f"-{mapping.instance}"
    return directory / f"{mapping.system}{suffix}.yaml"


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole (a reader never sees half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(
    s: Session,
    *,
    text: str,
    directory: str | None,
    mappings: MappingSet,
    actor: Actor,
    note: str = "",
    name: str = "pasted.yaml",
) -> dict[str, Any]:
    """Validate ``text``, write it to the admin's mapping folder and store it as the new version
    (with who saved it and what changes for users). An invalid spec changes nothing. The
    runtime's reloader applies it on its next look; callers that want it at once call
    ``Reloader.check`` after the session commits (the reloader stores versions in its own)."""
    actor.require(Permission.OPERATE)
    if directory is None:
        raise Invalid(
            "no mappings_dir is configured: set mappings_dir to a folder to save mappings",
            field="mappings_dir",
        )
    try:
        spec = check(text, name=name)
    except MappingFileError as exc:
        raise Invalid(f"the spec is invalid: {exc.problems[0]}", field="spec") from exc
    try:
        current: Mapping | None = mappings.get(spec.system, spec.instance)
    except KeyError:
        current = None
    changes = diff_mappings(current, spec) if current else ["(a new system instance)"]
    if note:
        changes.insert(0, note)
    folder = Path(directory)
    if not folder.is_dir():
        raise Invalid(f"the mappings_dir {folder} is not a folder", field="mappings_dir")
    path = _target_file(folder, spec)
    stored = store.record_mapping_version(
        s,
        system=spec.system,
        instance=spec.instance,
        digest=spec.digest,
        source=spec.source,
        diff="\n".join(changes) or "no change for users",
        accepted_by=actor.label,
    )
    s.flush()
    _write(path, spec.source)
    return {
        "system": spec.system,
        "instance": spec.instance,
        "digest": spec.digest,
        "file": str(path),
        "changes": changes,
        "stored": stored,
    }


def rollback(
    s: Session, *, version_id: int, directory: str | None, mappings: MappingSet, actor: Actor
) -> dict[str, Any]:
    """Make an earlier version current again (as a new version, so the history stays whole)."""
    actor.require(Permission.OPERATE)
    old = version_source(s, version_id=version_id)
    return save(
        s,
        text=old["source"],
        directory=directory,
        mappings=mappings,
        actor=actor,
        note=f"rolled back to version {version_id} ({old['digest']})",
    )
