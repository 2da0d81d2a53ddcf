"""Runs as local processes on the scheduler's own machine.

Each run is a process group of its own (a new session), led by ``runshim.py``,
with stdout and stderr in the run's log file.  The group outlives the scheduler,
so a restart re-attaches instead of killing work.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from traitlets import List, Unicode

from ..runenv import RunLaunch, RunPaths, build_environment, entry_argv
from .base import Executor, ExitStatus, ProcessRef, read_exit_file

SHIM = str(Path(__file__).with_name("runshim.py"))


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
        spec = {
            "argv": entry_argv(python, launch),
            "exit_file": str(paths.exit_file),
            "requirements_cmd": [
                python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                "--target", str(paths.packages), "-r", str(requirements),
            ] if has_requirements else None,
        }
        env = build_environment(self.base_environment(), launch, paths, has_requirements)
        paths.launch_file.write_text(json.dumps(spec))
        with open(paths.log, "ab", buffering=0) as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-S", SHIM, str(paths.launch_file),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                cwd=str(paths.source), env=env, start_new_session=True,
            )
        start = process_start_time(proc.pid) or ""
        return proc, ProcessRef(proc.pid, start)

    async def _wait(self, proc: asyncio.subprocess.Process, paths: RunPaths) -> ExitStatus:
        code = await proc.wait()
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
