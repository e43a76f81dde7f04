#!/usr/bin/env bash
# Set up, start the local stack (anvil + IPFS on loopback), deploy, run the marketplace demo, and
# stop what was started. Idempotent; state lives in .market/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
M=.venv/bin/market
state=.market/demo
cleanup() { "$M" stack down --state "$state" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$M" stack up --state "$state"
"$M" deploy --dev-account 0 --deployment "$state/deployment.json"
.venv/bin/python scripts/lifecycle.py --deployment "$state/deployment.json"
