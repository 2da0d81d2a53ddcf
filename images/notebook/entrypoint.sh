#!/bin/sh
# Entrypoint of the notebook images.
#
# 1. Runs the user's start-up scripts in $NOTHING_EASYMAKER_DIR/cont-init.d (seed:
#    "사용자 스크립트"). The runner always exits 0; if it cannot even start, the
#    server starts anyway, because a notebook the user cannot open is worse than a
#    script that did not run (its log says why).
# 2. Replaces itself with the server, so the server receives the pod's signals.
#
# Arguments: none, or options only (docker run IMAGE --debug), start
# jupyterhub-singleuser with those options; a command (KubeSpawner passes
# "jupyterhub-singleuser --opt ...") is run as given.
easymaker_dir="${NOTHING_EASYMAKER_DIR:-/root/easymaker}"
python3 -m nothing.spawner.continit --dir "$easymaker_dir" --timeout "${NOTHING_CONT_INIT_TIMEOUT:-300}" \
    || echo "nothing: the cont-init runner failed (exit $?); starting the server anyway" >&2
case "${1:-}" in
    "" | -*) set -- jupyterhub-singleuser "$@" ;;
esac
exec "$@"
