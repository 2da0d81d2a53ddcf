"""Runs as local processes on the scheduler's own machine.

Each run is a process group of its own (a new session), led by ``runshim.sh``,
with stdout and stderr in the run's log file.  The group outlives the scheduler,
so a restart re-attaches instead of killing work.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from traitlets import List, Unicode

from ..runenv import RunLaunch, RunPaths, build_environment, entry_argv
from .base import Executor, ExitStatus, ProcessRef, read_exit_file

SHIM = str(Path(__file__).with_name("runshim.sh"))


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (in clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def spawn_detached(argv: list[str], env: dict[str, str], log: Path) -> int:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log``.

    ``posix_spawn`` rather than asyncio's subprocess transport: nothing in this
    process owns the child, so no garbage collection or loop shutdown can kill it.
    """
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        return os.posix_spawn(argv[0], argv, env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
            (os.POSIX_SPAWN_CLOSE, fd),
        ])
    finally:
        os.close(fd)


async def wait_child(pid: int) -> int:
    """Await the exit of a child process; returns its exit code (negative for a signal)."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        status = await asyncio.to_thread(os.waitpid, pid, 0)
        return os.waitstatus_to_exitcode(status[1])
    done = loop.create_future()
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class LocalExecutor(Executor):
    inherit_env = List(
        Unicode(),
        default_value=["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "PIP_INDEX_URL",
                       "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                       "http_proxy", "https_proxy", "no_proxy"],
        help="""Variables of the scheduler's environment that a run inherits.

        Everything else (notably the scheduler's hub token) is withheld.
        Example: ``c.LocalExecutor.inherit_env.append("WANDB_API_KEY")``
        """,
    ).tag(config=True)

    def base_environment(self) -> dict[str, str]:
        return {k: os.environ[k] for k in self.inherit_env if k in os.environ}

    async def _start(self, launch: RunLaunch, paths: RunPaths, python: str):
        requirements = paths.source / "requirements.txt"
        has_requirements = requirements.is_file()
        argv = ["/bin/sh", SHIM, str(paths.source), str(paths.exit_file),
                str(requirements) if has_requirements else "", python, str(paths.packages), "--",
                *entry_argv(python, launch)]
        env = build_environment(self.base_environment(), launch, paths, has_requirements)
        pid = spawn_detached(argv, env, paths.log)
        return pid, ProcessRef(pid, process_start_time(pid) or "")

    async def _wait(self, pid: int, paths: RunPaths) -> ExitStatus:
        code = await wait_child(pid)
        status = read_exit_file(paths.exit_file)
        if status is not None:
            return status
        return ExitStatus("killed", code)

    async def _alive(self, ref: ProcessRef) -> bool:
        start = process_start_time(ref.pid)
        return start is not None and (not ref.start or start == ref.start)

    async def _signal(self, ref: ProcessRef, sig: int) -> None:
        try:
            os.killpg(ref.pid, sig)
        except ProcessLookupError:
            pass
