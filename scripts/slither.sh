#!/usr/bin/env bash
# Static analysis of contracts/src/LearningMarket.sol with Slither, offline, through the
# repository's solc-js front (contracts/bin/solc only speaks --version and --standard-json, so
# Slither is handed a standard-json input with the same settings as market/compiler.py and
# foundry.toml). OpenZeppelin (node_modules) and test code are filtered out.
# Fails (non-zero exit) on any finding of medium or high impact; low and informational findings
# are printed and documented in the contract's header ("Slither notes").
# Extra arguments go to slither, e.g. `scripts/slither.sh --json build/slither/report.json`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLITHER="$ROOT/.venv/bin/slither"
SOLC="$ROOT/contracts/bin/solc"
OUT="$ROOT/build/slither"

if [[ ! -x "$SLITHER" ]]; then
  echo "slither not found at $SLITHER: install slither-analyzer into $ROOT/.venv" >&2
  exit 127
fi
if ! command -v node >/dev/null 2>&1; then
  echo "node is not on PATH: the Solidity compiler front ($SOLC) runs on Node.js 20" >&2
  exit 127
fi

cd "$ROOT"
mkdir -p "$OUT"
cat >"$OUT/input.json" <<'JSON'
{
  "language": "Solidity",
  "sources": {
    "contracts/src/LearningMarket.sol": {"urls": ["contracts/src/LearningMarket.sol"]},
    "contracts/src/ILearningMarket.sol": {"urls": ["contracts/src/ILearningMarket.sol"]}
  },
  "settings": {
    "optimizer": {"enabled": true, "runs": 200},
    "evmVersion": "cancun",
    "remappings": ["@openzeppelin/=node_modules/@openzeppelin/"]
  }
}
JSON

# crytic-compile reads foundry.toml (through `forge config`) for the remappings and solc path
export PATH="$ROOT/node_modules/@foundry-rs/forge-linux-amd64/bin:$PATH"

exec "$SLITHER" "$OUT/input.json" \
  --compile-force-framework solc-json \
  --solc "$SOLC" \
  --filter-paths 'node_modules|contracts/test' \
  --fail-medium \
  "$@"
