#!/usr/bin/env bash
# Run every benchmark in benchmarks/ with --smoke: a few seconds each, on the same code paths as the
# full runs (the service's own round computation, the real local stack), so a benchmark that no
# longer runs breaks CI. Prints each script's figures; exits non-zero if any script fails.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for script in benchmarks/*.py; do
  start=$(date +%s)
  if timeout 600 .venv/bin/python "$script" --smoke > "build/bench-smoke-$(basename "$script" .py).log" 2>&1; then
    printf '  ok    %-28s %4d s\n' "$script" "$(( $(date +%s) - start ))"
  else
    printf '  FAIL  %-28s (log: build/bench-smoke-%s.log)\n' "$script" "$(basename "$script" .py)"
    tail -n 15 "build/bench-smoke-$(basename "$script" .py).log" | sed 's/^/        /'
    status=1
  fi
done
exit $status
