#!/usr/bin/env bash
# Set up, then run every test: Foundry (unit, fuzz, invariant), Slither, ruff + mypy, and pytest
# (unit tests and integration tests that start a real anvil node and a real IPFS daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
status=0
printf '\033[1m==> forge test\033[0m\n'
./scripts/forge-test.sh || status=1
printf '\033[1m==> slither\033[0m\n'
./scripts/slither.sh || status=1
printf '\033[1m==> ruff + mypy + import contracts\033[0m\n'
.venv/bin/ruff check market aggregator trainer devnet lab dashboard flowerbridge tests benchmarks || status=1
.venv/bin/mypy market aggregator trainer devnet lab dashboard flowerbridge || status=1
.venv/bin/lint-imports || status=1
printf '\033[1m==> benchmarks --smoke\033[0m\n'
./scripts/bench-smoke.sh || status=1
printf '\033[1m==> pytest\033[0m\n'
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@" || status=1
exit $status
