"""Jira Cloud permissions as "Get all permissions" lists them: key -> (id, type, name, text)."""

from __future__ import annotations

PERMISSIONS: dict[str, tuple[str, str, str, str]] = {
    "ADMINISTER": (
        "0",
        "GLOBAL",
        "Administer Jira",
        "Create and administer projects, issue types, fields, workflows and schemes.",
    ),
    "SYSTEM_ADMIN": (
        "44",
        "GLOBAL",
        "Jira System Administrators",
        "Ability to perform all administration functions.",
    ),
    "USER_PICKER": (
        "27",
        "GLOBAL",
        "Browse users and groups",
        "View and select users or groups from the user picker.",
    ),
    "CREATE_SHARED_OBJECTS": (
        "22",
        "GLOBAL",
        "Share dashboards and filters",
        "Share dashboards and filters with other users.",
    ),
    "BULK_CHANGE": (
        "33",
        "GLOBAL",
        "Make bulk changes",
        "Modify collections of issues at once.",
    ),
    "ADMINISTER_PROJECTS": (
        "23",
        "PROJECT",
        "Administer Projects",
        "Ability to administer a project in Jira.",
    ),
    "BROWSE_PROJECTS": (
        "10",
        "PROJECT",
        "Browse Projects",
        "Ability to browse projects and the issues within them.",
    ),
    "CREATE_ISSUES": (
        "11",
        "PROJECT",
        "Create Issues",
        "Ability to create issues.",
    ),
    "EDIT_ISSUES": (
        "12",
        "PROJECT",
        "Edit Issues",
        "Ability to edit issues.",
    ),
    "ASSIGN_ISSUES": (
        "13",
        "PROJECT",
        "Assign Issues",
        "Ability to assign issues to other people.",
    ),
    "ASSIGNABLE_USER": (
        "17",
        "PROJECT",
        "Assignable User",
        "Users with this permission may be assigned to issues.",
    ),
    "RESOLVE_ISSUES": (
        "14",
        "PROJECT",
        "Resolve Issues",
        "Ability to resolve and reopen issues.",
    ),
    "CLOSE_ISSUES": (
        "18",
        "PROJECT",
        "Close Issues",
        "Ability to close issues.",
    ),
    "TRANSITION_ISSUES": (
        "46",
        "PROJECT",
        "Transition Issues",
        "Ability to transition issues.",
    ),
    "DELETE_ISSUES": (
        "16",
        "PROJECT",
        "Delete Issues",
        "Ability to delete issues.",
    ),
    "LINK_ISSUES": (
        "21",
        "PROJECT",
        "Link Issues",
        "Ability to link issues together.",
    ),
    "ADD_COMMENTS": (
        "15",
        "PROJECT",
        "Add Comments",
        "Ability to comment on issues.",
    ),
    "EDIT_ALL_COMMENTS": (
        "34",
        "PROJECT",
        "Edit All Comments",
        "Ability to edit all comments made on issues.",
    ),
    "DELETE_ALL_COMMENTS": (
        "36",
        "PROJECT",
        "Delete All Comments",
        "Ability to delete all comments made on issues.",
    ),
    "CREATE_ATTACHMENTS": (
        "19",
        "PROJECT",
        "Create Attachments",
        "Users with this permission may create attachments.",
    ),
    "DELETE_ALL_ATTACHMENTS": (
        "38",
        "PROJECT",
        "Delete All Attachments",
        "Users with this permission may delete all attachments.",
    ),
    "MANAGE_WATCHERS": (
        "32",
        "PROJECT",
        "Manage Watchers",
        "Ability to manage the watchers of an issue.",
    ),
    "VIEW_VOTERS_AND_WATCHERS": (
        "31",
        "PROJECT",
        "View Voters and Watchers",
        "Ability to view the voters and watchers of an issue.",
    ),
}
# Global permissions every licensed user has; the other global ones need site-admins.
USER_GLOBAL = {"USER_PICKER", "CREATE_SHARED_OBJECTS", "BULK_CHANGE"}
