#!/bin/sh
# The batch script of every run on Slurm: slurmstepd starts it as the run's user
# (sbatch --uid/--gid) on the first node of the allocation, with stdout and stderr
# in the run's log and the run's environment from sbatch's --export-file.
#
# usage: slurmjob.sh SOURCE_DIR REQUIREMENTS|"" PYTHON PACKAGES_DIR PHASE_FILE -- ENTRY ARGV...
#
# Slurm keeps the exit status; PHASE_FILE tells the scheduler whether it is pip's
# (requirements.txt failed) or the entry point's.
source_dir=$1 requirements=$2 python=$3 packages=$4 phase_file=$5
shift 6
umask 077
cd "$source_dir" || exit 126

if [ -n "$requirements" ]; then
    echo requirements > "$phase_file"
    echo "nothing: installing requirements.txt"
    "$python" -m pip install --disable-pip-version-check --no-input --no-cache-dir --target "$packages" \
        -r "$requirements" || {
        code=$?
        echo "nothing: requirements.txt install failed with exit code $code"
        exit "$code"
    }
fi
echo entry > "$phase_file"
exec "$@"
