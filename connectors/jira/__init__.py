"""Jira Cloud: issues through REST v2 (the ``jira`` library), JQL, transitions, webhooks."""

from connectors.jira.connector import JiraConnector, jql_quote, parse_time

__all__ = ["JiraConnector", "jql_quote", "parse_time"]
