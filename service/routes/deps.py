"""What routes depend on, as ``Annotated`` dependencies: the runtime, sessions, and who asks."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from postmortem_tracker.tracker import Tracker
from service.domain.roles import Actor, Permission, roles_with
from service.runtime import Runtime
from sync import store


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_tracker(runtime: RuntimeDep) -> Tracker:
    return runtime.tracker


TrackerDep = Annotated[Tracker, Depends(get_tracker)]


def read_session(runtime: RuntimeDep) -> Iterator[Session]:
    with store.session_scope(runtime.db, readonly=True) as s:
        yield s


ReadSession = Annotated[Session, Depends(read_session)]
# No write session as a dependency: FastAPI enters and leaves a sync generator dependency on
# two thread-pool threads, and a write scope holds the store's per-thread write lock (SQLite),
# which the other thread cannot release: every later writer then waited forever. A write
# endpoint opens its scope in its own body (``with store.session_scope(runtime.db) as s``).


def bearer_actor(request: Request) -> Actor:
    """The token in ``Authorization: Bearer ...``, as an :class:`Actor` (401 if none or unknown)."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            401, "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
        )
    tokens: list[tuple[bytes, str, str]] = request.app.state.tokens
    for secret, role, name in tokens:
        if hmac.compare_digest(secret, given.encode()):
            actor = Actor.token(name, role)
            request.state.actor = actor.label
            return actor
    raise HTTPException(401, "unknown token", {"WWW-Authenticate": "Bearer"})


def require(permission: Permission) -> Callable[..., Actor]:
    """A dependency: the caller, who must hold ``permission`` (403 names the roles that do)."""

    def check(request: Request) -> Actor:
        actor: Actor | None = getattr(request.state, "console_actor", None)
        if actor is None:
            actor = bearer_actor(request)
        if not actor.can(permission):
            needed = " or ".join(roles_with(permission))
            raise HTTPException(403, f"this needs the {needed} role; the token has {actor.role}")
        return actor

    return check


Reader = Annotated[Actor, Depends(require(Permission.READ))]
Publisher = Annotated[Actor, Depends(require(Permission.PUBLISH))]
ChangeManager = Annotated[Actor, Depends(require(Permission.POSTMORTEM))]
Operator = Annotated[Actor, Depends(require(Permission.OPERATE))]


def token_table(runtime: Runtime) -> list[tuple[bytes, str, str]]:
    return [
        (t.token.get_secret_value().encode(), t.role, t.name) for t in runtime.settings.api_tokens
    ]


def client_of(request: Request) -> Any:
    return request.client.host if request.client else ""
