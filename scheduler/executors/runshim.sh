#!/bin/sh
# The tiny root-owned parent of every local run: puts the run into its cgroup,
# installs requirements.txt and runs the entry point as the run's user, and
# records how it ended in EXIT_FILE, so the scheduler can read the outcome even
# after a restart, when it is no longer this process's parent.
#
# usage: runshim.sh SOURCE_DIR EXIT_FILE REQUIREMENTS|"" PYTHON PACKAGES_DIR UID:GID|"" CGROUP_PROCS|"" -- ENTRY ARGV...
#
# CGROUP_PROCS is a space-separated list of cgroup.procs files (one per
# controller). This shell joins them first, so every process the run ever makes
# is in the cgroup; it stays out of reach of the run (root, and exempt from the
# OOM killer) and keeps the run's exit status. POSIX sh because it starts in a
# millisecond. A SIGTERM to the run (its cgroup, or its process group where
# there is no cgroup) reaches the entry point; the trap only keeps this shell
# alive until the entry point has exited, so the outcome is always recorded.
source_dir=$1 exit_file=$2 requirements=$3 python=$4 packages=$5 owner=$6 cgroup_procs=$7
shift 8
trap ':' TERM INT
umask 077

for procs in $cgroup_procs; do
    echo 0 > "$procs" || { echo "nothing: could not join the run's cgroup ($procs)"; exit 125; }
done
[ -z "$cgroup_procs" ] || echo -1000 > /proc/self/oom_score_adj 2>/dev/null

# As the run's user, in the source folder, with no way to regain privileges.
as_user() {
    (
        echo 0 > /proc/self/oom_score_adj 2>/dev/null
        cd "$source_dir" || exit 126
        if [ -n "$owner" ]; then
            exec setpriv --reuid="${owner%:*}" --regid="${owner#*:}" --clear-groups --no-new-privs -- "$@"
        fi
        exec "$@"
    )
}

# Written whole or not at all: a crash never leaves a half-written record.
record() {
    printf '{"phase": "%s", "exit_code": %d}\n' "$1" "$2" > "$exit_file.tmp" &&
        sync "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"
}

if [ -n "$requirements" ]; then
    echo "nothing: installing requirements.txt"
    as_user "$python" -m pip install --disable-pip-version-check --no-input --no-cache-dir --target "$packages" \
        -r "$requirements"
    code=$?
    if [ "$code" -ne 0 ]; then
        echo "nothing: requirements.txt install failed with exit code $code"
        record requirements "$code"
        exit 1
    fi
fi

# A trapped signal waits for this foreground command to finish (POSIX), so $?
# is the entry point's real status: its exit code, or 128 + the signal number.
as_user "$@"
record entry "$?"
