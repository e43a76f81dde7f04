"""Where the repository's non-Python parts live (node_modules, contracts, the solc front)."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root: the parent of the `market` package. `MARKET_HOME` overrides it for
#: installs outside a checkout.
ROOT = Path(os.environ.get("MARKET_HOME", Path(__file__).resolve().parent.parent))
NODE_MODULES = ROOT / "node_modules"
CONTRACTS = ROOT / "contracts"
CONTRACT_SOURCES = CONTRACTS / "src"
SOLC_FRONT = CONTRACTS / "bin" / "solc"
BUILD_DIR = ROOT / "build" / "contracts"
ANVIL_BIN = NODE_MODULES / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
FORGE_BIN = NODE_MODULES / "@foundry-rs" / "forge-linux-amd64" / "bin" / "forge"
JSIPFS_BIN = NODE_MODULES / ".bin" / "jsipfs"
#: Default state directory for the local stack (anvil state, IPFS repo, PIDs, logs).
STATE_DIR = ROOT / ".market"
DEPLOYMENT_FILE = STATE_DIR / "deployment.json"
