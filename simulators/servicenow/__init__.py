"""ServiceNow Table API simulator."""

from simulators.servicenow.app import ServiceNowSimulator

__all__ = ["ServiceNowSimulator"]
