"""Where the peer suites come from: a git directory of each upstream repository, at a pinned
release commit. Standard library only, so ``make test-peer`` can check for them before it
installs anything:

    python3 -m tests.peer.sources      # exit 2 with one line if a suite's source is missing
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Peer:
    name: str
    repo: str  # owner/name on GitHub
    env: str  # variable naming the git directory
    default_git: str  # where the search tool's fetch puts it
    commit: str  # the release tag's commit; the installed library is that release
    tag: str
    paths: tuple[str, ...]  # extracted from the commit
    tests: tuple[str, ...]  # what pytest runs: the live-API test files


PEERS = {
    "pysnc": Peer(
        name="pysnc",
        repo="ServiceNow/PySNC",
        env="ITSM_SYNC_PEER_PYSNC_GIT",
        default_git="/work/.mirror/ServiceNow+PySNC/repo",
        commit="793e0ad2dc78a6e0c0c90a0bcc59d06f3f18b09b",
        tag="1.2.1",
        paths=("test", "LICENSE"),
        # Every test file but test_snc_element.py, which tests GlideElement offline.
        tests=("test", "--ignore=test/test_snc_element.py"),
    ),
    "jira": Peer(
        name="jira",
        repo="pycontribs/jira",
        env="ITSM_SYNC_PEER_JIRA_GIT",
        default_git="/work/.mirror/pycontribs+jira/repo",
        commit="6dbc5cf79d3fe2998c89db00e2702d8ea8b2dde5",
        tag="3.10.5",
        paths=("tests", "pyproject.toml", "LICENSE"),
        # The JiraTestCase suites; test_exceptions/qsh/resilientsession/unit/shell are offline.
        tests=("tests/tests.py", "tests/test_client.py", "tests/resources"),
    ),
}


class Missing(Exception):
    """A suite's source is not on this machine."""


def git_dir(peer: Peer) -> Path:
    where = Path(os.environ.get(peer.env) or peer.default_git)
    how = (
        f"set {peer.env} to a git directory of github.com/{peer.repo}, or bring "
        f"github:{peer.repo} onto this machine with the search tool's fetch"
    )
    if not where.is_dir():
        raise Missing(f"peer suite {peer.name}: no git directory at {where}: {how}")
    probe = subprocess.run(
        ["git", f"--git-dir={where}", "cat-file", "-e", f"{peer.commit}^{{commit}}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        raise Missing(
            f"peer suite {peer.name}: {where} lacks commit {peer.commit} ({peer.tag}): {how}"
        )
    return where


def main() -> int:
    try:
        for peer in PEERS.values():
            git_dir(peer)
    except Missing as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
