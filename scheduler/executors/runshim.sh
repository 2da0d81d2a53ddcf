#!/bin/sh
# The tiny parent of every local run: installs requirements.txt, runs the entry
# point, and records how it ended in EXIT_FILE, so the scheduler can read the
# outcome even after a restart, when it is no longer this process's parent.
#
# usage: runshim.sh SOURCE_DIR EXIT_FILE REQUIREMENTS|"" PYTHON PACKAGES_DIR -- ENTRY ARGV...
#
# POSIX sh because it starts in a millisecond. A SIGTERM or SIGINT to the run's
# process group reaches the entry point directly; the trap only keeps this shell
# alive until the entry point has exited, so the outcome is always recorded.
exit_file=$2 requirements=$3 python=$4 packages=$5
cd "$1" || exit 1
shift 6
trap ':' TERM INT

# The scheduler reads EXIT_FILE only once this shell has exited, so a plain
# write is enough (no rename, no extra process).
record() {
    printf '{"phase": "%s", "exit_code": %d}\n' "$1" "$2" > "$exit_file"
}

if [ -n "$requirements" ]; then
    echo "nothing: installing requirements.txt"
    "$python" -m pip install --disable-pip-version-check --no-input --target "$packages" -r "$requirements"
    code=$?
    if [ "$code" -ne 0 ]; then
        echo "nothing: requirements.txt install failed with exit code $code"
        record requirements "$code"
        exit 1
    fi
fi

# A trapped signal waits for this foreground command to finish (POSIX), so $?
# is the entry point's real status: its exit code, or 128 + the signal number.
"$@"
record entry "$?"
