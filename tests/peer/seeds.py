"""Records the peer suites expect a live instance to have, beyond the simulators' fixtures.

The suites were written against their authors' instances: a ServiceNow developer instance with
its demo data (the admin user in the Finance department, a few dozen users, admins, groups
with managers and roles, problems, system log rows) and a Jira Cloud site. Only what the tests
read is here, under the demo data's own sys_ids where a test names one.
"""

from __future__ import annotations

from typing import Any

ADMIN = "6816f79cc0a8016401c5a33be04be441"
FINANCE = "a581ab703710200044e0bfc8bcbe5de8"
NATASHA = "46c5bf6ca9fe1981010713e3ac7d3384"
PROBLEM_ADMIN = "26fbff173b331300ad3cc9bb34efc4bd"
ADMIN_ROLE = "2831a114c611228501d4ea6c309d626d"


def _id(kind: str, n: int) -> str:
    return f"{kind}{n:04d}".encode().hex()[:32].ljust(32, "0")


def servicenow() -> dict[str, Any]:
    users: list[dict[str, Any]] = [
        {
            "sys_id": ADMIN,
            "user_name": "admin",
            "name": "System Administrator",
            "first_name": "System",
            "last_name": "Administrator",
            "email": "admin@example.com",
            "department": FINANCE,
            "user_password": "set",
        },
        {
            "sys_id": NATASHA,
            "user_name": "natasha.ingram",
            "name": "Natasha Ingram",
            "email": "natasha.ingram@example.com",
            "department": FINANCE,
        },
        {
            "sys_id": PROBLEM_ADMIN,
            "user_name": "problem.admin",
            "name": "Problem Administrator",
            "email": "problem.admin@example.com",
        },
    ]
    users += [
        {
            "sys_id": _id("usr", i),
            "user_name": f"demo.user{i:02d}",
            "name": f"Demo User {i:02d}",
            "email": f"demo.user{i:02d}@example.com",
        }
        for i in range(1, 31)
    ]
    roles = [
        {"sys_id": ADMIN_ROLE, "name": "admin"},
        {"sys_id": _id("rol", 1), "name": "itil"},
        {"sys_id": _id("rol", 2), "name": "user_admin"},
        {"sys_id": _id("rol", 3), "name": "catalog_admin"},
        {"sys_id": _id("rol", 4), "name": "knowledge_admin"},
    ]
    # Fifteen admins (the demo data has "a lot of admins, but not THAT many").
    admins = [ADMIN, *(_id("usr", i) for i in range(1, 15))]
    has_role = [{"user": u, "role": ADMIN_ROLE, "state": "active"} for u in admins]
    has_role += [{"user": _id("usr", i), "role": _id("rol", 1)} for i in range(15, 31)]
    groups = [
        {"sys_id": _id("grp", i), "name": name, "manager": _id("usr", i), "active": "true"}
        for i, name in enumerate(
            [
                "Database",
                "Hardware",
                "Network CAB Managers",
                "Service Desk Admins",
                "ITSM Ops",
                "Software",
            ],
            start=1,
        )
    ]
    group_roles = [
        {"group": _id("grp", 3), "role": _id("rol", 2)},
        {"group": _id("grp", 4), "role": ADMIN_ROLE},
        {"group": _id("grp", 5), "role": _id("rol", 3)},
        {"group": _id("grp", 6), "role": _id("rol", 4)},
        {"group": _id("grp", 1), "role": _id("rol", 1)},
    ]
    problems = [
        {"short_description": f"Demo problem {i:02d}", "impact": "2", "urgency": "2"}
        for i in range(1, 16)
    ]
    syslog = [{"level": "0", "source": "peer-demo", "message": f"log line {i}"} for i in range(700)]
    tables = [
        {"name": "alm_asset", "label": "Asset"},
        {"name": "bsm_chart", "label": "BSM Chart"},
    ]
    return {
        "sys_user_role": roles,
        "cmn_department": [{"sys_id": FINANCE, "name": "Finance", "dept_head": NATASHA}],
        "sys_user": users,
        "sys_user_group": groups,
        "sys_user_has_role": has_role,
        "sys_group_has_role": group_roles,
        "problem": problems,
        "syslog": syslog,
        "sys_db_object": tables,
    }


def jira() -> dict[str, Any]:
    """A Jira Cloud site has an ``administrators`` group (the suite reads it)."""
    admin = {
        "accountId": "5b10a2844c20165700ede200",
        "emailAddress": "admin@example.com",
        "displayName": "Jira Admin",
        "timeZone": "UTC",
        "groups": [
            "jira-software-users",
            "site-admins",
            "incident-responders",
            "sre",
            "administrators",
        ],
    }
    # A Cloud software site's issue types and statuses include Bug and Done, which tests name.
    return {
        "groups": ["administrators"],
        "users": [admin],
        "issuetypes": [{"id": "10004", "name": "Bug", "description": "A problem."}],
        "statuses": [{"id": "10001", "name": "Done", "category": "done"}],
    }
