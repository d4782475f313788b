"""What ``itsm-sync`` prints when a command fails with something no command handled itself: one
line with the cause and the remedy (``--debug``: the traceback too), never a raw dump."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from connectors.errors import ConnectorError, _chain, network_cause, redact

DB = "ITSM_SYNC_DATABASE_URL"
DB_EXAMPLES = "postgresql+psycopg://USER:PASSWORD@HOST:5432/DBNAME or sqlite:///PATH/itsm-sync.db"


def validation_lines(exc: ValidationError, *, where: str = "") -> list[str]:
    """One line per problem of a settings ValidationError: the environment name of the setting,
    its dotted path, and what is wrong (never the value: it may be a secret)."""
    lines = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"]]
        env = "ITSM_SYNC_" + "__".join(part.upper() for part in location)
        dotted = ".".join(location)
        if error["type"] == "extra_forbidden":
            problem = "not a setting (`itsm-sync config` shows every name)"
        elif error["type"] == "missing":
            problem = "required"
        else:
            problem = error["msg"]
        lines.append(f"{where}{env} ({dotted}): {problem}")
    return lines


def describe(exc: BaseException) -> str:
    """One line: what failed, why, and what to do."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ValidationError):
            return "invalid settings: " + "; ".join(validation_lines(e))
        if isinstance(e, NoSuchModuleError):
            return (
                f"{DB}: unknown database driver ({redact(str(e))}): use {DB_EXAMPLES}"
                if "sqlalchemy.dialects" in str(e)
                else redact(str(e))
            )
        if isinstance(e, ArgumentError) and "URL" in str(e):
            return f"{DB} is not a database URL: use {DB_EXAMPLES}"
        if isinstance(e, OperationalError):
            return _database(e)
    for e in chain:
        if isinstance(e, ConnectorError):
            return str(e)
    network = [e for e in chain if isinstance(e, OSError)]
    if network:
        return network_cause(exc)
    first = redact(str(exc)).strip().splitlines()
    if isinstance(exc, ValueError) and first:  # our own refusals say what is wrong already
        return first[0]
    return f"{type(exc).__name__}: {first[0] if first else ''} (--debug shows the traceback)"


def _database(exc: OperationalError) -> str:
    text = redact(str(exc.orig) if exc.orig is not None else str(exc))
    where = re.search(r'(?:server at|host) "([^"]+)"(?:.*?port (\d+))?', text, re.S)
    at = f" at {where.group(1)}:{where.group(2) or 5432}" if where else ""
    if "Connection refused" in text:
        return (
            f"cannot connect to the database{at}: connection refused: start PostgreSQL or fix "
            f"the host and port in {DB}"
        )
    if "password authentication failed" in text or "no password supplied" in text:
        return f"the database{at} refused the user or password in {DB}: fix them"
    missing = re.search(r'database "([^"]+)" does not exist', text)
    if missing:
        return (
            f'the database "{missing.group(1)}" does not exist{at}: create it '
            f"(createdb {missing.group(1)}) or fix {DB}"
        )
    if "could not translate host name" in text or "Name or service not known" in text:
        return f"the database host in {DB} is not known: fix the host name"
    if "unable to open database file" in text:
        return (
            f"SQLite cannot open the database file named by {DB}: does its folder exist, and "
            "may this user write there?"
        )
    if "timeout" in text.lower():
        return f"the database{at} did not answer in time: check the network path and {DB}"
    first = text.strip().splitlines()
    return f"database error: {first[0] if first else type(exc).__name__}"


def debug_requested(argv: list[Any]) -> bool:
    return "--debug" in argv
