"""Who may do what: the one place the roles of API tokens (and console sessions) are decided.

Roles are sets of permissions, not a ladder: ``comms`` may publish to the status page but may
not read the audit or replay parked work.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import get_args

from config.settings import TokenRole

ROLES: tuple[str, ...] = get_args(TokenRole)


class Permission(StrEnum):
    READ = "read"  # incidents, links, history, gate state, status, parked items
    PUBLISH = "publish"  # the public flag and the public message
    POSTMORTEM = "postmortem"  # action items, overrides, the audit and KPIs
    OPERATE = "operate"  # replay parked work, mappings


GRANTS: dict[str, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ}),
    "comms": frozenset({Permission.READ, Permission.PUBLISH}),
    "change-manager": frozenset({Permission.READ, Permission.POSTMORTEM}),
    "admin": frozenset(Permission),
}


def allows(role: str, permission: Permission) -> bool:
    return permission in GRANTS.get(role, frozenset())


def roles_with(permission: Permission) -> list[str]:
    return [role for role in ROLES if allows(role, permission)]


@dataclass(frozen=True)
class Actor:
    """Who asks: a name, its role, and how the audit log names it (``token:alice``, ``cli``)."""

    name: str
    role: str
    label: str

    @classmethod
    def token(cls, name: str, role: str) -> Actor:
        return cls(name=name, role=role, label=f"token:{name}")

    @classmethod
    def cli(cls, name: str = "") -> Actor:
        """Whoever runs the CLI holds the database: every permission; ``--as`` names them."""
        return cls(name=name or "cli", role="admin", label=f"cli:{name}" if name else "cli")

    def can(self, permission: Permission) -> bool:
        return allows(self.role, permission)

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            from service.domain.errors import Forbidden

            needed = " or ".join(roles_with(permission))
            raise Forbidden(f"this needs the {needed} role; {self.name} has {self.role}")
