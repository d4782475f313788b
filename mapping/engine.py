"""Apply a compiled mapping: a remote record's fields -> canonical values, and back.

Pure functions over plain data: no HTTP, no store. People lookups come in through the
:class:`~mapping.transforms.TransformContext` the caller passes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping as MappingABC
from enum import Enum
from typing import Any

from mapping.model import CANONICAL_FIELDS, Incident, Resolution
from mapping.spec import LIST_FIELDS, FieldMapping, Mapping, MappingError
from mapping.transforms import TransformContext, TransformError


def get_path(data: MappingABC[str, Any], path: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; ``None`` where any step is missing or null."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, MappingABC) or part not in node:
            return None
        node = node[part]
    return node


def set_path(out: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def canonical_values(incident: Incident) -> dict[str, Any]:
    """The incident as flat canonical values (``resolution.code`` ...), enums as strings."""
    values: dict[str, Any] = {}
    for name in CANONICAL_FIELDS:
        if name.startswith("resolution."):
            value: Any = getattr(incident.resolution, name.split(".", 1)[1])
        else:
            value = getattr(incident, name)
        values[name] = value.value if isinstance(value, Enum) else value
    return values


def _coerce(canonical: str, value: Any) -> Any:
    if canonical in LIST_FIELDS:
        if value in (None, ""):
            return ()
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value if v not in (None, ""))
        return (str(value),)
    if canonical in ("public", "public_forced"):
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if isinstance(value, dt.datetime | dt.date):
        return value
    if value is None:
        return None if canonical.endswith("_at") else ""
    return value if isinstance(value, str) else str(value)


def _map_in(f: FieldMapping, value: Any, where: str) -> Any:
    if f.values is None:
        return value
    if isinstance(value, list | tuple):
        return tuple(f.values.to_canonical(str(v), where) for v in value)
    if value in (None, ""):
        return f.values.into.get("", "")
    return f.values.to_canonical(str(value), where)


def _map_out(f: FieldMapping, value: Any, where: str) -> Any:
    if f.values is None:
        return value
    if isinstance(value, list | tuple):
        return tuple(f.values.to_remote(str(v), where) for v in value)
    if value in (None, ""):
        return ""
    return f.values.to_remote(str(value), where)


def _ctx(base: TransformContext, f: FieldMapping, values: dict[str, Any]) -> TransformContext:
    return dataclasses.replace(base, args=dict(f.args), values=values)


def to_canonical(
    mapping: Mapping, fields: MappingABC[str, Any], ctx: TransformContext
) -> dict[str, Any]:
    """Canonical values read from a record's fields (only mappings that read: in, both)."""
    out: dict[str, Any] = {}
    # Main readers first, then those that refine them (``unknown: ignore``).
    for f in sorted((f for f in mapping.fields if f.reads), key=lambda f: f.refines):
        where = f"{mapping.system} {f.path} -> {f.canonical}"
        # A refining reader's `when` is checked against what the main readers read.
        gated = f.refines and f.when is not None
        if gated and not f.when.evaluate({**dict.fromkeys(CANONICAL_FIELDS), **out}):  # type: ignore[union-attr]
            continue
        raw = get_path(fields, f.path)
        try:
            value = f.transform.to_canonical(raw, _ctx(ctx, f, out)) if f.transform else raw
        except TransformError as exc:
            raise MappingError(f"{where}: {exc}") from exc
        if f.refines and (f.values is None or str(value or "") not in f.values.into):
            continue  # not one of the values it speaks for: the main reader's value stands
        out[f.canonical] = _coerce(f.canonical, _map_in(f, value, where))
    return out


def from_canonical(mapping: Mapping, incident: Incident, ctx: TransformContext) -> dict[str, Any]:
    """The remote fields a mapping writes for ``incident`` (only mappings that write)."""
    values = canonical_values(incident)
    patch: dict[str, Any] = {}
    for f in mapping.fields:
        if not f.writes or (f.when is not None and not f.when.evaluate(values)):
            continue
        where = f"{f.canonical} -> {mapping.system} {f.path}"
        if f.template is not None:
            value: Any = f.template.render(values)
        else:
            value = _map_out(f, values[f.canonical], where)
            try:
                value = f.transform.to_remote(value, _ctx(ctx, f, values)) if f.transform else value
            except TransformError as exc:
                raise MappingError(f"{where}: {exc}") from exc
        if isinstance(value, tuple):
            value = list(value)
        if value in ("", None) and "." in f.path:
            # An empty reference clears the object (Jira: "assignee": null), rather than
            # sending {"accountId": ""}, which the remote refuses.
            set_path(patch, f.path.rsplit(".", 1)[0], None)
            continue
        set_path(patch, f.path, value)
    return patch


def applies(mapping: Mapping, incident: Incident) -> bool:
    """Whether this system mirrors ``incident`` at all (the file's top-level ``when``)."""
    return mapping.when is None or mapping.when.evaluate(canonical_values(incident))


def build_incident(values: MappingABC[str, Any], **extra: Any) -> Incident:
    """An :class:`Incident` from flat canonical values (as :func:`to_canonical` returns)."""
    data: dict[str, Any] = {}
    resolution: dict[str, Any] = {}
    for name, value in values.items():
        if name.startswith("resolution."):
            resolution[name.split(".", 1)[1]] = value or ""
        elif (value is not None and value != "") or name in ("title", "description"):
            data[name] = value
    if resolution:
        data["resolution"] = Resolution(**resolution)
    if data.get("severity") == "":
        data.pop("severity")
    return Incident(**{**data, **extra})
