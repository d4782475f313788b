"""``itsm-sync postmortem add-action|show|complete``, ``gate`` and ``audit``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import col, select

from mapping.model import Incident
from postmortem_tracker.models import ActionItem, Postmortem
from postmortem_tracker.report import audit_rows, kpis, to_csv, to_dicts
from postmortem_tracker.tracker import Tracker
from service.sync_cli import find_incident, settings_or_exit
from sync import store
from sync.queue import incident_key, mark_dirty

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML config file (env still wins).")
]


def _tracker(config_file: Path | None) -> Tracker:
    settings = settings_or_exit(config_file)
    db = store.make_engine(settings.database_url)
    store.migrate(db)
    return Tracker(db, {}, settings.postmortem)


def _date(text: str | None, what: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {what} {text!r}: use YYYY-MM-DD")
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    pm = typer.Typer(help="Postmortems and their action items.", no_args_is_help=True)
    app.add_typer(pm, name="postmortem")

    @pm.command("add-action")
    def add_action(
        incident: Annotated[str, typer.Argument(help="INC0010001, OPS-12 or the canonical id.")],
        title: Annotated[str, typer.Option(help="What will be fixed.")],
        owner: Annotated[str, typer.Option(help="The owner's email.")] = "",
        due: Annotated[str | None, typer.Option(help="Due date, YYYY-MM-DD.")] = None,
        description: Annotated[str, typer.Option()] = "",
        config_file: ConfigOption = None,
    ) -> None:
        """Add an action item; it becomes a change request on the next reconcile."""
        tracker = _tracker(config_file)
        with store.session_scope(tracker.db, readonly=True) as s:
            row = find_incident(s, incident)
        item = tracker.add_action(
            row.id, title=title, owner=owner, due=_date(due, "--due"), description=description
        )
        with store.session_scope(tracker.db) as s:
            mark_dirty(s, incident_key(row.id), reason="action item added")
        missing = [
            w for w, ok in (("an owner", item.owner), ("a due date", item.due_date)) if not ok
        ]
        note = f" (it still needs {' and '.join(missing)})" if missing else ""
        console.print(f"action item {item.key} added to {incident}{note}", highlight=False)

    @pm.command("show")
    def show(
        incident: Annotated[str, typer.Argument(help="INC0010001, OPS-12 or the canonical id.")],
        config_file: ConfigOption = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """The postmortem, its action items, their change requests and the gate."""
        tracker = _tracker(config_file)
        with store.session_scope(tracker.db, readonly=True) as s:
            row = find_incident(s, incident)
            postmortem = s.exec(
                select(Postmortem).where(col(Postmortem.incident_id) == row.id)
            ).first()
            items = list(
                s.exec(select(ActionItem).where(col(ActionItem.incident_id) == row.id)).all()
            )
        gate = tracker.gate(Incident.model_validate({**row.data, "id": row.id}))
        data: dict[str, Any] = {
            "incident": incident,
            "postmortem": None
            if postmortem is None
            else {
                "review": postmortem.jira_key,
                "complete": postmortem.completed_at is not None,
                "completed_by": postmortem.completed_by,
            },
            "action_items": [
                {
                    "key": i.key, "title": i.title, "owner": i.owner, "due": str(i.due_date or ""),
                    "source": i.source, "change_request": i.change_request_number,
                    "blocked": i.blocked,
                }
                for i in items
            ],
            "gate": {"can_close": gate.open, "why": gate.explain()},
        }  # fmt: skip
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        console.print(
            f"postmortem: {json.dumps(data['postmortem']) if postmortem else 'not started'}",
            highlight=False,
        )
        table = Table(title=f"action items of {incident}")
        for column in ("title", "owner", "due", "source", "change request", "blocked by"):
            table.add_column(column, overflow="fold")
        for i in items:
            table.add_row(
                i.title, i.owner, str(i.due_date or ""), i.source, i.change_request_number,
                "" if i.change_request_number else i.blocked,
            )  # fmt: skip
        console.print(table)
        console.print(
            f"gate: {'open' if gate.open else 'closed'}: {gate.explain()}", highlight=False
        )

    @pm.command("complete")
    def complete(
        incident: Annotated[str, typer.Argument()],
        by: Annotated[str, typer.Option(help="Who signs it off.")],
        config_file: ConfigOption = None,
    ) -> None:
        """Mark the postmortem complete (when it has no Jira review issue)."""
        tracker = _tracker(config_file)
        with store.session_scope(tracker.db) as s:
            row = find_incident(s, incident)
            postmortem = s.exec(
                select(Postmortem).where(col(Postmortem.incident_id) == row.id)
            ).first()
            if postmortem is None:
                postmortem = Postmortem(incident_id=row.id)
                s.add(postmortem)
            postmortem.completed_at, postmortem.completed_by = store.utcnow(), by
            store.audit(
                s,
                action="update",
                incident_id=row.id,
                field="postmortem",
                after="complete",
                actor=by,
            )
        console.print(f"the postmortem of {incident} is complete")

    @app.command()
    def gate(
        incident: Annotated[str, typer.Argument(help="INC0010001, OPS-12 or the canonical id.")],
        override: Annotated[bool, typer.Option("--override", help="Let it close anyway.")] = False,
        reason: Annotated[str, typer.Option(help="Why (required to override).")] = "",
        actor: Annotated[str, typer.Option("--as", help="Who overrides (audited).")] = "",
        config_file: ConfigOption = None,
    ) -> None:
        """Whether the incident may close, and why not; a change manager may override."""
        tracker = _tracker(config_file)
        with store.session_scope(tracker.db, readonly=True) as s:
            row = find_incident(s, incident)
        if override:
            if not reason.strip() or not actor.strip():
                err.print("an override needs --reason and --as (it is audited)")
                raise typer.Exit(2)
            tracker.override(row.id, reason=reason, actor=f"cli:{actor}")
            with store.session_scope(tracker.db) as s:
                mark_dirty(s, incident_key(row.id), reason="gate override")
        state = tracker.gate(Incident.model_validate({**row.data, "id": row.id}))
        console.print(
            f"{incident}: {'may close' if state.open else 'may NOT close'}", highlight=False
        )
        for line in state.missing if not state.open else [state.explain()]:
            console.print(f"  - {line}", highlight=False)

    @app.command()
    def audit(
        since: Annotated[str | None, typer.Option("--from", help="YYYY-MM-DD")] = None,
        until: Annotated[str | None, typer.Option("--to", help="YYYY-MM-DD")] = None,
        team: Annotated[str | None, typer.Option(help="Only this team.")] = None,
        overdue: Annotated[bool, typer.Option(help="Only overdue change requests.")] = False,
        output: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
        kpi: Annotated[bool, typer.Option("--kpis", help="MTTA and MTTR instead.")] = False,
        config_file: ConfigOption = None,
    ) -> None:
        """For change managers: every action item, its change request, owner, due date, state."""
        if output not in ("table", "json", "csv"):
            err.print(f"--format {output!r}: use table, json or csv")
            raise typer.Exit(2)
        tracker = _tracker(config_file)
        start, end = _date(since, "--from"), _date(until, "--to")
        if kpi:
            figures = kpis(tracker.db, since=start, until=end)
            if output == "json":
                typer.echo(json.dumps(figures, indent=2))
                return
            table = Table(title="MTTA / MTTR (minutes)")
            for column in (
                "severity",
                "team",
                "acknowledged",
                "mtta_minutes",
                "resolved",
                "mttr_minutes",
            ):
                table.add_column(column)
            for f in figures:
                table.add_row(
                    *(
                        str(f[c])
                        for c in (
                            "severity",
                            "team",
                            "acknowledged",
                            "mtta_minutes",
                            "resolved",
                            "mttr_minutes",
                        )
                    )
                )
            console.print(table)
            return
        rows = audit_rows(tracker.db, since=start, until=end, team=team, overdue_only=overdue)
        if output == "csv":
            typer.echo(to_csv(rows), nl=False)
        elif output == "json":
            typer.echo(json.dumps(to_dicts(rows), indent=2))
        else:
            table = Table(title=f"postmortem action items ({len(rows)})")
            for column in (
                "incident",
                "action item",
                "owner",
                "due",
                "change request",
                "state",
                "overdue",
                "blocked / gate",
            ):
                table.add_column(column, overflow="fold")
            for r in rows:
                state = "implemented" if r.implemented else r.cr_state
                notes = "; ".join(x for x in (r.blocked, r.gate) if x)
                table.add_row(
                    f"{r.incident} {r.severity}", r.action_item, r.owner, r.due_date,
                    r.change_request, state, str(r.days_overdue or ""), notes,
                )  # fmt: skip
            console.print(table)
