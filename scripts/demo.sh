#!/usr/bin/env bash
# Set up, then run the marketplace demo: a fresh local stack (anvil + IPFS on loopback), a deployed
# LearningMarket, a project with an escrowed budget, 10 trainer processes (2 malicious), the
# aggregator service, claims, the audit and a report in reports/demo/. Stops everything it started.
# Extra flags go to `market demo` (see `.venv/bin/market demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/market demo "$@"
