"""Connectors to ServiceNow, Jira and Statuspage (see DESIGN.md §1-2)."""
