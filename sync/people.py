"""People lookups for mapping transforms, backed by a connector's cached lookups."""

from __future__ import annotations

from connectors.base import Capability, Connector
from mapping.transforms import TransformContext


class ConnectorPeople:
    """``mapping.transforms.PeopleLookup`` over a connector (email <-> the system's user id)."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def email_for(self, person_id: str) -> str:
        return self.connector.person_by_id(person_id).email

    def id_for(self, email: str) -> str:
        return self.connector.person_by_email(email).id


def context_for(connector: Connector) -> TransformContext:
    """The transform context for records of ``connector``'s system."""
    people = ConnectorPeople(connector) if Capability.PEOPLE in connector.capabilities else None
    return TransformContext(system=connector.system, people=people)
