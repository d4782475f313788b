"""What every ``itsm-sync`` command shares: consoles, settings, the database, and one way of
turning the service layer's refusals into a one-line error and an exit code."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import Engine

from config.settings import ConfigFileError, Settings, load_settings
from service.domain.errors import Invalid, NotFound, ServiceError
from sync import store

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML config file (env still wins).")
]


def settings_or_exit(config_file: Path | None) -> Settings:
    """The settings, or each problem on a line of its own (file:line or environment name,
    field, what is wrong; never a value) and exit 2."""
    from pydantic import ValidationError

    from service.errors_cli import validation_lines

    for line in unknown_variables(os.environ):
        err.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False)
    try:
        return load_settings(config_file)
    except ValidationError as exc:
        for line in validation_lines(exc):
            err.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        raise typer.Exit(2) from exc
    except (ConfigFileError, ValueError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``ITSM_SYNC_*`` variables that are no setting but look like a mistyped one (pydantic
    ignores unknown top-level names: ITSM_SYNC_DATABSE_URL would silently leave the default)."""
    import difflib

    known = [f"ITSM_SYNC_{name.upper()}" for name in Settings.model_fields]
    out = []
    for name in sorted(environ):
        if not name.startswith("ITSM_SYNC_"):
            continue
        head = name.split("__", 1)[0]
        if head in known:
            continue
        close = difflib.get_close_matches(head, known, n=1, cutoff=0.8)
        if close:
            out.append(f"{name} is not a setting (ignored): did you mean {close[0]}?")
    return out


def open_db(settings: Settings) -> Engine:
    db = store.make_engine(settings.database_url)
    store.migrate(db)
    return db


def exit_code(exc: ServiceError) -> int:
    if isinstance(exc, NotFound):
        return 1
    if isinstance(exc, Invalid):
        return 2
    return 1


@contextmanager
def cli_errors() -> Iterator[None]:
    """A refusal of the service layer as ``error: <what> `` on stderr and a non-zero exit."""
    try:
        yield
    except ServiceError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
        raise typer.Exit(exit_code(exc)) from exc


def plain(value: Any) -> str:
    """Text that came from a ticket, safe to print: rich markup in it is shown, not applied."""
    return escape("" if value is None else str(value))
