"""Statuspage: a page's public incidents and components (httpx, 1 request/s)."""

from connectors.statuspage.connector import StatuspageConnector, parse_time

__all__ = ["StatuspageConnector", "parse_time"]
