"""Run the client libraries' own live-API test suites against the simulators (``make test-peer``).

The suites are not in this repository: each is extracted at run time, at a pinned commit, from
a git directory of the upstream repository on this machine (see tests/peer/README.md). They run
unchanged; ``peer_plugin.py`` points them at the simulators and applies ``peer_skips.py``.

    python -m tests.peer.run [pysnc] [jira] [--keep DIR] [-- PYTEST_ARGS...]

Exit status: 0 when every suite reaches its target pass rate, 1 when one does not, 2 when a
suite's source is missing (one line says which and how to get it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx

from simulators.runner import ClusterConfig, SimulatorCluster
from tests.peer import seeds
from tests.peer.sources import PEERS, Missing, Peer, git_dir

HERE = Path(__file__).resolve().parent
TARGET = 0.95  # of the tests that do not need a real server's admin features
# The pass rate below which `make test-peer` fails: the target, or what a suite reaches today
# where that is still below it (a regression guard; see tests/peer/README.md).
FLOOR = {"pysnc": TARGET, "jira (Cloud tests)": TARGET, "jira": TARGET}


def extract(peer: Peer, git: Path, into: Path) -> None:
    archive = subprocess.run(
        ["git", f"--git-dir={git}", "archive", peer.commit, *peer.paths],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def seed_for(peer: Peer, cluster: SimulatorCluster) -> None:
    """What the suite authors' live instance has, and the fixtures do not (seeds.py)."""
    ca = str(cluster.cert.cert) if cluster.cert else False
    if peer.name == "jira":
        seeded = httpx.post(f"{cluster.urls['jira']}/_sim/seed", json=seeds.jira(), verify=ca)
        seeded.raise_for_status()
        return
    url = cluster.urls["servicenow"]
    with httpx.Client(base_url=url, verify=ca) as c:
        c.post("/_sim/seed", json=seeds.servicenow()).raise_for_status()
        # A real instance ignores an invalid query term unless glide.invalid_query.
        # returns_no_rows is set; the suite expects that default (test_extra_long_query).
        c.post("/_sim/properties", json={"glide.invalid_query.returns_no_rows": False})


def env_for(peer: Peer, cluster: SimulatorCluster, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    ca = str(cluster.cert.cert) if cluster.cert else ""
    env.update(REQUESTS_CA_BUNDLE=ca, SSL_CERT_FILE=ca, PYTHONPATH=str(HERE))
    if peer.name == "pysnc":
        env.update(
            PYSNC_SERVER=cluster.urls["servicenow"], PYSNC_USERNAME="admin", PYSNC_PASSWORD="admin"
        )
    else:
        env.update(
            CI_JIRA_TYPE="CLOUD",
            PEER_JIRA_URL=cluster.urls["jira"],
            CI_JIRA_CLOUD_ADMIN="admin@example.com",
            CI_JIRA_CLOUD_ADMIN_TOKEN="sim-token",
            CI_JIRA_CLOUD_USER="bob@example.com",
            CI_JIRA_CLOUD_USER_TOKEN="bob-token",
        )
    return env


@dataclass
class Result:
    name: str
    passed: int
    failed: int
    skipped: int
    total: int

    @property
    def eligible(self) -> int:
        return self.total - self.skipped

    @property
    def rate(self) -> float:
        return self.passed / self.eligible if self.eligible else 0.0

    def line(self) -> str:
        return (
            f"{self.name}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped "
            f"(by the suite or peer_skips.py) of {self.total}: {self.passed}/{self.eligible} = "
            f"{self.rate:.1%} of the tests that do not need a real server's admin features"
        )


def parse(name: str, junit: Path, report: Path) -> list[Result]:
    """Outcomes from the JUnit file; a collected test with no outcome (the suite aborted before
    it ran) counts as failed. For pycontribs/jira, also the figure over the tests its authors
    run on Jira Cloud (marked ``allow_on_cloud``)."""
    outcomes: dict[str, str] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            key = f"{case.get('classname')}.{case.get('name')}"
            if case.find("skipped") is not None:
                outcomes[key] = "skipped"
            elif case.find("failure") is not None or case.find("error") is not None:
                outcomes[key] = "failed"
            else:
                outcomes.setdefault(key, "passed")
    seen = json.loads(report.read_text()) if report.exists() else {}
    collected = seen.get("collected") or []
    results = [_tally(name, collected, outcomes)]
    if seen.get("cloud"):
        results.insert(0, _tally(f"{name} (Cloud tests)", seen["cloud"], outcomes))
    return results


def _tally(name: str, nodeids: list[str], outcomes: dict[str, str]) -> Result:
    """Count ``nodeids`` (``a/b.py::Class::test``, named ``a.b.Class.test`` in JUnit)."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for nodeid in nodeids:
        module, _, rest = nodeid.partition("::")
        key = module.removesuffix(".py").replace("/", ".") + "." + rest.replace("::", ".")
        counts[outcomes.get(key, "failed")] += 1
    return Result(name, counts["passed"], counts["failed"], counts["skipped"], len(nodeids))


def run(peer: Peer, work: Path, pytest_args: list[str]) -> list[Result]:
    git = git_dir(peer)
    installed = metadata.version(peer.name)
    if installed != peer.tag:
        raise Missing(
            f"peer suite {peer.name}: its tests are pinned to {peer.tag} but {installed} is "
            f"installed: pip install {peer.name}=={peer.tag} (tests/peer/requirements.txt)"
        )
    root = work / peer.name
    root.mkdir(parents=True, exist_ok=True)
    extract(peer, git, root)
    cfg = ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, tls=True)
    junit, report = root / "junit.xml", root / "collected.json"
    with SimulatorCluster(cfg) as cluster:
        seed_for(peer, cluster)
        cmd = [
            sys.executable, "-m", "pytest", *peer.tests, "-p", "peer_plugin",
            "-p", "no:cacheprovider", "-o", "addopts=", "-q", "--timeout=60",
            f"--junitxml={junit}", "-o", "junit_family=xunit2", *pytest_args,
        ]  # fmt: skip
        env = env_for(peer, cluster, dict(os.environ, PEER_SUITE=peer.name))
        env["PEER_REPORT"] = str(report)
        started = time.monotonic()
        subprocess.run(cmd, cwd=root, env=env, check=False)
        print(f"{peer.name}: ran in {time.monotonic() - started:.0f} s", flush=True)
    return parse(peer.name, junit, report)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="*", choices=[[], *PEERS], default=[])
    ap.add_argument("--keep", type=Path, help="extract into this folder and keep it")
    args = ap.parse_args(argv)
    names = args.suites or list(PEERS)
    try:
        for name in names:
            git_dir(PEERS[name])
    except Missing as exc:
        print(exc, file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        work = args.keep or Path(tmp)
        for name in names:
            try:
                results.extend(run(PEERS[name], work, extra))
            except Missing as exc:
                print(exc, file=sys.stderr)
                return 2
    for r in results:
        print(r.line())
    short = [r.name for r in results if r.rate < TARGET]
    if short:
        print(f"below the {TARGET:.0%} target: {', '.join(short)}")
    low = [
        f"{r.name} ({r.rate:.1%} < {FLOOR[r.name]:.0%})" for r in results if r.rate < FLOOR[r.name]
    ]
    if low:
        print(f"peer suites below their floor: {', '.join(low)}", file=sys.stderr)
        return 1
    print(f"{sum(r.passed for r in results)} passed, {sum(r.failed for r in results)} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
