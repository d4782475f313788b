"""Build every configured connector, by (system, instance name)."""

from __future__ import annotations

from config.settings import Settings
from connectors.base import Connector
from connectors.jira import JiraConnector
from connectors.servicenow import ServiceNowConnector
from connectors.statuspage import StatuspageConnector

DEFAULT = "default"


def build_connectors(settings: Settings) -> dict[tuple[str, str], Connector]:
    """The ``default`` instance of each system (the top-level sections) plus every named one
    under ``instances``. A name used twice for one system is refused."""
    out: dict[tuple[str, str], Connector] = {
        ("servicenow", DEFAULT): ServiceNowConnector(settings.servicenow, instance=DEFAULT),
        ("jira", DEFAULT): JiraConnector(settings.jira, instance=DEFAULT),
        ("statuspage", DEFAULT): StatuspageConnector(settings.statuspage, instance=DEFAULT),
    }
    extra = settings.instances
    named: list[tuple[str, str, Connector]] = [
        *(
            ("servicenow", n, ServiceNowConnector(s, instance=n))
            for n, s in extra.servicenow.items()
        ),
        *(("jira", n, JiraConnector(s, instance=n)) for n, s in extra.jira.items()),
        *(
            ("statuspage", n, StatuspageConnector(s, instance=n))
            for n, s in extra.statuspage.items()
        ),
    ]
    for system, name, connector in named:
        if name == DEFAULT:
            raise ValueError(
                f"instances.{system}.{DEFAULT}: the name 'default' is the top-level "
                f"'{system}' section; pick another name"
            )
        out[(system, name)] = connector
    return out
