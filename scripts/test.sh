#!/usr/bin/env bash
# Installs everything the tests need (Python packages, the proxy, Debian's
# chromium, PostgreSQL and Slurm) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
[ -x /usr/sbin/slurmctld ] || need_apt+=(slurm-wlm slurmctld slurmd slurm-client munge)
command -v nginx >/dev/null || need_apt+=(nginx)  # the inference data plane (scheduler/data_plane.py)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
scripts/install.sh test
exec .venv/bin/python -m pytest "$@"
