#!/bin/sh
# Binds a run's inputs read-only into its own mount namespace, then becomes the run's shim.
#
# usage: unshare --mount --propagation private -- rbind.sh N SOURCE1 TARGET1 ... SOURCEN TARGETN -- COMMAND...
#
# Started by the local executor as root, before anything of the run's user runs. The targets are
# under <data>/mounts/<id>, root's all the way up, so no link of the user's can redirect a mount.
# The mounts live and die with the run's namespace: nobody else sees them.
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
n=$1
shift
while [ "$n" -gt 0 ]; do
    mount --bind -- "$1" "$2" && mount -o remount,bind,ro -- "$2" ||
        { echo "nothing: could not bind $1 read-only at $2"; exit 125; }
    shift 2
    n=$((n - 1))
done
[ "$1" = "--" ] && shift
exec "$@"
