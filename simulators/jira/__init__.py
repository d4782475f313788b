"""Jira Cloud platform REST simulator (v2 and v3)."""

from simulators.jira.app import JiraSimulator

__all__ = ["JiraSimulator"]
