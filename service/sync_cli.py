"""``itsm-sync run | sync --once | backfill | status | parked | history | public``."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from config.logging import setup_logging
from config.settings import Settings, missing_for_run
from mapping.registry import MappingSet, load_mappings
from service.cli_common import (
    ConfigOption,
    cli_errors,
    console,
    err,
    open_db,
    plain,
    settings_or_exit,
)
from service.domain import health as health_data
from service.domain import incidents, parked
from service.domain.roles import Actor
from sync import cadence, store
from sync.backfill import dry_run
from sync.pairing import pair_unlinked
from sync.poller import POLLED, poll_all, poll_once, results_table
from sync.queue import queue_depth
from sync.worker import Totals, drain, notify_workers

if TYPE_CHECKING:
    from service.runtime import Runtime


def mappings_or_exit(settings: Settings) -> MappingSet:
    from mapping.spec import MappingFileError

    try:
        return load_mappings(settings.mappings_dir)
    except MappingFileError as exc:
        err.print(f"[red]the mappings are invalid:[/red]\n{plain(exc)}")
        raise typer.Exit(2) from exc


def runtime_or_exit(settings: Settings) -> Runtime:
    # Here, not at the top: a Runtime brings the connectors' client libraries and the web app,
    # which commands that only read the database (status, parked, history) do without.
    from mapping.spec import MappingFileError
    from service.runtime import Runtime

    try:
        return Runtime(settings)
    except MappingFileError as exc:
        err.print(f"[red]the mappings are invalid:[/red]\n{exc}")
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port for webhooks, API and metrics.")] = 8000,
        role: Annotated[
            str,
            typer.Option(
                help="all: HTTP here, the poller and the workers in a worker process; "
                "http: HTTP only (webhooks are stored and queued for other instances' "
                "workers); workers: the poller and the workers only, no HTTP.",
                case_sensitive=False,
            ),
        ] = "all",
        workers_in_process: Annotated[
            bool,
            typer.Option(
                "--workers-in-process",
                help="With --role all: run the poller and the workers in this process "
                "(one process, as before; webhook answers then wait for the workers).",
            ),
        ] = False,
        config_file: ConfigOption = None,
    ) -> None:
        """Run the service: webhooks, API, /healthz, /metrics, the poller and the workers."""
        role = role.lower()
        if role not in ("all", "http", "workers"):
            err.print(f"[red]error:[/red] --role {role}: use all, http or workers")
            raise typer.Exit(2)
        settings = settings_or_exit(config_file)
        missing = missing_for_run(settings)
        if missing:
            err.print(
                f"[red]error:[/red] itsm-sync run needs {', '.join(missing)}: set them in the "
                "environment or the config file (docs/operations.md, Configuration)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        setup_logging(settings.log_level)
        worker_process = None
        if role == "all" and not workers_in_process:
            from service.supervisor import worker_processes

            # Started first, so that its start-up and this process's overlap.
            worker_process = worker_processes(settings)
            worker_process.start()
        try:
            runtime = runtime_or_exit(settings)
        except BaseException:
            if worker_process is not None:
                worker_process.stop()
            raise
        if role == "workers":
            _run_workers(runtime)
            return
        import socket

        import uvicorn

        from service.app import create_app
        from service.runtime import settle_gc

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls
        try:
            sock.bind((host, port))
        except OSError as exc:
            if worker_process is not None:
                worker_process.stop()
            runtime.stop()
            err.print(f"[red]error:[/red] cannot listen on {host}:{port}: {exc.strerror}")
            raise typer.Exit(2) from exc
        if role == "http":
            runtime.start(poll=False, workers=False)
        else:
            runtime.start(worker_process=worker_process)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(runtime), log_level="warning", access_log=False, lifespan="off"
            )
        )
        settle_gc()
        console.print(
            f"itsm-sync listening on http://{host}:{sock.getsockname()[1]}", highlight=False
        )
        # uvicorn handles SIGINT/SIGTERM while it serves, then raises the signal again with
        # the handler it found: make that one a no-op so that the cleanup below runs (stopping
        # the worker process) and the exit is clean.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _stopping)
        try:
            server.run(sockets=[sock])
        finally:
            runtime.stop()

    @app.command("sync")
    def sync_once(
        once: Annotated[
            bool, typer.Option("--once", help="Poll, reconcile until quiet, exit.")
        ] = False,
        timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
        config_file: ConfigOption = None,
    ) -> None:
        """Poll everything and reconcile until nothing is left; exit 3 if anything is parked."""
        if not once:
            err.print("use --once (or `itsm-sync run` for the service)")
            raise typer.Exit(2)
        settings = settings_or_exit(config_file)
        setup_logging(settings.log_level, json_lines=False)
        runtime = runtime_or_exit(settings)
        try:
            results = poll_all(runtime.db, runtime.connectors)
            for line in results_table(results):
                console.print(plain(line), highlight=False)
            cadence.check(runtime.db, settings.comms)  # reminders for updates that are due
            totals = drain(
                runtime.reconciler,
                threads=settings.sync.workers,
                timeout=timeout,
                lease=settings.sync.lease_seconds,
            )
            with store.session_scope(runtime.db, readonly=True) as s:
                parked = store.open_parked(s)
                left = queue_depth(s)
            console.print(
                f"reconciled {totals.reconciled}, wrote {totals.writes}, "
                f"conflicts {totals.conflicts}, parked {len(parked)}, still queued {left}",
                highlight=False,
            )
            for item in parked:
                console.print(
                    f"  parked #{item.id} {plain(item.target)}: {plain(item.error)}",
                    highlight=False,
                )
        finally:
            runtime.stop()
        if parked:
            raise typer.Exit(3)
        if any(r.error for r in results):
            raise typer.Exit(1)

    @app.command()
    def backfill(
        since: Annotated[
            str, typer.Option(help="Link and sync records updated since (YYYY-MM-DD).")
        ],
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="Read the records and print what would be created and linked; write "
                "nothing to any system and nothing about incidents to the store.",
            ),
        ] = False,
        config_file: ConfigOption = None,
    ) -> None:
        """Link and sync existing records; a killed backfill resumes where it stopped."""
        settings = settings_or_exit(config_file)
        setup_logging(settings.log_level, json_lines=False)
        try:
            start = dt.datetime.fromisoformat(since)
        except ValueError as exc:
            err.print(f"[red]error:[/red] --since {since!r}: use YYYY-MM-DD or an ISO date-time")
            raise typer.Exit(2) from exc
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
        runtime = runtime_or_exit(settings)
        try:
            if dry_run:
                _backfill_dry_run(runtime, start)
                return
            _backfill(runtime, settings, start)
        finally:
            runtime.stop()

    @app.command()
    def link(
        first: Annotated[str, typer.Argument(help="One record, e.g. INC0010001.")],
        second: Annotated[str, typer.Argument(help="Its counterpart, e.g. OPS-12.")],
        config_file: ConfigOption = None,
    ) -> None:
        """Link an existing pair (a ServiceNow incident and a Jira issue) as one incident."""
        settings = settings_or_exit(config_file)
        runtime = runtime_or_exit(settings)
        try:
            with cli_errors():
                result = incidents.link(
                    runtime.reconciler, first=first, second=second, actor=Actor.cli()
                )
        finally:
            runtime.stop()
        if settings.sync.pg_notify:
            notify_workers(runtime.db)
        console.print(
            f"{plain(first)} and {plain(second)} are one incident ({result['incident']}); "
            "the next reconcile brings them in line",
            highlight=False,
        )

    @app.command()
    def check(config_file: ConfigOption = None) -> None:
        """Verify the configuration end to end without writing: one line per check."""
        from service.check import run_checks

        settings = settings_or_exit(config_file)
        mappings = mappings_or_exit(settings)
        failed = 0
        for probe in run_checks(settings, mappings):
            mark = "[green]✓[/green]" if probe.ok else "[red]✗[/red]"
            failed += not probe.ok
            detail = f": {plain(probe.detail)}" if probe.detail else ""
            console.print(f"{mark} {plain(probe.what)}{detail}", highlight=False)
        if failed:
            console.print(f"{failed} check(s) failed", highlight=False)
            raise typer.Exit(1)

    @app.command()
    def prune(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
        ] = False,
        config_file: ConfigOption = None,
    ) -> None:
        """Delete what is past retention (retention.events_days, retention.audit_days)."""
        from sync.retention import prune as prune_store

        settings = settings_or_exit(config_file)
        db = open_db(settings)
        counts = prune_store(db, settings.retention, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        r = settings.retention
        console.print(
            f"{verb}: "
            + ", ".join(f"{n} {what}" for what, n in counts.items())
            + f" (events over {r.events_days:g} days old, audit over {r.audit_days:g} days old)",
            highlight=False,
        )

    @app.command()
    def migrate(config_file: ConfigOption = None) -> None:
        """Bring the database schema to this version (back it up first)."""
        settings = settings_or_exit(config_file)
        db = store.make_engine(settings.database_url)
        before, head = store.schema_revisions(db)
        store.migrate(db)
        console.print(f"database schema: {before or 'empty'} -> {head}", highlight=False)

    @app.command()
    def status(config_file: ConfigOption = None) -> None:
        """The queue, parked items, links per system and the poll watermarks."""
        settings = settings_or_exit(config_file)
        db = open_db(settings)
        with store.session_scope(db, readonly=True) as s:
            data = incidents.status(s, comms=settings.comms)
            stuck = health_data.stuck(s)
        table = Table(title="itsm-sync status")
        table.add_column("what")
        table.add_column("value")
        table.add_row("queued", str(data["queue_depth"]))
        table.add_row("parked", str(data["parked"]))
        table.add_row("incidents owing an update", str(data["updates_overdue"]))
        table.add_row("oldest change waiting", f"{stuck['oldest_change_age_seconds']:.0f} s")
        table.add_row("changes failing to apply", str(stuck["failing"]))
        for item in stuck["failing_examples"]:
            table.add_row(
                f"  {plain(item['key'])}",
                plain(f"{item['attempts']} attempt(s): {item['error']}"),
            )
        for target, info in stuck["backoff"].items():
            table.add_row(
                f"target {plain(target)} in backoff",
                f"{info['incidents']} incident(s), next try in {info['max_wait_seconds']:.0f} s",
            )
        for system, n in data["links"].items():
            table.add_row(f"linked {system} records", str(n))
        for name, value in data["watermarks"].items():
            system, instance, object_type = name.split("/", 2)
            table.add_row(f"watermark {system}/{instance} {object_type}", str(value))
        console.print(table)

    parked_app = typer.Typer(
        help="Failures that need an admin: list them, replay them.", no_args_is_help=True
    )
    app.add_typer(parked_app, name="parked")

    @parked_app.command("list")
    def parked_list(config_file: ConfigOption = None) -> None:
        db = open_db(settings_or_exit(config_file))
        with store.session_scope(db, readonly=True) as s:
            items = parked.list_open(s)
        if not items:
            console.print("nothing is parked")
            return
        table = Table(title=f"{len(items)} parked")
        for column in ("id", "incident", "target", "since", "attempts", "error", "remote says"):
            table.add_column(column, overflow="fold")
        for p in items:
            table.add_row(
                str(p["id"]), plain(p["incident"]), plain(p["target"]),
                p["parked_at"][:16].replace("T", " "), str(p["attempts"]), plain(p["error"]),
                plain(p["remote_message"]),
            )  # fmt: skip
        console.print(table)

    @parked_app.command("replay")
    def parked_replay(
        parked_id: Annotated[int | None, typer.Argument(help="The parked item.")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every parked item.")] = False,
        config_file: ConfigOption = None,
    ) -> None:
        """Retry from the newest state (after fixing the mapping or the remote)."""
        settings = settings_or_exit(config_file)
        db = open_db(settings)
        with cli_errors(), store.session_scope(db) as s:
            replayed = parked.replay(s, parked_id=parked_id, every=all_, actor=Actor.cli())
        if not replayed:
            err.print("no open parked item: nothing is parked")
            raise typer.Exit(1)
        if settings.sync.pg_notify:
            notify_workers(db)
        console.print(
            f"replaying {len(replayed)}: queued for `itsm-sync sync --once` or the running service"
        )

    @app.command()
    def history(
        incident: Annotated[
            str, typer.Argument(help="Canonical id or a linked key (INC0010001, OPS-12).")
        ],
        config_file: ConfigOption = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """The audit log of one incident: every remote write, conflict, park and replay."""
        db = open_db(settings_or_exit(config_file))
        with cli_errors(), store.session_scope(db, readonly=True) as s:
            data = incidents.history(s, ident=incident)
        if as_json:
            typer.echo(json.dumps(data["entries"], indent=2))
            return
        names = ", ".join(f"{x['system']} {x['key'] or x['id']}" for x in data["links"])
        table = Table(title=plain(f"{data['title']} ({names})"))
        for column in ("when", "action", "where", "field", "before", "after", "why", "by"):
            table.add_column(column, overflow="fold")
        for e in data["entries"]:
            table.add_row(
                e["at"][:19].replace("T", " "), e["action"], plain(e["system"]),
                plain(e["field"] or ""), plain(_short(e["before"])), plain(_short(e["after"])),
                plain(e["reason"]), plain(e["actor"]),
            )  # fmt: skip
        console.print(table)

    @app.command()
    def public(
        incident: Annotated[str, typer.Argument(help="Canonical id or a linked key.")],
        message: Annotated[str, typer.Option(help="What customers will read.")] = "",
        off: Annotated[bool, typer.Option("--off", help="Make it private again.")] = False,
        force: Annotated[
            str,
            typer.Option(
                "--force",
                help="Publish although it is below what the status page shows; why (audited).",
            ),
        ] = "",
        config_file: ConfigOption = None,
    ) -> None:
        """Approve the public status of an incident (comms): the status page follows."""
        settings = settings_or_exit(config_file)
        db = open_db(settings)
        mappings = mappings_or_exit(settings)
        with cli_errors():
            incidents.set_public(
                db, ident=incident, message=message, public=not off, actor=Actor.cli(),
                mappings=mappings, force=force,
            )  # fmt: skip
        if settings.sync.pg_notify:
            notify_workers(db)
        console.print(f"{incident}: {'private' if off else 'public'}; queued for the status page")


_signals_seen = 0


def _stopping(signum: int, frame: Any) -> None:
    """After the server stopped: the first SIGINT/SIGTERM is the one uvicorn raises again
    (stop cleanly); one more while stopping means "now": exit at once."""
    global _signals_seen
    _signals_seen += 1
    if _signals_seen > 1:
        os._exit(128 + signum)


def _run_workers(runtime: Runtime) -> None:
    """``run --role workers``: the poller and the workers until SIGINT or SIGTERM."""
    import threading

    from service.runtime import settle_gc

    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    runtime.start(poll=True, workers=True)
    settle_gc()
    console.print("itsm-sync workers running (no HTTP)", highlight=False)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        runtime.stop()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


# A backfill reads everything since its start: pages of 1,000 records, not a poll's 100 (90 fewer
# round trips per 100,000 records; ServiceNow answers up to 10,000 a page, Jira's search and
# Statuspage's lists cap it at 100 themselves).
BACKFILL_PAGE_SIZE = 1000


def _backfill(runtime: Runtime, settings: Settings, start: dt.datetime) -> None:
    """Read, link pairs, reconcile: each with a progress bar; the reconcile's has an ETA
    (from the rate so far: the token buckets pace it to the configured limits)."""
    with _progress() as progress:
        for (system, instance), connector in sorted(runtime.connectors.items()):
            for object_type in POLLED.get(system, ()):
                task = progress.add_task(f"read {system}/{instance} {object_type}", total=None)

                def advance(n: int, task: Any = task) -> None:
                    progress.advance(task, n)

                result = poll_once(
                    runtime.db, connector, object_type, since=start,
                    watermark_key=f"{object_type}@backfill", progress=advance,
                    page_size=BACKFILL_PAGE_SIZE,
                )  # fmt: skip
                progress.update(task, total=result.read, completed=result.read)
                if result.error:
                    err.print(f"[red]{system} {object_type}:[/red] {plain(result.error)}")
        # Pairs linked by hand before us become one incident before anything is reconciled,
        # so that neither record gets a new counterpart.
        task = progress.add_task("link existing pairs", total=None)
        linked = pair_unlinked(runtime.reconciler)
        progress.update(task, total=linked, completed=linked)
        with store.session_scope(runtime.db, readonly=True) as s:
            total = queue_depth(s)
        task = progress.add_task("reconcile", total=total)
        done: list[Totals] = []
        failed: list[str] = []

        def reconcile() -> None:
            timeout, lease = 24 * 3600, settings.sync.lease_seconds
            try:
                if settings.sync.worker_processes > 1:  # as run's worker processes do
                    from service.supervisor import drain_in_processes

                    done.append(drain_in_processes(settings, timeout=timeout, lease=lease))
                else:
                    done.append(
                        drain(runtime.reconciler, threads=settings.sync.workers,
                              timeout=timeout, lease=lease)
                    )  # fmt: skip
            except RuntimeError as exc:
                failed.append(str(exc))

        worker = threading.Thread(target=reconcile, daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
            with store.session_scope(runtime.db, readonly=True) as s:
                left = queue_depth(s)
            # Reconciles queue more work (a create's echo): the total grows with it.
            progress.update(task, total=max(total, left), completed=max(0, total - left))
            total = max(total, left)
        progress.update(task, completed=total)
    if failed:
        err.print(f"[red]error:[/red] {plain(failed[0])}", highlight=False)
        raise typer.Exit(1)
    totals = done[0] if done else Totals()
    console.print(
        f"backfill: reconciled {totals.reconciled}, wrote {totals.writes}, "
        f"parked {len(totals.parked)}"
    )


def _backfill_dry_run(runtime: Runtime, start: dt.datetime) -> None:
    plan = dry_run(runtime.reconciler, start, page_size=BACKFILL_PAGE_SIZE)
    for intent in plan.intents:
        console.print(plain(intent.line()), highlight=False)
    for error in plan.errors:
        err.print(f"[red]error:[/red] {plain(error)}")
    console.print(
        f"dry run: {len(plan.intents)} records since {start.isoformat()}: "
        f"{plan.count('create')} new incidents ({plan.creates()} records to create), "
        f"{plan.count('link')} pairs to link, {plan.count('linked')} already linked, "
        f"{plan.count('skip')} skipped; nothing was written",
        highlight=False,
    )
    if plan.errors:
        raise typer.Exit(1)


def _short(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
