"""Default state locations: the local stack's state directory and the deployment file."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root: the parent of the `market` package. `MARKET_HOME` overrides it for
#: installs outside a checkout.
ROOT = Path(os.environ.get("MARKET_HOME", Path(__file__).resolve().parent.parent))
#: Default state directory for the local stack (anvil state, IPFS repo, PIDs, logs).
STATE_DIR = ROOT / ".market"
DEPLOYMENT_FILE = STATE_DIR / "deployment.json"
