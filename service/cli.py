"""The ``itsm-sync`` command line (Typer)."""

from __future__ import annotations

import json
import logging
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from config.settings import Settings
from connectors.errors import redact
from service.cli_common import err, settings_or_exit
from service.errors_cli import debug_requested, describe
from service.mapping_cli import app as mapping_app
from service.postmortem_cli import register as register_postmortem_commands
from service.sync_cli import register as register_sync_commands

if TYPE_CHECKING:  # the simulators (uvicorn, cryptography) load only for the commands using them
    from simulators.runner import ClusterConfig, SimulatorCluster

app = typer.Typer(
    name="itsm-sync",
    help="Keep incidents in sync across ServiceNow, Jira and Statuspage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
app.add_typer(mapping_app, name="mapping")
register_sync_commands(app)
register_postmortem_commands(app)


def main() -> None:
    """The entry point: any failure no command handled is one line with cause and remedy on
    stderr and exit code 1; ``--debug`` (before the command) adds the traceback."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # the last line of defence: nothing else prints a traceback
        if debug_requested(sys.argv):
            err.print_exception()
        err.print(f"[red]error:[/red] {escape(describe(exc))}", highlight=False)
        raise SystemExit(1) from None


def _version(value: bool) -> None:
    if value:
        console.print(f"itsm-sync {version('itsm-sync')}", highlight=False)
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an unexpected failure.")
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Keep incidents in sync across ServiceNow, Jira and Statuspage."""


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    servicenow_port: Annotated[int, typer.Option(help="ServiceNow simulator port.")] = 8701,
    jira_port: Annotated[int, typer.Option(help="Jira simulator port.")] = 8702,
    statuspage_port: Annotated[int, typer.Option(help="Statuspage simulator port.")] = 8703,
    tls: Annotated[
        bool, typer.Option(help="Serve HTTPS with a certificate made at start.")
    ] = False,
    state_file: Annotated[
        Path | None, typer.Option(help="Load state from this file and snapshot it back.")
    ] = None,
    seed: Annotated[bool, typer.Option(help="Load the default fixtures into empty state.")] = True,
    servicenow_username: Annotated[str, typer.Option(envvar="SIM_SERVICENOW_USERNAME")] = "admin",
    servicenow_password: Annotated[str, typer.Option(envvar="SIM_SERVICENOW_PASSWORD")] = "admin",
    jira_email: Annotated[str, typer.Option(envvar="SIM_JIRA_EMAIL")] = "admin@example.com",
    jira_api_token: Annotated[str, typer.Option(envvar="SIM_JIRA_API_TOKEN")] = "sim-token",
    statuspage_api_key: Annotated[str, typer.Option(envvar="SIM_STATUSPAGE_API_KEY")] = "sim-key",
    statuspage_page_id: Annotated[str, typer.Option(envvar="SIM_STATUSPAGE_PAGE_ID")] = (
        "simpage0001"
    ),
) -> None:
    """Run the ServiceNow, Jira and Statuspage simulators until Ctrl-C."""
    from simulators.runner import ClusterConfig, Credentials

    credentials = Credentials(
        servicenow_username=servicenow_username,
        servicenow_password=servicenow_password,
        jira_email=jira_email,
        jira_api_token=jira_api_token,
        statuspage_api_key=statuspage_api_key,
        statuspage_page_id=statuspage_page_id,
    )
    config = ClusterConfig(
        host=host,
        servicenow_port=servicenow_port,
        jira_port=jira_port,
        statuspage_port=statuspage_port,
        tls=tls,
        state_file=state_file,
        seed=seed,
        credentials=credentials,
    )
    cluster = _start_cluster(config)
    _print_cluster(cluster)
    console.print("Press Ctrl-C to stop.")
    try:
        cluster.wait()
    finally:
        cluster.stop()


@app.command()
def demo(
    hold: Annotated[
        bool, typer.Option(help="Keep everything running until Ctrl-C after the story.")
    ] = True,
    base_port: Annotated[
        int,
        typer.Option(help="ServiceNow on this port, Jira +1, Statuspage +2; 0 picks free ports."),
    ] = 8701,
    database: Annotated[
        Path, typer.Option(help="The demo's SQLite database (recreated each run).")
    ] = Path("itsm-sync-demo.db"),
) -> None:
    """Simulators + the service on SQLite + a scripted P1, told step by step with URLs."""
    from service.demo import DemoFailed, run_demo
    from simulators.runner import ClusterConfig

    ports = (0, 0, 0) if base_port == 0 else (base_port, base_port + 1, base_port + 2)
    config = ClusterConfig(servicenow_port=ports[0], jira_port=ports[1], statuspage_port=ports[2])
    cluster = _start_cluster(config)
    try:
        _print_cluster(cluster)
        run_demo(cluster, console, database=database.resolve(), hold=hold)
    except DemoFailed as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        cluster.stop()


@app.command("config")
def show_config(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML config file (env still wins).")
    ] = None,
) -> None:
    """Show the effective settings (secrets masked)."""
    settings = settings_or_exit(config_file)
    console.print_json(json.dumps(masked_settings(settings)))


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON data with every secret masked: SecretStr fields (pydantic prints
    ``**********``) and the password inside ``database_url``."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["database_url"] = redact(data["database_url"])
    return data


def _start_cluster(config: ClusterConfig) -> SimulatorCluster:
    from simulators.runner import SimulatorCluster

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    cluster = SimulatorCluster(config)
    try:
        cluster.start()
    except (OSError, ValueError, RuntimeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"Simulators started in {time.monotonic() - started:.2f} s")
    return cluster


def _print_cluster(cluster: SimulatorCluster) -> None:
    c = cluster.config.credentials
    table = Table(title="itsm-sync simulators")
    table.add_column("system")
    table.add_column("URL")
    table.add_column("credentials")
    table.add_row(
        "ServiceNow",
        cluster.urls["servicenow"],
        f"Basic {c.servicenow_username} / {c.servicenow_password}",
    )
    table.add_row(
        "Jira", cluster.urls["jira"], f"Basic {c.jira_email} / API token {c.jira_api_token}"
    )
    table.add_row(
        "Statuspage",
        cluster.urls["statuspage"] + "/v1",
        f"Authorization: OAuth {c.statuspage_api_key}; page id {c.statuspage_page_id}",
    )
    console.print(table)
    if cluster.cert is not None:
        console.print(f"TLS certificate (trust it in clients): {cluster.cert.cert}")
    console.print("Point itsm-sync at them with (the simulator profile; never use these for real):")
    console.print(f"  export ITSM_SYNC_SERVICENOW__URL={cluster.urls['servicenow']}")
    console.print(f"  export ITSM_SYNC_SERVICENOW__PASSWORD={c.servicenow_password}")
    console.print(f"  export ITSM_SYNC_JIRA__URL={cluster.urls['jira']}")
    console.print(f"  export ITSM_SYNC_JIRA__API_TOKEN={c.jira_api_token}")
    console.print(f"  export ITSM_SYNC_STATUSPAGE__URL={cluster.urls['statuspage']}/v1")
    console.print(f"  export ITSM_SYNC_STATUSPAGE__API_KEY={c.statuspage_api_key}")
    console.print("Test controls live under /_sim/ on each (see docs/simulators.md).")
