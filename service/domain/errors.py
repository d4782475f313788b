"""The service layer's errors: each says what is wrong and where, in one line."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses. ``field`` names the input at fault, if one is."""

    status = 400

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ServiceError):
    status = 404


class Invalid(ServiceError):
    status = 422


class Forbidden(ServiceError):
    status = 403


class Conflict(ServiceError):
    status = 409


class Unavailable(ServiceError):
    """A remote system the request depends on did not answer; nothing was written."""

    status = 503
