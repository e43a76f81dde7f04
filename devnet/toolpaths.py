"""Where the repository's non-Python tools live: node_modules, contract sources, the solc front.

Only local tooling (`devnet`), experiments, tests and benchmarks need these; the protocol library
(`market`) reads the chain through the ABI it ships and never looks here.
"""

from __future__ import annotations

from market.paths import ROOT

NODE_MODULES = ROOT / "node_modules"
CONTRACTS = ROOT / "contracts"
CONTRACT_SOURCES = CONTRACTS / "src"
SOLC_FRONT = CONTRACTS / "bin" / "solc"
BUILD_DIR = ROOT / "build" / "contracts"
ANVIL_BIN = NODE_MODULES / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
FORGE_BIN = NODE_MODULES / "@foundry-rs" / "forge-linux-amd64" / "bin" / "forge"
JSIPFS_BIN = NODE_MODULES / ".bin" / "jsipfs"
