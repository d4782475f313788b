"""Faithful simulators of the ServiceNow, Jira and Statuspage APIs (see docs/simulators.md)."""
