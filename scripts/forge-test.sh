#!/usr/bin/env bash
# Run the Foundry suite (unit, fuzz and invariant tests of contracts/src) offline, with the
# repository's solc-js front as compiler (see foundry.toml). Extra arguments go to `forge test`,
# e.g. `scripts/forge-test.sh --match-path 'contracts/test/*Fuzz*' -vv` or `--fuzz-seed 0x1`.
# Prints forge's per-suite results and summary; exits with forge's exit code.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FORGE="$ROOT/node_modules/@foundry-rs/forge-linux-amd64/bin/forge"

if [[ ! -x "$FORGE" ]]; then
  echo "forge not found at $FORGE: run \`npm ci\` in $ROOT (package @foundry-rs/forge)" >&2
  exit 127
fi
if ! command -v node >/dev/null 2>&1; then
  echo "node is not on PATH: the Solidity compiler front (contracts/bin/solc) runs on Node.js 20" >&2
  exit 127
fi

cd "$ROOT" || exit 1
start=$(date +%s)
"$FORGE" test "$@"
status=$?
echo "forge test exit code ${status}, wall time $(( $(date +%s) - start )) s"
exit "$status"
