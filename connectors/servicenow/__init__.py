"""ServiceNow: incidents and change requests through the Table API (pysnow)."""

from connectors.servicenow.connector import ServiceNowConnector, format_time, parse_time

__all__ = ["ServiceNowConnector", "format_time", "parse_time"]
