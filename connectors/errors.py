"""One error taxonomy for every connector, and one table that classifies responses.

Every failure a connector raises is one of:

- :class:`Fatal` — retrying will not help (400 "field cannot be set", 403 data policy, 422);
  carries the remote's own message so the parked item tells an admin what to fix.
- :class:`Retriable` — a transient failure (5xx, timeout, connection reset).
- :class:`RateLimited` — a :class:`Retriable` that carries the wait the remote asked for.
- :class:`NotFound` — the record does not exist (or is hidden from us).
- :class:`AuthFailed` — our credentials were refused.
- :class:`Conflict` — the remote refused a conflicting update (Jira 409); re-read and retry.

Messages never contain credentials: :func:`redact` scrubs URLs and known secret parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any


class ConnectorError(Exception):
    """Base of the taxonomy. ``remote_message`` is what the remote system said, verbatim."""

    retriable = False

    def __init__(
        self,
        message: str,
        *,
        system: str = "",
        status: int | None = None,
        remote_message: str = "",
    ) -> None:
        super().__init__(redact(message))
        self.system = system
        self.status = status
        self.remote_message = redact(remote_message)

    def __str__(self) -> str:
        base = super().__str__()
        prefix = f"{self.system}: " if self.system and not base.startswith(self.system) else ""
        status = f" (HTTP {self.status})" if self.status else ""
        remote = (
            f": {self.remote_message}"
            if self.remote_message and self.remote_message not in base
            else ""
        )
        return f"{prefix}{base}{status}{remote}"


class Fatal(ConnectorError):
    """Retrying will not help; an admin has to change something."""


class Retriable(ConnectorError):
    retriable = True


class RateLimited(Retriable):
    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = max(0.0, retry_after)


class NotFound(ConnectorError):
    pass


class AuthFailed(ConnectorError):
    pass


class Conflict(ConnectorError):
    pass


# The one table: HTTP status -> class. Statuspage's 420 is its 429.
STATUS_TABLE: dict[int, type[ConnectorError]] = {
    400: Fatal,
    401: AuthFailed,
    403: Fatal,  # ServiceNow data policy / ACL, Jira permission: an admin must act
    404: NotFound,
    405: Fatal,
    409: Conflict,
    413: Fatal,
    415: Fatal,
    420: RateLimited,
    422: Fatal,
    429: RateLimited,
    500: Retriable,
    502: Retriable,
    503: Retriable,
    504: Retriable,
}


def class_for_status(status: int) -> type[ConnectorError]:
    if status in STATUS_TABLE:
        return STATUS_TABLE[status]
    if status >= 500:
        return Retriable
    return Fatal


def classify_response(
    *,
    system: str,
    status: int,
    body: bytes | str | None,
    headers: Mapping[str, str] | None = None,
    what: str = "request",
) -> ConnectorError:
    """The error for a non-2xx response, carrying the remote's own message."""
    remote = remote_message(body)
    cls = class_for_status(status)
    message = f"{what} failed"
    if cls is RateLimited:
        wait = parse_retry_after(
            (headers or {}).get("Retry-After") or _header(headers, "retry-after")
        )
        return RateLimited(
            message,
            retry_after=wait if wait is not None else 1.0,
            system=system,
            status=status,
            remote_message=remote,
        )
    return cls(message, system=system, status=status, remote_message=remote)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (integer/decimal seconds or an HTTP date)."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    import datetime as dt

    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def remote_message(body: bytes | str | None) -> str:
    """The remote's own error message from any of the three systems' error bodies.

    ServiceNow ``{"error": {"message", "detail"}}``; Jira ``{"errorMessages": [...],
    "errors": {field: message}}``; Statuspage ``{"message"}`` / ``{"error"}``.
    """
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if not isinstance(data, dict):
        return text.strip()[:500]
    parts: list[str] = []
    error = data.get("error")
    if isinstance(error, dict):
        parts += [str(error[k]).strip() for k in ("message", "detail") if error.get(k)]
    elif isinstance(error, str):
        parts.append(error)
    messages = data.get("errorMessages")
    if isinstance(messages, list):
        parts += [str(m) for m in messages if m]
    errors = data.get("errors")
    if isinstance(errors, dict):
        parts += [f"{field}: {msg}" for field, msg in errors.items()]
    elif isinstance(errors, list):
        parts += [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
    if isinstance(data.get("message"), str):
        parts.append(data["message"])
    return "; ".join(parts) if parts else text.strip()[:500]


_SECRET_PARAMS = re.compile(
    r"(?i)((?:api_key|apikey|token|access_token|refresh_token|password|secret|client_secret)=)"
    r"[^&\s\"']+"
)
# Any scheme: https://bob:pw@, postgresql+psycopg://sync:pw@ (the user stays, the password goes).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:]+:)?[^/@\s]+@")
_AUTH_HEADER = re.compile(
    r"(?i)((?:authorization|x-hub-signature|x-servicenow-secret)['\"]?\s*[:=]\s*['\"]?)"
    r"[^'\",}\n]+"
)


def redact(text: str) -> str:
    """Scrub credentials from a message: query secrets, URL user-info, auth headers."""
    text = _SECRET_PARAMS.sub(r"\1***", text)
    text = _URL_USERINFO.sub(r"\1\2***@", text)
    return _AUTH_HEADER.sub(r"\1***", text)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or during, plus what urllib3 and httpcore
    keep in ``args`` (the reason of a MaxRetryError), outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return seen


def network_cause(exc: BaseException, *, system: str = "") -> str:
    """What went wrong on the way to a remote, and what to do about it, in one line:
    untrusted certificate, other TLS failure, refused connection, unknown host, timeout."""
    import socket
    import ssl

    setting = f"ITSM_SYNC_{system.upper()}__" if system else "the system's "
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
            detail = getattr(e, "verify_message", "") or "certificate verify failed"
            return (
                f"TLS certificate not trusted ({detail}): set {setting}CA_BUNDLE to the CA file "
                "that signed it"
            )
    for e in chain:
        if isinstance(e, ssl.SSLError) or "SSL" in type(e).__name__:
            reason = getattr(e, "reason", None) or type(e).__name__
            return (
                f"TLS failure ({reason}): check that the URL's scheme and port are right and the "
                f"TLS settings ({setting}CA_BUNDLE, {setting}CLIENT_CERT)"
            )
    for e in chain:
        if isinstance(e, socket.gaierror) or "Name or service not known" in str(e):
            return f"host name not found: check {setting}URL"
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e):
            return (
                f"connection refused: check {setting}URL and that the service is up (and the "
                "proxy, if one is set)"
            )
    if "timed out" in text.lower() or any(isinstance(e, TimeoutError) for e in chain):
        return "timed out: check the URL, the network path and the proxy"
    return f"connection failed ({type(exc).__name__})"
