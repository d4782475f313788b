"""``itsm-sync mapping ...``: validate, show, preview (a dry run against the live systems), diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from config.settings import Settings
from connectors.errors import ConnectorError
from mapping.engine import applies, build_incident, from_canonical, to_canonical
from mapping.registry import MappingSet, diff_mappings, load_mappings
from mapping.spec import MappingError, MappingFileError, load_mapping
from service.cli_common import cli_errors, open_db, plain, settings_or_exit
from service.domain import mapping as domain
from service.domain.roles import Actor
from sync import store
from sync.people import context_for

app = typer.Typer(help="Check, show, preview and compare field mappings.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _mappings(settings: Settings) -> MappingSet:
    try:
        return load_mappings(settings.mappings_dir)
    except MappingFileError as exc:
        err.print(f"[red]the mappings are invalid:[/red]\n{exc}")
        raise typer.Exit(1) from exc


ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML config file (env still wins).")
]


@app.command()
def validate(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Files (default: the effective set).")
    ] = None,
    config_file: ConfigOption = None,
) -> None:
    """Check mapping files; print every problem; exit 1 if there is any."""
    if files:
        problems = 0
        for result in domain.validate_files(files):
            if not result["ok"]:
                problems += len(result["problems"])
                for problem in result["problems"]:
                    console.print(f"[red]✗[/red] {problem['text']}", highlight=False)
                continue
            console.print(
                f"[green]✓[/green] {result['file']}: {result['system']}/{result['instance']}, "
                f"{result['fields']} field mappings",
                highlight=False,
            )
        if problems:
            console.print(f"{problems} problem(s)")
            raise typer.Exit(1)
        return
    mappings = _mappings(settings_or_exit(config_file))
    for mapping in mappings:
        console.print(
            f"[green]✓[/green] {mapping.path}: {mapping.system}/{mapping.instance}, "
            f"{len(mapping.fields)} field mappings",
            highlight=False,
        )


@app.command()
def show(
    system: Annotated[str | None, typer.Option(help="Only this system.")] = None,
    instance: Annotated[str, typer.Option(help="The instance name.")] = "default",
    config_file: ConfigOption = None,
) -> None:
    """The effective mapping, as a table."""
    mappings = _mappings(settings_or_exit(config_file))
    shown = 0
    for mapping in mappings:
        if system and (mapping.system, mapping.instance) != (system, instance):
            continue
        shown += 1
        title = f"{mapping.system}/{mapping.instance} ({mapping.object_type}) from {mapping.path}"
        if mapping.when is not None:
            title += f"\nonly incidents where: {mapping.when.source}"
        table = Table(title=title, show_lines=False)
        for column in ("canonical", "", "path", "values / template", "transform", "policy", "when"):
            table.add_column(column, overflow="fold")
        for f in mapping.fields:
            row = f.describe()
            arrow = {"in": "←", "out": "→", "both": "↔"}[f.direction]
            table.add_row(
                row["canonical"], arrow, row["path"], row["values"] or row["template"],
                row["transform"], row["policy"], row["when"],
            )  # fmt: skip
        console.print(table)
    if not shown:
        err.print(
            f"[red]error:[/red] no mapping for {system}/{instance}; have: {mappings.systems()}"
        )
        raise typer.Exit(2)


@app.command()
def preview(
    system: Annotated[str, typer.Option(help="The system the record lives in.")],
    id: Annotated[str, typer.Option("--id", help="Its id or key (INC0010001, OPS-12, ...).")],
    instance: Annotated[str, typer.Option(help="The instance name.")] = "default",
    config_file: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Fetch a live record and show the canonical incident and what every other system would
    get. A dry run: nothing is written anywhere."""
    # Here, not at the top: the client libraries (jira, pysnow, requests) are a third of the
    # CLI's start-up, and only this command of the group talks to a system.
    from connectors.registry import build_connectors

    settings = settings_or_exit(config_file)
    mappings = _mappings(settings)
    connectors = build_connectors(settings)
    source = connectors.get((system, instance))
    if source is None:
        err.print(
            f"[red]error:[/red] no {system}/{instance} configured; have: {sorted(connectors)}"
        )
        raise typer.Exit(2)
    mapping = mappings.get(system, instance)
    try:
        record = source.get(mapping.object_type, id)
        values = to_canonical(mapping, record.fields, context_for(source))
        incident = build_incident(values)
    except (ConnectorError, MappingError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    out: dict[str, Any] = {
        "source": {"system": system, "instance": instance, "id": record.ref.key or record.ref.id},
        "canonical": incident.model_dump(mode="json", exclude_defaults=True),
        "targets": {},
    }
    for target in mappings:
        if target.key == (system, instance):
            continue
        name = f"{target.system}/{target.instance}"
        if not applies(target, incident):
            rule = target.when.source if target.when else ""
            out["targets"][name] = {"skipped": f"the incident does not match: {rule}"}
            continue
        connector = connectors.get(target.key)
        try:
            if connector is None:
                raise MappingError(f"{name} is not configured")
            out["targets"][name] = {
                "would_write": from_canonical(target, incident, context_for(connector))
            }
        except (ConnectorError, MappingError) as exc:
            out["targets"][name] = {"error": str(exc)}
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    console.rule(f"{system} {out['source']['id']} as the canonical incident")
    console.print_json(json.dumps(out["canonical"], default=str))
    for name, result in out["targets"].items():
        console.rule(name)
        console.print_json(json.dumps(result, default=str))
    console.print("[bold]dry run:[/bold] nothing was written.")


@app.command()
def diff(
    old: Annotated[Path, typer.Argument(help="The mapping file as it is.")],
    new: Annotated[Path, typer.Argument(help="The mapping file as it would be.")],
) -> None:
    """What changes for users, field by field."""
    try:
        before, after = load_mapping(old), load_mapping(new)
    except MappingFileError as exc:
        err.print(f"[red]error:[/red]\n{exc}")
        raise typer.Exit(1) from exc
    lines = diff_mappings(before, after)
    if before.key != after.key:
        lines.insert(
            0, f"system: {before.system}/{before.instance} -> {after.system}/{after.instance}"
        )
    for line in lines or ["no change for users"]:
        console.print(line, highlight=False)


@app.command()
def versions(
    system: Annotated[str | None, typer.Option(help="Only this system.")] = None,
    instance: Annotated[str, typer.Option(help="The instance name.")] = "default",
    config_file: ConfigOption = None,
) -> None:
    """Every stored mapping version, newest first: who accepted it, when, what changed."""
    db = open_db(settings_or_exit(config_file))
    with store.session_scope(db, readonly=True) as s:
        rows = domain.versions(s, system=system, instance=instance)
    for v in rows:
        mark = " (current)" if v["current"] else ""
        console.print(
            f"[bold]{v['id']}[/bold] {v['system']}/{v['instance']} {v['digest']}{mark} "
            f"{v['accepted_at'][:19]} by {plain(v['accepted_by'])}",
            highlight=False,
        )
        for line in v["diff"]:
            console.print(f"    {plain(line)}", highlight=False)


@app.command()
def save(
    file: Annotated[Path, typer.Argument(help="The mapping file to put in use.")],
    as_: Annotated[str, typer.Option("--as", help="Who saves it (for the record).")] = "",
    config_file: ConfigOption = None,
) -> None:
    """Check a mapping file and put it in use (copied into mappings_dir, stored as a version)."""
    settings = settings_or_exit(config_file)
    mappings = _mappings(settings)
    db = open_db(settings)
    try:
        text = file.read_text()
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot read {file}: {exc.strerror}")
        raise typer.Exit(2) from exc
    with cli_errors(), store.session_scope(db) as s:
        result = domain.save(
            s, text=text, directory=settings.mappings_dir, mappings=mappings,
            actor=Actor.cli(as_), name=file.name,
        )  # fmt: skip
    _saved(result)


@app.command()
def rollback(
    version: Annotated[int, typer.Argument(help="The version id (itsm-sync mapping versions).")],
    as_: Annotated[str, typer.Option("--as", help="Who rolls back (for the record).")] = "",
    config_file: ConfigOption = None,
) -> None:
    """Put an earlier mapping version in use again (stored as a new version)."""
    settings = settings_or_exit(config_file)
    mappings = _mappings(settings)
    db = open_db(settings)
    with cli_errors(), store.session_scope(db) as s:
        result = domain.rollback(
            s, version_id=version, directory=settings.mappings_dir, mappings=mappings,
            actor=Actor.cli(as_),
        )  # fmt: skip
    _saved(result)


def _saved(result: dict[str, Any]) -> None:
    console.print(
        f"[green]✓[/green] {result['system']}/{result['instance']} {result['digest']} saved to "
        f"{result['file']}; a running service picks it up within seconds",
        highlight=False,
    )
    for line in result["changes"]:
        console.print(f"    {plain(line)}", highlight=False)
