"""``itsm-sync check``: the configuration verified end to end without writing anything.

Settings complete, the database reachable and migrated, and per configured system: reachable,
credentials valid, the container (table, project, page) there, the fields and issue types the
mappings and settings name there, webhooks registered where the API tells (each connector's
``preflight``). Every check is one :class:`~connectors.base.Probe`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import make_url

from config.settings import Settings, missing_for_run
from connectors.base import Preflight, Probe
from connectors.registry import build_connectors
from mapping.registry import MappingSet
from service.errors_cli import describe
from sync import store


def database(settings: Settings) -> Probe:
    """Reachable and at the newest schema revision; an absent SQLite file is not created."""
    try:
        url = make_url(settings.database_url)
        sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (
            None,
            "",
            ":memory:",
        )
        if sqlite_file and not Path(str(url.database)).is_file():
            return Probe(
                "database", False,
                f"no SQLite file at {url.database}: run `itsm-sync migrate` to create it",
            )  # fmt: skip
        engine = store.make_engine(settings.database_url)
        try:
            current, head = store.schema_revisions(engine)
        finally:
            engine.dispose()
    except Exception as exc:  # whatever the driver raised: one line with the remedy
        return Probe("database", False, describe(exc))
    if current != head:
        return Probe(
            f"database schema at {current or 'nothing'}, this version needs {head}", False,
            "run `itsm-sync migrate` (back the database up first: docs/operations.md)",
        )  # fmt: skip
    return Probe(f"database reachable, schema at {head}", True)


def wanted_fields(mappings: MappingSet, system: str, instance: str) -> dict[str, list[str]]:
    """Per object type, the remote fields a system's mappings name (the path's first part);
    per ``values:<path>``, the remote values they write there."""
    out: dict[str, list[str]] = {}
    for mapping in mappings:
        if (mapping.system, mapping.instance) != (system, instance):
            continue
        roots = {f.path.split(".", 1)[0] for f in mapping.fields if f.path}
        out.setdefault(mapping.object_type, []).extend(sorted(roots))
        # The remote values a mapping writes to a path ("values:components": the status page's
        # component ids), for systems whose preflight can check that they exist.
        for f in mapping.fields:
            if f.values is not None and f.direction in ("out", "both"):
                known = out.setdefault(f"values:{f.path}", [])
                known.extend(v for v in f.values.out.values() if v and v not in known)
    return out


def run_checks(settings: Settings, mappings: MappingSet) -> Iterator[Probe]:
    missing = missing_for_run(settings)
    yield Probe(
        "settings complete for `itsm-sync run`", not missing,
        f"set {', '.join(missing)}" if missing else "",
    )  # fmt: skip
    yield database(settings)
    try:
        connectors = build_connectors(settings)
    except ValueError as exc:
        yield Probe("connectors", False, str(exc))
        return
    issue_types = [settings.sync.jira_issue_type]
    if settings.postmortem.review_issue_type:
        issue_types.append(settings.postmortem.review_issue_type)
    for (system, instance), connector in sorted(connectors.items()):
        if not isinstance(connector, Preflight):
            yield Probe(f"{system}/{instance}", True, "no preflight for this system")
            continue
        fields = wanted_fields(mappings, system, instance)
        fields["issue_types"] = issue_types
        try:
            yield from connector.preflight(fields)
        except Exception as exc:  # a check never crashes the others
            yield Probe(f"{system}/{instance}", False, describe(exc))
        finally:
            close = getattr(connector, "close", None)
            if close is not None:
                close()
