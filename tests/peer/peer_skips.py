"""Tests of the peer suites that do not run against the simulators, each with its reason.

Keys are pytest node ids (a file or class id covers everything in it). Categories:

- ``admin``: needs a real server's administration features (creating or deleting projects,
  users, groups, fields, schemes, dashboards, …) or product add-ons (Jira Software boards and
  sprints, Jira Service Management), which the simulators do not have. These are left out of the
  pass-rate figure.
- ``instance``: needs data or configuration of the suite authors' own instance (a plugin, a
  scoped app, a custom table) that no simulator fixture reproduces. Also left out.
- ``server``: pycontribs/jira tests for Jira Server/Data Center (not marked ``allow_on_cloud``,
  so its own Cloud CI does not run them either) that use what Jira Cloud does not have: user
  ``name``/``username`` parameters, cookie sessions, personal access tokens, a context path.
- ``network``: talks to a public host (jira.atlassian.com, httpstat.us) rather than the server
  under test; this machine reaches no such host.
- ``tooling``: tests the library's command-line shell, not an API.
- ``suite``: the test is broken against the very library release it is pinned with.
"""

from __future__ import annotations

_SERVER_USERNAME = (
    "uses the Server-only user 'name'/'username' (Cloud identifies users by accountId)"
)
_AGILE = "Jira Software (agile) API: boards, sprints, epics, ranking are not simulated"

SKIPS: dict[str, dict[str, tuple[str, str]]] = {
    "pysnc": {
        **{
            f"{d}test_snc_iteration.py::{cls}Iteration::{t}": (
                "instance",
                "iterates sys_metadata, the platform's application-file table (more than 500 "
                "rows on any instance); the simulator has no application files",
            )
            for d, cls in (("test/", "Test"), ("test/asyncio/", "TestAsync"))
            for t in ("test_default_behavior", "test_rewind_behavior")
        },
        **{
            f"{d}test_snc_api_write.py::{cls}Write::test_multi_update_with_failures": (
                "admin",
                "inserts a business rule (sys_script) that aborts updates; the simulator runs "
                "no server-side scripts",
            )
            for d, cls in (("test/", "Test"), ("test/asyncio/", "TestAsync"))
        },
    },
    "jira": {
        "tests/tests.py::OtherTests::test_session_invalid_login": (
            "network",
            "connects to https://jira.atlassian.com",
        ),
        "tests/tests.py::SessionTests::test_session_with_no_logged_in_user_raises": (
            "network",
            "connects to https://jira.atlassian.com",
        ),
        "tests/test_client.py::test_cookie_auth_retry": (
            "network",
            "connects to https://httpstat.us",
        ),
        "tests/tests.py::JiraShellTests": ("tooling", "runs the jirashell command-line program"),
        "tests/tests.py::ApplicationPropertiesTests": (
            "admin",
            "reads and sets global application properties (Jira administration)",
        ),
        "tests/tests.py::UserAdministrationTests": (
            "admin",
            "creates and deletes users and groups (site administration)",
        ),
        "tests/tests.py::MyPermissionsServerTests": (
            "server",
            "calls /mypermissions without 'permissions', which only Server allows",
        ),
        "tests/test_client.py::test_templates": (
            "admin",
            "lists project templates (/rest/project-templates, administration)",
        ),
        "tests/test_client.py::test_token_auth": (
            "server",
            "creates a personal access token (/rest/pat), a Data Center feature",
        ),
        "tests/test_client.py::test_cookie_auth": (
            "server",
            "cookie-based session login, which Jira Cloud does not offer",
        ),
        "tests/resources/test_custom_field_option.py": (
            "admin",
            "reads custom field option configuration (field administration)",
        ),
        "tests/resources/test_issue_type_scheme_associations.py": (
            "admin",
            "issue type schemes (project configuration administration)",
        ),
        **{
            f"tests/resources/test_project.py::ProjectTests::test_project_{k}_scheme": (
                "admin",
                f"reads the project's {k} scheme (scheme administration)",
            )
            for k in ("notification", "permission", "priority", "workflow")
        },
        "tests/resources/test_sprint.py": ("admin", _AGILE),
        "tests/resources/test_board.py": ("admin", _AGILE),
        "tests/resources/test_epic.py": ("admin", _AGILE),
        "tests/resources/test_issue.py::IssueTests::test_rank": ("admin", _AGILE),
        **{
            f"tests/resources/test_issue.py::IssueTests::{t}": ("server", _SERVER_USERNAME)
            for t in (
                "test_assign_issue",
                "test_assign_issue_with_issue_obj",
                "test_assign_issue_automatic",
                "test_unassign_issue",
            )
        },
        **{
            f"tests/resources/test_issue.py::IssueTests::{t}": (
                "server",
                "assumes a Server instance under the context path /jira behind a proxy",
            )
            for t in ("test_delete_with_proxy", "test_update_label_with_proxy")
        },
        **{
            t: ("server", _SERVER_USERNAME)
            for t in (
                "tests/resources/test_filter.py::FilterTests::test_filter",
                "tests/resources/test_worklog.py::WorklogTests::test_worklog",
                "tests/resources/test_worklog.py::WorklogTests::test_worklog_with_issue_obj",
                "tests/resources/test_component.py::ComponentTests::test_3_update",
            )
        },
        "tests/resources/test_project.py::ProjectTests::test_project_roles": (
            "server",
            "expects the Server group jira-administrators as a role actor",
        ),
        **{
            t: ("server", "the library itself refuses this call on Jira Cloud (no request is made)")
            for t in (
                "tests/tests.py::SearchTests::test_search_issues_startat",
                "tests/test_client.py::test_createmeta_issuetypes_pagination",
                "tests/test_client.py::test_createmeta_fieldtypes_pagination",
                "tests/resources/test_field.py::FieldsTest::test_field",
                "tests/resources/test_field.py::FieldsTest::test_field_pagination",
                "tests/resources/test_issue_type.py::IssueTypeTest::test_issue_type",
                "tests/resources/test_issue_type.py::IssueTypeTest::test_issue_type_pagination",
            )
        },
        "tests/resources/test_pinned_comment.py::PinnedCommentTests::test_pincomments": (
            "suite",
            "calls JIRA.pin_comment() without its required 'pin' argument (a TypeError "
            "in the test itself with jira 3.10.5, before any request)",
        ),
        "tests/resources/test_watchers.py::WatchersTests::test_add_remove_watcher": (
            "server",
            _SERVER_USERNAME,
        ),
        **{
            f"tests/resources/test_user.py::UserTests::{t}": ("server", _SERVER_USERNAME)
            for t in (
                "test_search_assignable_users_for_projects",
                "test_search_assignable_users_for_projects_maxresults",
                "test_search_assignable_users_for_projects_startat",
                "test_search_assignable_users_for_issues_by_issue",
                "test_search_assignable_users_for_issues_by_project",
                "test_user_avatars",
                "test_set_user_avatar",
                "test_delete_user_avatar",
            )
        },
    },
}
