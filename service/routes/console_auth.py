"""The console's sessions: an API token signed in for a cookie, a CSRF token per session, and
the page dependencies that decide who sees what (the roles of :mod:`service.domain.roles`).

Sessions live in this process (``itsm-sync run`` serves HTTP from one process): signing out or
restarting ends them. The cookie is HttpOnly and SameSite=Strict, and Secure when the request
came over TLS. Every form carries the session's CSRF token; the sign-in form, before there is a
session, a double-submit token of its own.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from service.domain.roles import Actor, Permission, roles_with
from sync.store import utcnow

COOKIE = "itsm_console"
PRE_COOKIE = "itsm_console_pre"  # the sign-in form's CSRF token, before there is a session
IDLE = dt.timedelta(minutes=30)  # a session unused this long ends
LIFETIME = dt.timedelta(hours=8)  # and every session ends this long after sign-in
MAX_SESSIONS = 10_000
MAX_FORM_BYTES = 256 * 1024

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def shown(value: Any) -> str:
    """A value from the audit log as people read it: ``∅`` for none, ``key: value`` pairs for
    an object, items joined for a list."""
    if value is None or value == "":
        return "∅"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {shown(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(shown(v) for v in value) or "[]"
    return str(value)


templates.env.filters["shown"] = shown


@dataclass
class ConsoleSession:
    actor: Actor
    csrf: str
    started: dt.datetime
    seen: dt.datetime


@dataclass
class Sessions:
    """Signed-in sessions by cookie value; ``clock`` is replaceable for tests."""

    clock: Callable[[], dt.datetime] = utcnow
    idle: dt.timedelta = IDLE
    lifetime: dt.timedelta = LIFETIME
    _by_id: dict[str, ConsoleSession] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, actor: Actor) -> str:
        now = self.clock()
        sid = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._by_id) >= MAX_SESSIONS:
                self._purge(now)
            if len(self._by_id) >= MAX_SESSIONS:  # still full: the oldest goes
                oldest = min(self._by_id, key=lambda k: self._by_id[k].seen)
                del self._by_id[oldest]
            self._by_id[sid] = ConsoleSession(actor, secrets.token_urlsafe(24), now, now)
        return sid

    def get(self, sid: str) -> ConsoleSession | None:
        now = self.clock()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if now - session.seen > self.idle or now - session.started > self.lifetime:
                del self._by_id[sid]
                return None
            session.seen = now
            return session

    def end(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)

    def _purge(self, now: dt.datetime) -> None:
        for sid, s in list(self._by_id.items()):
            if now - s.seen > self.idle or now - s.started > self.lifetime:
                del self._by_id[sid]


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.console_sessions
    return sessions


def is_tls(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Any, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=is_tls(request),
        path="/",
    )


class SignInNeeded(Exception):
    """No (live) session: the page answers with the sign-in form (303 to /signin)."""

    def __init__(self, next_url: str, expired: bool) -> None:
        self.next_url = next_url
        self.expired = expired


class PageForbidden(Exception):
    """Signed in, but the role does not allow this page or action (403 page)."""

    def __init__(self, actor: Actor, permission: Permission) -> None:
        self.actor = actor
        self.permission = permission

    @property
    def message(self) -> str:
        needed = " or ".join(roles_with(self.permission))
        return f"this needs the {needed} role; {self.actor.name} has {self.actor.role}"


def current(request: Request) -> ConsoleSession | None:
    sid = request.cookies.get(COOKIE, "")
    return sessions_of(request).get(sid) if sid else None


def page(permission: Permission) -> Callable[..., ConsoleSession]:
    """A dependency: the signed-in session, whose role must hold ``permission``."""

    def check(request: Request) -> ConsoleSession:
        session = current(request)
        if session is None:
            target = request.url.path if request.method == "GET" else "/"
            raise SignInNeeded(target, expired=COOKIE in request.cookies)
        if not session.actor.can(permission):
            raise PageForbidden(session.actor, permission)
        return session

    return check


Viewer = Annotated[ConsoleSession, Depends(page(Permission.READ))]
ChangeManagerPage = Annotated[ConsoleSession, Depends(page(Permission.POSTMORTEM))]
AdminPage = Annotated[ConsoleSession, Depends(page(Permission.OPERATE))]
PublisherPage = Annotated[ConsoleSession, Depends(page(Permission.PUBLISH))]


async def form_of(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as {name: last value}."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, f"the form is over {MAX_FORM_BYTES // 1024} KiB")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


class CsrfRefused(Exception):
    """A form post without the session's CSRF token (403)."""


async def checked_form(request: Request, session: ConsoleSession) -> dict[str, str]:
    """The posted form, once its CSRF token is the session's."""
    form = await form_of(request)
    if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
        raise CsrfRefused()
    return form


def render(
    request: Request,
    template: str,
    session: ConsoleSession | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page, with what every page needs: who is signed in, what they may do, the CSRF token."""
    actor = session.actor if session else None
    flash = request.query_params.get("done", "")
    flash_error = request.query_params.get("error", "")
    response = templates.TemplateResponse(
        request,
        template,
        {
            "actor": actor,
            "csrf": session.csrf if session else "",
            "can": {p.value: bool(actor and actor.can(p)) for p in Permission},
            "flash": flash[:300],
            "flash_error": flash_error[:300],
            "path": request.url.path,
            **context,
        },
        status_code=status,
    )
    secure_headers(response)
    return response


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def secure_headers(response: Any) -> None:
    """Pages are never cached, framed, or allowed to load anything from elsewhere."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
