"""Run the user's start-up scripts from ``<easymaker>/cont-init.d`` when a notebook starts.

This is the seed's "사용자 스크립트" feature. One program serves every place a
notebook starts: the images' entrypoints and the local spawner both run
``python -m nothing.spawner.continit`` before the server. The local spawner runs it
as the user's Unix account, in the notebook's cgroup: the scripts are the user's
code, and the runner itself must only ever read and write the user's folder with
the user's rights (a record file could be a link the user planted).

The rules, as the seed states them:

* only files directly inside ``cont-init.d`` run (no sub-folders; a symbolic link
  to a regular file counts as a file);
* only files the runner may execute (``os.access(path, os.X_OK)``);
* the first line must start with ``#!``; other files are skipped and the skip is logged;
* "alphanumeric ascending" order is the plain byte order of the UTF-8 file name
  (what ``LC_ALL=C ls`` prints): ``01-a``, ``1-b``, ``10-c``, ``B``, ``a``.
  Digits sort before upper case, upper case before lower case, and ``-`` before
  digits, so numbering scripts with a fixed width (``10-``, ``20-``) gives the
  order people expect;
* each script's exit code goes to ``cont-init.d/{SCRIPT}.exitcode`` (the number and a
  newline) and its standard output and error, interleaved, to
  ``cont-init.d/{SCRIPT}.output``; the whole run's log goes to ``<easymaker>/cont-init.output``.
  All three are rewritten on every start.

Guarantees beyond the seed, so that a bad script can never keep a notebook from starting:

* every script gets its own session (process group); one that outlives ``timeout``
  seconds gets SIGTERM on the whole group, then SIGKILL on whatever of the group still
  runs ``kill_grace`` seconds later, and the run goes on with the next script. A killed
  script's exit code is recorded the way a shell reports it, ``128 + signal`` (143 for
  SIGTERM, 137 for SIGKILL);
  a script that cannot be executed at all (missing interpreter) records 127;
* a script that exits on its own may leave background processes running (a user
  may start a daemon); they are not killed;
* the record files are written with mode 0644 and their names are reserved: a file
  named ``X.exitcode`` or ``X.output`` is never run while ``X`` is in the folder, and
  is skipped (with a log line) otherwise, so records are never run on the next start;
* the command-line program always exits 0.

Scripts run with the easymaker folder as working directory and inherit the
environment. The log has no timestamps, so it reads the same on every start that
ran the same scripts the same way (the files' modification times say when).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_ROOT = Path("/root/easymaker")
SCRIPTS_DIR = "cont-init.d"
RUN_LOG = "cont-init.output"
RECORD_SUFFIXES = (".exitcode", ".output")
DEFAULT_TIMEOUT = 300.0
DEFAULT_KILL_GRACE = 5.0

Status = Literal["ok", "failed", "timeout", "skipped"]
# The skip reason of a record of a script in the folder: ignored without a log line.
_OWN_RECORD = "record of a script"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScriptResult:
    """What happened to one entry of ``cont-init.d``.

    ``exit_code`` is ``None`` only for skipped entries; ``reason`` says why an
    entry was skipped or how a run ended, in the words the run log uses.
    """

    name: str
    status: Status
    exit_code: int | None
    reason: str


def script_order(names: list[str]) -> list[str]:
    """Sort names the way scripts run: by the bytes of the UTF-8 name (``LC_ALL=C`` order)."""
    return sorted(names, key=os.fsencode)


def _skip_reason(folder: Path, name: str, names: set[str]) -> str | None:
    """Why ``name`` must not run, or ``None`` when it is a script to run."""
    path = folder / name
    for suffix in RECORD_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            if name[: -len(suffix)] in names:
                return _OWN_RECORD
            return f"the name ends in {suffix}, which is reserved for script records"
    if not path.is_file():
        return "not a regular file"
    if not os.access(path, os.X_OK):
        return "not executable"
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if head != b"#!":
        return "the first line does not start with #!"
    return None


def _write_record(path: Path, data: bytes) -> None:
    """Write a record file with mode 0644 whatever mode an older file had."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, data)
    finally:
        os.close(fd)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs; zombies waiting for PID 1 do not count."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:  # no /proc: ask the kernel, which counts zombies too
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _stop_group(proc: subprocess.Popen, kill_grace: float) -> int:
    """SIGTERM the script's whole group, SIGKILL what is left ``kill_grace`` s later; the leader's code.

    The group, not only the script, because a shell script's ``sleep`` or
    ``pip install`` child would otherwise keep running after its parent died.
    """
    deadline = time.monotonic() + kill_grace
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=kill_grace)
    except subprocess.TimeoutExpired:
        code = None
    while code is not None and _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    _signal_group(proc.pid, signal.SIGKILL)
    return proc.wait() if code is None else code


def _run_one(path: Path, cwd: Path, timeout: float, kill_grace: float,
             env: Mapping[str, str] | None) -> tuple[Status, int, str]:
    """Run one script with its output going straight to its ``.output`` record.

    Writing to the file rather than a pipe means a script's background children
    that keep the output open can never block the runner, and a hanging script
    still leaves what it printed so far.
    """
    out_path = path.with_name(path.name + ".output")
    _write_record(out_path, b"")
    with open(out_path, "ab") as out:
        try:
            proc = subprocess.Popen([str(path)], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=None if env is None else dict(env))
        except OSError as e:
            out.write(f"cannot execute {path.name}: {e.strerror}\n".encode())
            return "failed", 127, f"cannot execute: {e.strerror}"
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = _stop_group(proc, kill_grace)
            return "timeout", 128 - code if code < 0 else code, f"timed out after {timeout:g} s"
    if code < 0:
        return "failed", 128 - code, f"killed by signal {-code}"
    return ("ok" if code == 0 else "failed"), code, "finished"


def run_cont_init(root: Path, timeout: float = DEFAULT_TIMEOUT, logger: logging.Logger | None = None,
                  *, kill_grace: float = DEFAULT_KILL_GRACE,
                  env: Mapping[str, str] | None = None) -> list[ScriptResult]:
    """Run every eligible script in ``root/cont-init.d`` once, in order, and record the results.

    Blocking: call it off the event loop (``await asyncio.to_thread(run_cont_init, root)``).
    Never raises for anything a script does; it raises ``OSError`` only when the
    easymaker folder itself cannot be written. When ``root`` does not exist nothing
    is written and ``[]`` is returned; when ``cont-init.d`` is missing it is created
    so that users find where scripts go. ``logger`` receives every run-log line too.
    ``env`` replaces the inherited environment of the scripts when given.
    """
    logger = logger or log
    root = Path(root).absolute()
    if not root.is_dir():
        logger.info("cont-init: %s does not exist; no scripts to run", root)
        return []
    folder = root / SCRIPTS_DIR
    folder.mkdir(exist_ok=True)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        logger.info("cont-init: %s", line)

    say(f"running scripts in {folder}")
    names = script_order(os.listdir(folder))
    present = set(names)
    results: list[ScriptResult] = []
    for name in names:
        reason = _skip_reason(folder, name, present)
        if reason is _OWN_RECORD:
            continue
        if reason is not None:
            say(f"skip {name}: {reason}")
            results.append(ScriptResult(name, "skipped", None, reason))
            continue
        say(f"run {name}")
        try:
            status, code, how = _run_one(folder / name, root, timeout, kill_grace, env)
        except OSError as e:
            status, code, how = "failed", 127, f"cannot record output: {e.strerror}"
        _write_record(folder / f"{name}.exitcode", f"{code}\n".encode())
        say(f"exit {name}: {code}" if how == "finished" else f"exit {name}: {code} ({how})")
        results.append(ScriptResult(name, status, code, how))
    ran = [r for r in results if r.status != "skipped"]
    failed = sum(r.status != "ok" for r in ran)
    say(f"done: {len(ran)} run, {failed} failed, {len(results) - len(ran)} skipped")
    _write_record(root / RUN_LOG, "".join(line + "\n" for line in lines).encode())
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run the scripts, print the log to stderr, always return 0."""
    parser = argparse.ArgumentParser(prog="python -m nothing.spawner.continit",
                                     description="Run the start-up scripts in <dir>/cont-init.d.")
    parser.add_argument("--dir", type=Path, default=DEFAULT_ROOT,
                        help="the easymaker folder (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds each script may run before it is killed (default: %(default)s)")
    parser.add_argument("--kill-grace", type=float, default=DEFAULT_KILL_GRACE,
                        help="seconds between SIGTERM and SIGKILL for a script that timed out "
                             "(default: %(default)s)")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return 0
    logger = logging.getLogger("nothing.continit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        run_cont_init(args.dir, args.timeout, logger, kill_grace=args.kill_grace)
    except Exception:
        logger.exception("cont-init: the runner failed; the notebook starts anyway")
    return 0


if __name__ == "__main__":
    sys.exit(main())
