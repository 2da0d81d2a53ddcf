"""Runs as local processes on the scheduler's own machine, each as its user's Unix account, in a cgroup.

Each run is led by ``runshim.sh``, started by the helper process in a session of
its own with stdout and stderr in the run's log file.  The shim (root) joins the
run's cgroup first, then runs the entry point as the run's user with only that
user's groups and umask 077, and records the exit.  The cgroup holds the memory,
CPU and process limits and every process the run ever makes: cancel, max-time
and preemption signal the whole cgroup, and a run is reported ended only once
its cgroup is empty, so its GPUs are never handed on while a process of it is
left.  The shim and the run outlive the scheduler; a restart re-attaches.

Where no cgroup can be made (no writable hierarchy, not root), runs are tracked
by their process group as before, and each run's events say so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
from pathlib import Path

from traitlets import Any, Bool, Integer, List, Unicode

from ..cgroups import Cgroups, JobCgroup, Limits
from ..helper_process import HelperGone, HelperProcess, process_start_time
from ..runenv import RunLaunch, RunPaths, build_environment, entry_argv
from .base import Executor, ExitStatus, ProcessRef, read_exit_file

SHIM = str(Path(__file__).with_name("runshim.sh"))
RBIND = str(Path(__file__).with_name("rbind.sh"))
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    inherit_env = List(
        Unicode(),
        default_value=["PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH", "PIP_INDEX_URL",
                       "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                       "http_proxy", "https_proxy", "no_proxy"],
        help="""Variables of the scheduler's environment that a run inherits.

        Everything else (notably the scheduler's hub token) is withheld; ``HOME``
        is the run's own folder. Example: ``c.LocalExecutor.inherit_env.append("WANDB_API_KEY")``
        """,
    ).tag(config=True)

    use_cgroups = Bool(
        True,
        help="""Put every run in a cgroup of its own (memory, CPU and process limits; every process found at stop).

        Turned off, or where no cgroup can be made, runs are tracked by their
        process group only: a child that calls ``setsid`` escapes cancel.
        """,
    ).tag(config=True)

    cgroup_scope = Unicode(
        help="""Prefix of this scheduler's cgroup names, so two schedulers on one machine never share one.

        Default: derived from the data folder.
        """,
    ).tag(config=True)

    pids_limit = Integer(
        4096, help="Most processes and threads one run may have at once (0: no limit). Stops fork bombs."
    ).tag(config=True)

    helper = Any(help="The scheduler's HelperProcess, which starts the runs' processes.")

    _base_environment: dict[str, str] | None = None
    _cgroups: Cgroups | None = None

    def base_environment(self) -> dict[str, str]:
        """The inherited part of every run's environment (read once: the scheduler's own does not change)."""
        if self._base_environment is None:
            self._base_environment = {k: os.environ[k] for k in self.inherit_env if k in os.environ}
        return self._base_environment

    def set_scope(self, data_dir: str) -> None:
        if not self.cgroup_scope:
            self.cgroup_scope = "s" + hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:10]

    @property
    def cgroups(self) -> Cgroups | None:
        """The machine's cgroup hierarchy, found once; None (logged once) where runs cannot have cgroups."""
        if self._cgroups is None:
            if not self.use_cgroups:
                self._cgroups = Cgroups.disabled("cgroups are turned off (LocalExecutor.use_cgroups)")
            elif os.geteuid() != 0:
                self._cgroups = Cgroups.disabled("the scheduler does not run as root")
            else:
                self._cgroups = Cgroups()
            if not self._cgroups.available:
                log.warning("Runs get no cgroups (%s): their processes are tracked by process group only, "
                            "and --memory/--cpus are not enforced", self._cgroups.why)
        return self._cgroups if self._cgroups.available else None

    @property
    def readonly_binds(self) -> bool:
        """Whether runs can get read-only inputs bound in a mount namespace of their own (needs root)."""
        return os.geteuid() == 0

    def tracking_note(self) -> str:
        if self.cgroups is not None:
            return ""
        return f"no cgroup ({self._cgroups.why}): processes tracked by process group only, limits not enforced"

    def _job(self, run_id: int) -> JobCgroup | None:
        cgroups = self.cgroups
        return cgroups.job(f"{self.cgroup_scope or 'run'}-run-{run_id}") if cgroups else None

    async def _start(self, launch: RunLaunch, paths: RunPaths, python: str):
        if launch.distributed:
            raise ValueError("the local executor starts one process per run: --procs-per-node above 1 and "
                             "--torchrun need an engine that launches ranks (c.NothingScheduler.executor = \"slurm\")")
        helper: HelperProcess = self.helper
        requirements = paths.source / "requirements.txt"
        has_requirements = requirements.is_file()
        cg = self._job(launch.run_id)
        if cg is not None:
            limits = Limits(memory_bytes=launch.memory_bytes, cpus=launch.cpus, pids=self.pids_limit)
            cg = await helper.call(self.cgroups.create, cg.name, limits)
        owner = f"{launch.uid}:{launch.gid}" if launch.uid is not None and launch.uid != os.geteuid() else ""
        argv = ["/bin/sh", SHIM, str(paths.source), str(paths.exit_file),
                str(requirements) if has_requirements else "", python, str(paths.packages), owner,
                " ".join(cg.procs_files) if cg else "", "--", *entry_argv(python, launch)]
        if launch.readonly_binds:
            pairs = [part for bind in launch.readonly_binds for part in bind]
            argv = [shutil.which("unshare", path=SYSTEM_PATH) or "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", RBIND,
                    str(len(launch.readonly_binds)), *pairs, "--", *argv]
        env = build_environment(self.base_environment(), launch, paths, has_requirements)
        pid, start = await helper.spawn(argv, env, str(paths.log), str(paths.pid_file))
        ref = ProcessRef(pid, start, launch.run_id)
        return ref, ref

    async def _wait(self, ref: ProcessRef, paths: RunPaths) -> ExitStatus:
        try:
            code = os.waitstatus_to_exitcode(await self.helper.exit_status(ref.pid))
        except HelperGone:
            # The helper died; its runs live on (re-parented): watch them like re-attached ones.
            return await self._poll_until_gone(ref, paths)
        return await self._finish(ref, read_exit_file(paths.exit_file) or ExitStatus("killed", code))

    async def _finish(self, ref: ProcessRef | None, status: ExitStatus) -> ExitStatus:
        """Kill what the run left behind (daemons, stragglers) and remove its cgroup; tell an OOM kill as such."""
        if ref is None:
            return status
        cg = self._job(ref.run_id)
        if cg is None:
            _killpg(ref.pid, signal.SIGKILL)  # stragglers of the process group, at least
            return status
        emptied = await self.helper.call_idempotent(cg.kill)
        if not emptied:
            log.error("Run %s: processes are left in cgroup %s after SIGKILL", ref.run_id, cg.name)
        if await self.helper.call_idempotent(cg.oom_kills) and not status.succeeded and status.phase != "requirements":
            status = ExitStatus("oom", status.exit_code, await self.helper.call_idempotent(cg.memory_limit))
        await self.helper.call_idempotent(cg.remove)
        return status

    async def _alive(self, ref: ProcessRef) -> bool:
        start = process_start_time(ref.pid)
        return start is not None and (not ref.start or start == ref.start)

    async def _signal(self, ref: ProcessRef, sig: int) -> None:
        cg = self._job(ref.run_id)
        if cg is None:
            _killpg(ref.pid, sig)
        elif sig == signal.SIGKILL:
            await self.helper.call_idempotent(cg.kill)
        else:
            await self.helper.call_idempotent(cg.signal, sig)

    async def recover(self, run_id: int, paths: RunPaths) -> ProcessRef | None:
        """The launcher writes the pid file before it answers; a process that got as far as its cgroup without
        one is found there (and the pid file written)."""
        try:
            pid, _, start = paths.pid_file.read_text().strip().partition(" ")
            return ProcessRef(int(pid), start, run_id)
        except (OSError, ValueError):
            pass
        cg = self._job(run_id)
        if cg is None:
            return None
        pid = await self.helper.call_idempotent(cg.leader)
        start = process_start_time(pid) if pid else None
        if start is None:
            return None
        paths.pid_file.write_text(f"{pid} {start}\n")
        return ProcessRef(pid, start, run_id)

    async def leftovers(self, run_id: int) -> bool:
        """Kill any process of a run whose start was interrupted; True if there were some."""
        cg = self._job(run_id)
        if cg is None:
            return False
        had = not await self.helper.call_idempotent(cg.empty)
        await self.helper.call_idempotent(cg.kill)
        await self.helper.call_idempotent(cg.remove)
        return had


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
