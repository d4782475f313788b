"""``itsm-sync postmortem add-action|show|complete``, ``gate`` and ``audit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from postmortem_tracker.report import to_csv, to_dicts
from postmortem_tracker.tracker import Tracker
from service.cli_common import (
    ConfigOption,
    cli_errors,
    console,
    err,
    open_db,
    plain,
    settings_or_exit,
)
from service.domain import postmortems
from service.domain.roles import Actor

KPI_COLUMNS = ("severity", "team", "acknowledged", "mtta_minutes", "resolved", "mttr_minutes")


def _tracker(config_file: Path | None) -> Tracker:
    """The tracker over the database, with the connectors (built lazily: no call is made
    until a command asks a system, such as whether an owner is a user of it)."""
    from connectors.registry import build_connectors  # only what asks a system needs them

    settings = settings_or_exit(config_file)
    return Tracker(open_db(settings), build_connectors(settings), settings.postmortem)


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
        key: Annotated[
            str, typer.Option(help="Idempotency key (else the title): adding again is a no-op.")
        ] = "",
        config_file: ConfigOption = None,
    ) -> None:
        """Add an action item; it becomes a change request on the next reconcile."""
        tracker = _tracker(config_file)
        with cli_errors():
            item = postmortems.add_action(
                tracker, ident=incident, title=title, owner=owner,
                due=postmortems.parse_date(due, field="--due"), description=description,
                actor=Actor.cli(), source="cli", key=key,
            )  # fmt: skip
        missing = item["still_needs"]
        note = f" (it still needs {' and '.join(missing)})" if missing else ""
        verb = "added to" if item["created"] else "already on"
        console.print(f"action item {item['key']} {verb} {incident}{note}", highlight=False)

    @pm.command("edit-action")
    def edit_action(
        incident: Annotated[str, typer.Argument(help="INC0010001, OPS-12 or the canonical id.")],
        item: Annotated[str, typer.Argument(help="The item's key (postmortem show --json).")],
        title: Annotated[str | None, typer.Option(help="The new title.")] = None,
        owner: Annotated[str | None, typer.Option(help="The new owner's email.")] = None,
        due: Annotated[str | None, typer.Option(help="New due date, YYYY-MM-DD.")] = None,
        actor: Annotated[str, typer.Option("--as", help="Who edits (audited).")] = "",
        config_file: ConfigOption = None,
    ) -> None:
        """Change an action item's title, owner or due date; its change request follows."""
        tracker = _tracker(config_file)
        with cli_errors():
            changes: dict[str, Any] = {"title": title, "owner": owner}
            if due is not None:
                changes["due"] = postmortems.parse_date(due, field="--due")
            out = postmortems.edit_action(
                tracker, ident=incident, item=item, actor=Actor.cli(actor), **changes
            )
        console.print(
            f"action item {plain(out['key'])}: {plain(out['title'])}, owner "
            f"{plain(out['owner']) or '(none)'}, due {out['due'] or '(none)'}",
            highlight=False,
        )

    @pm.command("withdraw-action")
    def withdraw_action(
        incident: Annotated[str, typer.Argument(help="INC0010001, OPS-12 or the canonical id.")],
        item: Annotated[str, typer.Argument(help="The item's key (postmortem show --json).")],
        reason: Annotated[str, typer.Option(help="Why (required; audited).")] = "",
        actor: Annotated[str, typer.Option("--as", help="Who withdraws it (audited).")] = "",
        config_file: ConfigOption = None,
    ) -> None:
        """Withdraw an action item: it no longer blocks the gate."""
        tracker = _tracker(config_file)
        with cli_errors():
            out = postmortems.withdraw_action(
                tracker, ident=incident, item=item, reason=reason, actor=Actor.cli(actor)
            )
        console.print(f"action item {plain(out['key'])} is withdrawn", highlight=False)

    @pm.command("show")
    def show(
        incident: Annotated[str, typer.Argument(help="INC0010001, OPS-12 or the canonical id.")],
        config_file: ConfigOption = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """The postmortem, its action items, their change requests and the gate."""
        tracker = _tracker(config_file)
        with cli_errors():
            data = postmortems.show(tracker, ident=incident)
        data["incident"] = incident
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        pm_data = data["postmortem"]
        console.print(
            f"postmortem: {plain(json.dumps(pm_data)) if pm_data else 'not started'}",
            highlight=False,
        )
        table = Table(title=f"action items of {plain(incident)}")
        for column in ("key", "title", "owner", "due", "source", "status", "change request",
                       "blocked by"):  # fmt: skip
            table.add_column(column, overflow="fold")
        for i in data["action_items"]:
            status = i["status"] + (f": {i['status_reason']}" if i["status_reason"] else "")
            table.add_row(
                i["key"], plain(i["title"]), plain(i["owner"]), i["due"], plain(i["source"]),
                plain(status), i["change_request"],
                "" if i["change_request"] else plain(i["blocked"]),
            )  # fmt: skip
        console.print(table)
        gate = data["gate"]
        console.print(
            f"gate: {'open' if gate['can_close'] else 'closed'}: {plain(gate['why'])}",
            highlight=False,
        )

    @pm.command("complete")
    def complete(
        incident: Annotated[str, typer.Argument()],
        by: Annotated[str, typer.Option(help="Who signs it off.")],
        config_file: ConfigOption = None,
    ) -> None:
        """Mark the postmortem complete (when it has no Jira review issue)."""
        tracker = _tracker(config_file)
        with cli_errors():
            postmortems.complete(tracker, ident=incident, actor=Actor.cli(by))
        console.print(f"the postmortem of {incident} is complete")

    @app.command()
    def gate(
        incident: Annotated[str, typer.Argument(help="INC0010001, OPS-12 or the canonical id.")],
        override: Annotated[bool, typer.Option("--override", help="Let it close anyway.")] = False,
        revoke: Annotated[
            bool, typer.Option("--revoke", help="Take back the override in force.")
        ] = False,
        reason: Annotated[str, typer.Option(help="Why (required to override).")] = "",
        actor: Annotated[str, typer.Option("--as", help="Who overrides (audited).")] = "",
        config_file: ConfigOption = None,
    ) -> None:
        """Whether the incident may close, and why not; a change manager may override."""
        tracker = _tracker(config_file)
        with cli_errors():
            if override and revoke:
                err.print("--override and --revoke: give one of them")
                raise typer.Exit(2)
            if override or revoke:
                if not reason.strip() or not actor.strip():
                    what = "an override" if override else "--revoke"
                    err.print(f"{what} needs --reason and --as (it is audited)")
                    raise typer.Exit(2)
                act = postmortems.override if override else postmortems.revoke_override
                act(tracker, ident=incident, reason=reason, actor=Actor.cli(actor))
                if revoke:
                    console.print(f"the override of {plain(incident)} is revoked", highlight=False)
            state = postmortems.gate(tracker, ident=incident)
        verdict = "may close" if state["can_close"] else "may NOT close"
        console.print(f"{plain(incident)}: {verdict}", highlight=False)
        for line in state["missing"] if not state["can_close"] else [state["why"]]:
            console.print(f"  - {plain(line)}", highlight=False)

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
        cli = Actor.cli()
        with cli_errors():
            start = postmortems.parse_date(since, field="--from")
            end = postmortems.parse_date(until, field="--to")
            if kpi:
                figures = postmortems.mtta_mttr(tracker, since=start, until=end, actor=cli)
            else:
                rows = postmortems.audit(
                    tracker, since=start, until=end, team=team, overdue_only=overdue, actor=cli
                )
        if kpi:
            if output == "json":
                typer.echo(json.dumps(figures, indent=2))
                return
            table = Table(title="MTTA / MTTR (minutes)")
            for column in KPI_COLUMNS:
                table.add_column(column)
            for f in figures:
                table.add_row(*(plain(f[c]) for c in KPI_COLUMNS))
            console.print(table)
            return
        if output == "csv":
            typer.echo(to_csv(rows), nl=False)
        elif output == "json":
            typer.echo(json.dumps(to_dicts(rows), indent=2))
        else:
            table = Table(title=f"postmortem action items ({len(rows)})")
            for column in ("incident", "action item", "owner", "due", "change request", "state",
                           "overdue", "blocked / gate"):  # fmt: skip
                table.add_column(column, overflow="fold")
            for r in rows:
                state = "implemented" if r.implemented else r.cr_state
                notes = "; ".join(x for x in (r.blocked, r.gate) if x)
                table.add_row(
                    plain(f"{r.incident} {r.severity}"), plain(r.action_item), plain(r.owner),
                    r.due_date, r.change_request, plain(state), str(r.days_overdue or ""),
                    plain(notes),
                )  # fmt: skip
            console.print(table)
