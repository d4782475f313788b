"""The web console at ``/``: server-rendered pages for viewers, change managers and admins.

Pages read through the service layer (:mod:`service.domain`), as the CLI and the JSON API do;
forms post back here (CSRF-checked) and answer with a redirect to the page they came from
(post/redirect/get), carrying a one-line outcome. No script is needed to read or act.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from postmortem_tracker.report import CR_STATES, AuditRow, to_csv
from service import charts
from service.domain import incidents, mapping, parked, postmortems, reports
from service.domain.errors import ServiceError
from service.domain.roles import Actor, Permission
from service.routes.console_auth import (
    COOKIE,
    LIFETIME,
    PRE_COOKIE,
    AdminPage,
    ChangeManagerPage,
    CsrfRefused,
    PageForbidden,
    PublisherPage,
    Sessions,
    SignInNeeded,
    Viewer,
    checked_form,
    current,
    form_of,
    render,
    secure_headers,
    sessions_of,
    set_cookie,
)
from service.routes.deps import RuntimeDep
from sync import store

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "static"
PAGE_SIZE = 50


def install(app: FastAPI) -> None:
    """Add the console to ``app``: its routes, its assets, its sessions and error pages."""
    app.state.console_sessions = Sessions()
    app.state.console_kpis = {}
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(SignInNeeded, _sign_in_needed)
    app.add_exception_handler(PageForbidden, _forbidden)
    app.add_exception_handler(CsrfRefused, _csrf_refused)


async def _sign_in_needed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInNeeded)
    query = {"next": exc.next_url}
    if exc.expired:
        query["expired"] = "1"
    response = RedirectResponse(f"/signin?{urlencode(query)}", status_code=303)
    if exc.expired:
        response.delete_cookie(COOKIE, path="/")
    return response


async def _forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageForbidden)
    return render(
        request,
        "error.html",
        current(request),
        status=403,
        title="Not allowed",
        message=exc.message,
    )


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return render(
        request,
        "error.html",
        current(request),
        status=403,
        title="Form refused",
        message="the form's CSRF token is missing or stale: reload the page and try again",
    )


def back(url: str, *, done: str = "", error: str = "") -> RedirectResponse:
    """Post/redirect/get: back to ``url`` with the outcome to show."""
    query = urlencode({k: v[:300] for k, v in (("done", done), ("error", error)) if v})
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}{query}" if query else url, status_code=303)


def _safe_next(target: str) -> str:
    """Only a path on this site (never ``//elsewhere`` or ``https://...``)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# -- signing in and out ------------------------------------------------------------------------


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request) -> Response:
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        request,
        "signin.html",
        None,
        pre=pre,
        next=_safe_next(request.query_params.get("next", "/")),
        expired=request.query_params.get("expired") == "1",
        signed_out=request.query_params.get("signed_out") == "1",
    )
    set_cookie(response, request, PRE_COOKIE, pre, max_age=3600)
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await form_of(request)
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not hmac.compare_digest(form.get("csrf", "").encode(), pre.encode()):
        raise CsrfRefused()
    given = form.get("token", "").strip().encode()
    tokens: list[tuple[bytes, str, str]] = request.app.state.tokens
    for secret, role, name in tokens:
        if given and hmac.compare_digest(secret, given):
            sid = sessions_of(request).start(Actor.token(name, role))
            response = RedirectResponse(_safe_next(form.get("next", "/")), status_code=303)
            set_cookie(response, request, COOKIE, sid, max_age=int(LIFETIME.total_seconds()))
            response.delete_cookie(PRE_COOKIE, path="/")
            return response
    return render(
        request,
        "signin.html",
        None,
        status=401,
        pre=pre,
        next=_safe_next(form.get("next", "/")),
        error="unknown token: paste an API token from the service's api_tokens",
    )


@router.post("/signout")
async def signout(request: Request, session: Viewer) -> Response:
    await checked_form(request, session)
    sid = request.cookies.get(COOKIE, "")
    sessions_of(request).end(sid)
    response = RedirectResponse("/signin?signed_out=1", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- viewer: overview and incident ---------------------------------------------------------------


def _systems(status: dict[str, Any], stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per system: links, poll lag, remote calls, errors and rate-limit answers."""
    out: dict[str, dict[str, Any]] = {}
    for system in ("servicenow", "jira", "statuspage"):
        out[system] = {
            "system": system,
            "links": status["links"].get(system, 0),
            "lag": None,
            "calls": 0,
            "errors": 0,
            "rate_limited": 0,
        }
    for name, lag in status["poll_lag_seconds"].items():
        system = name.split("/")[0]
        entry = out.setdefault(
            system,
            {"system": system, "links": 0, "calls": 0, "errors": 0, "rate_limited": 0, "lag": None},
        )
        entry["lag"] = lag if entry["lag"] is None else max(entry["lag"], lag)
    for (system, _method, code), n in stats["calls"].items():
        entry = out.setdefault(
            system,
            {"system": system, "links": 0, "calls": 0, "errors": 0, "rate_limited": 0, "lag": None},
        )
        entry["calls"] += n
        if code in ("429", "420"):
            entry["rate_limited"] += n
        elif not code.isdigit() or int(code) >= 500:
            entry["errors"] += n
    for entry in out.values():
        late = entry["lag"] is not None and entry["lag"] > 600
        entry["health"] = "degraded" if entry["errors"] or late else "ok"
    return list(out.values())


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, runtime: RuntimeDep, session: Viewer, page: int = 1) -> Response:
    page = max(page, 1)
    with store.session_scope(runtime.db, readonly=True) as s:
        status = incidents.overview(
            s,
            mapping_problems=runtime.mapping_problems,
            comms=runtime.settings.comms,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
    flight = status["in_flight"]
    healthy, workers = runtime.health()
    stats = runtime.stats()
    return render(
        request,
        "overview.html",
        session,
        status=200,
        state=status,
        flight=flight,
        page=page,
        pages=max(1, -(-flight["total"] // PAGE_SIZE)),
        healthy=healthy,
        workers=workers,
        stats=stats,
        systems=_systems(status, stats),
    )


ACTION_WORDS = {
    "create": "created",
    "update": "updated",
    "transition": "moved",
    "comment": "comment synced",
    "conflict": "conflict decided",
    "park": "parked",
    "replay": "replayed",
    "override": "gate overridden",
    "skip": "refused",
}


@router.get("/incidents/{ident}", response_class=HTMLResponse)
def incident(request: Request, ident: str, runtime: RuntimeDep, session: Viewer) -> Response:
    try:
        with store.session_scope(runtime.db, readonly=True) as s:
            detail = incidents.detail(s, ident=ident, comms=runtime.settings.comms)
            history = incidents.history(s, ident=ident)
            open_parked = [
                p.model_dump(mode="json") for p in store.open_parked(s, incident_id=detail["id"])
            ]
            name = incidents.name_of(s, detail["id"])
        pm = postmortems.show(runtime.tracker, ident=detail["id"])
    except ServiceError as exc:
        return render(
            request,
            "error.html",
            session,
            status=exc.status,
            title="Not found",
            message=exc.message,
        )
    return render(
        request,
        "incident.html",
        session,
        detail=detail,
        history=history,
        name=name,
        entries=list(reversed(history["entries"])),
        words=ACTION_WORDS,
        parked=open_parked,
        pm=pm,
        gate=pm["gate"],
        cr_states=CR_STATES,
    )


@router.post("/publish")
async def publish_any(request: Request, runtime: RuntimeDep, session: PublisherPage) -> Response:
    """The admin page's form: the incident is a field, and the answer goes back there."""
    form = await checked_form(request, session)
    return _publish(runtime, session, form, form.get("incident", "").strip(), "/admin")


@router.post("/incidents/{ident}/publish")
async def publish(
    request: Request, ident: str, runtime: RuntimeDep, session: PublisherPage
) -> Response:
    form = await checked_form(request, session)
    return _publish(runtime, session, form, ident, f"/incidents/{quote(ident)}")


def _publish(runtime: Any, session: Any, form: dict[str, str], ident: str, here: str) -> Response:
    if not ident:
        return back(here, error="name the incident to publish (INC number, Jira key or id)")
    try:
        result = incidents.set_public(
            runtime.db,
            ident=ident,
            message=form.get("message", ""),
            public=form.get("public", "yes") == "yes",
            actor=session.actor,
            mappings=runtime.mappings,
            force=form.get("force", ""),
        )
    except ServiceError as exc:
        return back(here, error=exc.message)
    what = "published to the status page" if result["public"] else "made private"
    return back(here, done=f"{ident} {what}; the status page follows within seconds")


# -- change manager ------------------------------------------------------------------------------


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    return {k: q.get(k, "").strip()[:40] for k in ("since", "until", "severity", "team", "outcome")}


def _audit(runtime: Any, session: Any, f: dict[str, str]) -> list[dict[str, Any]]:
    return reports.audit(
        runtime.tracker,
        actor=session.actor,
        since=postmortems.parse_date(f["since"], field="since"),
        until=postmortems.parse_date(f["until"], field="until"),
        team=f["team"],
        severity=f["severity"],
        outcome_is=f["outcome"],
    )


KPI_TTL = dt.timedelta(seconds=60)


def _kpis(request: Request, runtime: Any, session: Any) -> dict[str, Any]:
    """The KPI series, computed at most once a minute (weekly figures; the page says as of
    when). The role is checked on every call, cached or not."""
    cache: dict[str, Any] = request.app.state.console_kpis
    now = store.utcnow()
    if cache.get("at") is None or now - cache["at"] > KPI_TTL:
        cache["value"] = reports.kpis(runtime.tracker, actor=session.actor)
        cache["at"] = now
    else:
        session.actor.require(Permission.POSTMORTEM)
    return {**cache["value"], "as_of": cache["at"].strftime("%H:%M:%S")}


@router.get("/changes", response_class=HTMLResponse)
def changes(request: Request, runtime: RuntimeDep, session: ChangeManagerPage) -> Response:
    f = _filters(request)
    if not request.query_params:  # the last four weeks, unless asked otherwise
        f["since"] = (dt.date.today() - dt.timedelta(days=28)).isoformat()
    error = ""
    rows: list[dict[str, Any]] = []
    try:
        rows = _audit(runtime, session, f)
    except ServiceError as exc:
        error = exc.message
    k = _kpis(request, runtime, session)
    weeks = [w[5:] for w in k["weeks"]]
    sevs = list(reports.SEVERITIES)
    kpi_charts = [
        charts.bars("On-time rate by week of due date", weeks, k["on_time"], unit="%", maximum=100),
        charts.bars(
            "Overdue action items by severity", sevs, list(k["overdue"].values()), alert=True
        ),
        charts.bars("Days to change request by severity", sevs, list(k["days_to_cr"].values())),
        charts.bars("Gate overrides by week", weeks, [float(v) for v in k["overrides"]]),
    ]
    gates: dict[str, dict[str, Any]] = {}
    for row in rows:
        gates.setdefault(
            row["incident"],
            {
                "incident": row["incident"],
                "title": row["title"],
                "severity": row["severity"],
                "gate": row["gate"],
                "open": 0,
            },
        )
        gates[row["incident"]]["open"] += row["outcome"] not in ("implemented", "overridden")
    return render(
        request,
        "changes.html",
        session,
        rows=rows,
        filters=f,
        error=error,
        severities=sevs,
        outcomes=reports.OUTCOMES,
        teams=sorted({r["team"] for r in rows}),
        kpi=k,
        kpi_charts=kpi_charts,
        gates=list(gates.values()),
        csv_query=urlencode({k: v for k, v in f.items() if v}),
    )


@router.get("/changes/audit.csv")
def changes_csv(request: Request, runtime: RuntimeDep, session: ChangeManagerPage) -> Response:
    f = _filters(request)
    try:
        rows = _audit(runtime, session, f)
    except ServiceError as exc:
        return Response(exc.message, status_code=exc.status, media_type="text/plain")
    fields = AuditRow.__dataclass_fields__
    body = to_csv([AuditRow(**{k: v for k, v in r.items() if k in fields}) for r in rows])
    response = Response(
        body,
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="itsm-sync-audit.csv"'},
    )
    secure_headers(response)
    return response


@router.post("/incidents/{ident}/override")
async def override(
    request: Request, ident: str, runtime: RuntimeDep, session: ChangeManagerPage
) -> Response:
    form = await checked_form(request, session)
    here = _safe_next(form.get("back", "")) if form.get("back") else f"/incidents/{quote(ident)}"
    try:
        postmortems.override(
            runtime.tracker, ident=ident, reason=form.get("reason", ""), actor=session.actor
        )
    except ServiceError as exc:
        return back(here, error=exc.message)
    return back(here, done=f"gate of {ident} overridden: {form.get('reason', '').strip()}")


@router.post("/incidents/{ident}/override/revoke")
async def revoke(
    request: Request, ident: str, runtime: RuntimeDep, session: ChangeManagerPage
) -> Response:
    form = await checked_form(request, session)
    here = f"/incidents/{quote(ident)}"
    try:
        postmortems.revoke_override(
            runtime.tracker, ident=ident, reason=form.get("reason", ""), actor=session.actor
        )
    except ServiceError as exc:
        return back(here, error=exc.message)
    return back(here, done=f"override of {ident} revoked: the gate is armed again")


@router.post("/incidents/{ident}/actions")
async def add_action(
    request: Request, ident: str, runtime: RuntimeDep, session: ChangeManagerPage
) -> Response:
    form = await checked_form(request, session)
    here = f"/incidents/{quote(ident)}"
    try:
        result = postmortems.add_action(
            runtime.tracker,
            ident=ident,
            title=form.get("title", ""),
            owner=form.get("owner", "").strip(),
            due=postmortems.parse_date(form.get("due", ""), field="due"),
            actor=session.actor,
            source=f"console:{session.actor.label}",
        )
    except ServiceError as exc:
        return back(here, error=exc.message)
    still = f" (still needs {' and '.join(result['still_needs'])})" if result["still_needs"] else ""
    return back(here, done=f"action item {result['title']!r} added{still}")


# -- admin ----------------------------------------------------------------------------------


def _admin(request: Request, runtime: Any, session: Any, **extra: Any) -> Response:
    with store.session_scope(runtime.db, readonly=True) as s:
        versions = mapping.versions(s)
        items = parked.list_open(s)
    return render(
        request,
        "admin.html",
        session,
        versions=versions[:30],
        parked=items,
        systems=[f"{m.system}/{m.instance}" for m in runtime.mappings],
        mappings_dir=runtime.settings.mappings_dir,
        **extra,
    )


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request, runtime: RuntimeDep, session: AdminPage) -> Response:
    return _admin(request, runtime, session)


@router.get("/admin/mappings/{version_id}", response_class=HTMLResponse)
def mapping_version(
    request: Request, version_id: int, runtime: RuntimeDep, session: AdminPage
) -> Response:
    try:
        with store.session_scope(runtime.db, readonly=True) as s:
            version = mapping.version_source(s, version_id=version_id)
    except ServiceError as exc:
        return render(
            request,
            "error.html",
            session,
            status=exc.status,
            title="Not found",
            message=exc.message,
        )
    return render(request, "mapping_version.html", session, version=version)


@router.post("/admin/mappings/preview", response_class=HTMLResponse)
async def mapping_preview(request: Request, runtime: RuntimeDep, session: AdminPage) -> Response:
    form = await checked_form(request, session)
    spec, ident = form.get("spec", ""), form.get("incident", "").strip()
    try:
        with store.session_scope(runtime.db, readonly=True) as s:
            if ident:
                result = mapping.preview(
                    s,
                    text=spec,
                    ident=ident,
                    mappings=runtime.mappings,
                    connectors=runtime.connectors,
                )
            else:
                result = mapping.validate(text=spec)
        error = ""
    except ServiceError as exc:
        result, error = None, exc.message
    status = 422 if error or (result and not result["ok"]) else 200
    response = _admin(
        request, runtime, session, spec=spec, incident=ident, preview=result, preview_error=error
    )
    response.status_code = status
    return response


@router.post("/admin/mappings/save")
async def mapping_save(request: Request, runtime: RuntimeDep, session: AdminPage) -> Response:
    form = await checked_form(request, session)
    try:
        with store.session_scope(runtime.db) as s:
            result = mapping.save(
                s,
                text=form.get("spec", ""),
                directory=runtime.settings.mappings_dir,
                mappings=runtime.mappings,
                actor=session.actor,
            )
    except ServiceError as exc:
        return back("/admin", error=exc.message)
    runtime.reloader.check()
    return back(
        "/admin",
        done=f"{result['system']}/{result['instance']} {result['digest']} saved and in use",
    )


@router.post("/admin/mappings/{version_id}/rollback")
async def mapping_rollback(
    request: Request, version_id: int, runtime: RuntimeDep, session: AdminPage
) -> Response:
    await checked_form(request, session)
    try:
        with store.session_scope(runtime.db) as s:
            result = mapping.rollback(
                s,
                version_id=version_id,
                directory=runtime.settings.mappings_dir,
                mappings=runtime.mappings,
                actor=session.actor,
            )
    except ServiceError as exc:
        return back("/admin", error=exc.message)
    runtime.reloader.check()
    return back(
        "/admin",
        done=f"rolled back to version {version_id}: {result['system']} {result['digest']} in use",
    )


@router.post("/admin/parked/replay-all")
async def replay_all(request: Request, runtime: RuntimeDep, session: AdminPage) -> Response:
    await checked_form(request, session)
    try:
        with store.session_scope(runtime.db) as s:
            ids = parked.replay(s, every=True, actor=session.actor)
    except ServiceError as exc:
        return back("/admin", error=exc.message)
    return back("/admin", done=f"{len(ids)} parked item(s) queued again")


@router.post("/admin/parked/{parked_id}/replay")
async def replay_one(
    request: Request, parked_id: int, runtime: RuntimeDep, session: AdminPage
) -> Response:
    form = await checked_form(request, session)
    here = _safe_next(form.get("back", "/admin"))
    try:
        with store.session_scope(runtime.db) as s:
            parked.replay(s, parked_id=parked_id, actor=session.actor)
    except ServiceError as exc:
        return back(here, error=exc.message)
    return back(here, done=f"parked item {parked_id} queued again from the newest state")
