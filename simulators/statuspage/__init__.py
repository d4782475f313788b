"""Atlassian Statuspage manage API v1 simulator."""

from simulators.statuspage.app import StatuspageSimulator

__all__ = ["StatuspageSimulator"]
