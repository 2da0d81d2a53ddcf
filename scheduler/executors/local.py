"""Runs as local processes on the scheduler's own machine.

Each run is a process group of its own (a new session), led by ``runshim.sh``,
with stdout and stderr in the run's log file.  The helper process starts it and
reports its exit; the group outlives both, so a restart of the scheduler
re-attaches instead of killing work.
"""

from __future__ import annotations

import os
from pathlib import Path

from traitlets import Any, List, Unicode

from ..helper_process import HelperGone, HelperProcess, process_start_time
from ..runenv import RunLaunch, RunPaths, build_environment, entry_argv
from .base import Executor, ExitStatus, ProcessRef, read_exit_file

SHIM = str(Path(__file__).with_name("runshim.sh"))


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

    helper = Any(help="The scheduler's HelperProcess, which starts the runs' processes.")

    def base_environment(self) -> dict[str, str]:
        """The inherited part of every run's environment (read once: the scheduler's own does not change)."""
        if self._base_environment is None:
            self._base_environment = {k: os.environ[k] for k in self.inherit_env if k in os.environ}
        return self._base_environment

    _base_environment: dict[str, str] | None = None

    async def _start(self, launch: RunLaunch, paths: RunPaths, python: str):
        requirements = paths.source / "requirements.txt"
        has_requirements = requirements.is_file()
        argv = ["/bin/sh", SHIM, str(paths.source), str(paths.exit_file),
                str(requirements) if has_requirements else "", python, str(paths.packages), "--",
                *entry_argv(python, launch)]
        env = build_environment(self.base_environment(), launch, paths, has_requirements)
        helper: HelperProcess = self.helper
        pid, start = await helper.spawn(argv, env, str(paths.log), str(paths.pid_file))
        ref = ProcessRef(pid, start)
        return ref, ref

    async def _wait(self, ref: ProcessRef, paths: RunPaths) -> ExitStatus:
        try:
            code = os.waitstatus_to_exitcode(await self.helper.exit_status(ref.pid))
        except HelperGone:
            # The helper died; its runs live on (re-parented): watch them like re-attached ones.
            return await self._poll_until_gone(ref, paths)
        return read_exit_file(paths.exit_file) or ExitStatus("killed", code)

    async def _alive(self, ref: ProcessRef) -> bool:
        start = process_start_time(ref.pid)
        return start is not None and (not ref.start or start == ref.start)

    async def _signal(self, ref: ProcessRef, sig: int) -> None:
        try:
            os.killpg(ref.pid, sig)
        except ProcessLookupError:
            pass
