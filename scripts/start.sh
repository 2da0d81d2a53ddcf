#!/usr/bin/env bash
# Installs and starts the platform: JupyterHub on http://127.0.0.1:8000 with the
# GPU scheduler at /services/nothing/. Demo login: any name, password "nothing"
# (user "admin" is an admin). State lives in ./var.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/jupyterhub -f jupyterhub_config.py "$@"
