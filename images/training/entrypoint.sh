#!/bin/sh
# Entrypoint of the training images: run the start-up scripts in
# $NOTHING_EASYMAKER_DIR/cont-init.d when that folder is mounted, then replace
# itself with the training command given as arguments, so the command receives
# the pod's signals and its exit status is the container's.
if [ "$#" -eq 0 ]; then
    echo "usage: IMAGE COMMAND [ARGUMENT...]: the training command to run" >&2
    exit 2
fi
easymaker_dir="${NOTHING_EASYMAKER_DIR:-/root/easymaker}"
python3 -m nothing.spawner.continit --dir "$easymaker_dir" --timeout "${NOTHING_CONT_INIT_TIMEOUT:-300}" \
    || echo "nothing: the cont-init runner failed (exit $?); starting the training anyway" >&2
exec "$@"
