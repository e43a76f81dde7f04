#!/usr/bin/env bash
# Set up everything the project needs, idempotently: the Python venv (.venv) with the pinned
# dependencies, and the npm side (solc-js, OpenZeppelin, anvil, forge, js-ipfs). Each step is
# skipped when its inputs have not changed since it last succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp_dir=.venv/.stamps

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

command -v node >/dev/null || { echo "error: Node.js 20+ is required (node not on PATH): install it from your OS packages" >&2; exit 3; }
command -v python3.11 >/dev/null && PY=python3.11 || PY=python3
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: Python 3.11 is required (found $("$PY" --version))" >&2; exit 3; }

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
mkdir -p "$stamp_dir" build

py_hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp_dir/pip" 2>/dev/null)" != "$py_hash" ]; then
  say "installing Python dependencies (torch CPU build pinned; ~2 min the first time)"
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev,flower,ray]"
  echo "$py_hash" > "$stamp_dir/pip"
fi

npm_hash=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] || [ "$(cat "$stamp_dir/npm" 2>/dev/null)" != "$npm_hash" ]; then
  say "installing npm packages (js-ipfs is large: ~3 min the first time)"
  # Install scripts are not needed: anvil and forge ship their binaries in platform packages.
  # `npm ci` is not used: npm 11 leaves other platforms' optional packages (anvil-darwin-*, ...)
  # out of the lock file and then refuses it; `npm install --no-save` follows the lock as it is.
  npm install --no-save --no-audit --no-fund --ignore-scripts --loglevel=error
  echo "$npm_hash" > "$stamp_dir/npm"
fi

# Headless Chromium for the dashboard's browser tests (Debian's package; Playwright drives it).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Chromium (Debian package, for the dashboard's browser tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed; the dashboard's browser tests will be skipped (apt-get install chromium)" >&2
  fi
fi

say "compiling contracts (cached)"
.venv/bin/python -c "from devnet.compiler import compile_contracts; compile_contracts()"
