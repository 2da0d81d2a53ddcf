"""The tiny parent of every local run: installs requirements, runs the entry point, records the exit.

Started as ``python -S runshim.py launch.json`` in a new session, so it outlives a
restart of the scheduler; the scheduler reads ``exit.json`` even when it is no
longer this process's parent.  Standard library only, and no imports from the
package, because ``-S`` keeps site-packages out for a fast start.
"""

import json
import os
import signal
import subprocess
import sys

_child = None


def _forward(signum, _frame):
    # The whole process group usually gets the signal already; this covers a
    # signal sent to this process alone.
    if _child is not None and _child.poll() is None:
        try:
            _child.send_signal(signum)
        except ProcessLookupError:
            pass


def _run(argv):
    global _child
    try:
        _child = subprocess.Popen(argv)
    except OSError as e:
        print(f"nothing: cannot start {argv[0]!r}: {e}", flush=True)
        return 127
    while True:
        try:
            return _child.wait()
        except InterruptedError:
            continue


def _write_exit(path, record):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def main(launch_path):
    with open(launch_path) as f:
        launch = json.load(f)
    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    if launch.get("requirements_cmd"):
        print("nothing: installing requirements.txt", flush=True)
        code = _run(launch["requirements_cmd"])
        if code != 0:
            print(f"nothing: requirements.txt install failed with exit code {code}", flush=True)
            _write_exit(launch["exit_file"], {"phase": "requirements", "exit_code": code})
            return 1
    code = _run(launch["argv"])
    _write_exit(launch["exit_file"], {"phase": "entry", "exit_code": code})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
