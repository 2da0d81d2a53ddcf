#!/usr/bin/env bash
# Installs NothingAI into ./.venv (Python packages) and ./.venv/chp (the proxy).
# Usage: scripts/install.sh [extras]   e.g. scripts/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check "$spec" 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import nothing.scheduler, nothing.magics" # fail loudly if the install did not work
if [ ! -x .venv/chp/node_modules/.bin/configurable-http-proxy ]; then
  npm install --silent --no-audit --no-fund --prefix .venv/chp configurable-http-proxy@5 >/dev/null
fi
