"""Where the shared API contracts live: ``$ITSM_SYNC_API_CONTRACTS``, else ``shared/api-contracts``
beside the checkout (as on the developers' machines and in CI), else beside the repository this
checkout was cloned from when that is a local folder (``git clone . /tmp/fresh``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_HERE = Path(__file__).resolve().parents[1]


def _origin() -> Path | None:
    try:
        url = subprocess.run(
            ["git", "-C", str(_HERE), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        return None
    path = Path(url.removeprefix("file://"))
    return path.resolve() if url and path.is_dir() else None


def _find() -> Path:
    if os.environ.get("ITSM_SYNC_API_CONTRACTS"):
        return Path(os.environ["ITSM_SYNC_API_CONTRACTS"])
    places = [_HERE.parent / "shared" / "api-contracts"]
    origin = _origin()
    if origin is not None:
        places.append(origin.parent / "shared" / "api-contracts")
    for place in places:
        if (place / "FACTS.md").is_file():
            return place
    raise RuntimeError(
        f"API contracts not found at {' or '.join(map(str, places))}: set "
        "ITSM_SYNC_API_CONTRACTS to the shared/api-contracts folder"
    )


CONTRACTS = _find()
SPECS = CONTRACTS / "specs"
