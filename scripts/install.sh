#!/usr/bin/env bash
# Installs NothingAI into ./.venv (Python packages) and ./.venv/chp (the proxy).
# Usage: scripts/install.sh [extras]   e.g. scripts/install.sh test
#        scripts/install.sh dev        an editable install with the test extra (pip install -e ".[test]"):
#                                      imports resolve to this checkout's files (CONTRIBUTING.md)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
editable=()
if [ "$extras" = dev ]; then
  editable=(--editable)
  extras=test
fi
python="${PYTHON:-python3}"
# Notebooks and runs execute as each user's own Unix account, so the interpreter must be one every
# account can run: a Python under a private folder (pyenv in /root) is not; take the system's then.
others_can_run() {
  real=$(readlink -f "$(command -v "$1")") || return 1
  dir=$(dirname "$real")
  while [ "$dir" != "/" ]; do
    [ $(( $(stat -c '%a' "$dir") % 2 )) -eq 1 ] || return 1  # o+x on every folder above it
    dir=$(dirname "$dir")
  done
}
if [ -z "${PYTHON:-}" ] && ! others_can_run "$python" && [ -x /usr/bin/python3 ] &&
   /usr/bin/python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "install: $(command -v "$python") is not reachable by other users; using /usr/bin/python3" >&2
  python=/usr/bin/python3
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${editable[@]}" "$spec" 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import nothing.scheduler, nothing.magics" # fail loudly if the install did not work
if [ ! -x .venv/chp/node_modules/.bin/configurable-http-proxy ]; then
  npm install --silent --no-audit --no-fund --prefix .venv/chp configurable-http-proxy@5 >/dev/null
fi
# The serving runtime (.venv/serving): KServe, numpy and scikit-learn apart from the platform's packages, as a
# KServe image holds them; model servers and batch inference run under it (NothingScheduler.runtime_python), as
# their owner's account, so its interpreter too must be one every account can run.
if ! .venv/serving/bin/python -c "import kserve" 2>/dev/null; then
  serving_python=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
  others_can_run "$serving_python" || serving_python="$python"
  "$serving_python" -m venv .venv/serving
  .venv/serving/bin/python -m pip install --quiet --disable-pip-version-check \
    -r scheduler/serving_runtime/requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/serving/bin/python -c "import kserve, numpy, sklearn"  # fail loudly if the install did not work
fi
