"""Where the shared API contracts live: ``$ITSM_SYNC_API_CONTRACTS`` or ``../shared/api-contracts``
beside the checkout (as on the developers' machines and in CI)."""

from __future__ import annotations

import os
from pathlib import Path

_default = Path(__file__).resolve().parents[2] / "shared" / "api-contracts"
CONTRACTS = Path(os.environ.get("ITSM_SYNC_API_CONTRACTS", str(_default)))
if not (CONTRACTS / "FACTS.md").is_file():
    raise RuntimeError(
        f"API contracts not found at {CONTRACTS}: set ITSM_SYNC_API_CONTRACTS to the "
        "shared/api-contracts folder"
    )
SPECS = CONTRACTS / "specs"
