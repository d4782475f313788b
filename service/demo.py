"""The scripted demo. Until the sync engine lands (issue 5) it shows the seeded simulators:
a P1 opened in ServiceNow, the Jira project engineers work in and the public components."""

from __future__ import annotations

import httpx
from rich.console import Console

from simulators.runner import SimulatorCluster


def run_demo(cluster: SimulatorCluster, console: Console) -> dict[str, str]:
    """Play the script against ``cluster``; returns the URLs of what it created."""
    c = cluster.config.credentials
    sn, jira, sp = cluster.urls["servicenow"], cluster.urls["jira"], cluster.urls["statuspage"]
    created: dict[str, str] = {}
    with httpx.Client(timeout=10) as client:
        console.rule("[bold]1. The service desk opens a P1 in ServiceNow")
        resp = client.post(
            f"{sn}/api/now/table/incident",
            auth=(c.servicenow_username, c.servicenow_password),
            headers={"Accept": "application/json"},
            json={
                "short_description": "Checkout fails for all customers",
                "description": "Payments API returns 502 on every order since 10:02 UTC.",
                "impact": "1",
                "urgency": "1",
                "comments": "We are aware and investigating.",
                "work_notes": "Paged the SRE on-call.",
            },
        )
        resp.raise_for_status()
        incident = resp.json()["result"]
        created["servicenow"] = f"{sn}/api/now/table/incident/{incident['sys_id']}"
        console.print(
            f"{incident['number']} priority {incident['priority']} state {incident['state']}: "
            f"{created['servicenow']}"
        )

        console.rule("[bold]2. Engineers work in Jira")
        resp = client.get(f"{jira}/rest/api/2/project", auth=(c.jira_email, c.jira_api_token))
        resp.raise_for_status()
        for project in resp.json():
            console.print(
                f"project {project['key']} ({project['name']}): {jira}/browse/{project['key']}"
            )

        console.rule("[bold]3. Customers read the status page")
        page = c.statuspage_page_id
        resp = client.get(
            f"{sp}/v1/pages/{page}/components",
            headers={"Authorization": f"OAuth {c.statuspage_api_key}"},
        )
        resp.raise_for_status()
        for component in resp.json():
            console.print(f"component {component['name']}: {component['status']}")
        created["statuspage"] = f"{sp}/v1/pages/{page}/incidents"
    console.print(
        "The sync engine (issue 5) will turn this P1 into a Jira issue and a public incident."
    )
    return created
