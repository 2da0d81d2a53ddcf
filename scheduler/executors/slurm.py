"""Runs as Slurm batch jobs, placed exactly on the node our policy chose.

Our scheduler keeps the queue, the fair share, the quotas and the placement;
Slurm only launches: every start is ``sbatch --nodelist=<the chosen node>
--uid=<the run's account>`` of ``slurmjob.sh``, which runs the entry point in the
run's folder with the run's environment (given through ``--export-file``, so
nothing of the scheduler's own environment reaches the job).  One poller asks
``squeue --format`` about the jobs it watches (those alone), once per ``poll_interval``, and
``scontrol show job`` about a job only when it is seen ending other than COMPLETED; cancel, max-time
and preemption are ``scancel --signal=TERM --full`` and, after the grace period,
``scancel``, which ends every process of the job on every node.  A restart
re-attaches by job id (stored in the database), or finds a job whose id was
never stored by its name.  The node inventory (GPUs, CPUs, memory, up / drained /
down) is Slurm's, from ``sinfo``.

Run folders must be on a filesystem every node mounts at the same path (as
Determined's and SkyPilot's Slurm support require): the scheduler writes the
code there and reads logs and outputs from there.  Slurm gives the GPUs of the
job through ``CUDA_VISIBLE_DEVICES``; our policy counts GPUs per node, Slurm
picks the device indices.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from traitlets import Bool, Float, Integer, List, Unicode

from ..runenv import RankLayout, RunLaunch, RunPaths, build_environment, entry_argv, rank_plan
from .base import EngineRefused, Executor, ExitStatus, NodeInfo
from .slurm_commands import (SlurmCommandError, SlurmJobRequest, SlurmJobStatus, SlurmOutputError, hold_sbatch_argv,
                             parse_gpu_indices, parse_job_names, parse_nodes, parse_sbatch, parse_scontrol_job,
                             parse_squeue_lines, run_command, sbatch_argv, scancel_argv, scontrol_job_argv,
                             scontrol_job_details_argv, scontrol_release_argv, sinfo_argv, slurm_command_env, squeue_argv, squeue_forgot_all,
                             squeue_poll_argv, srun_argv, write_env_file)

JOB_SCRIPT = str(Path(__file__).with_name("slurmjob.sh"))
RANK_SCRIPT = str(Path(__file__).with_name("slurmrank.py"))
RANKS_DIR = "ranks"  # in the run's folder: rank-N.log and rank-N.exit.json of a distributed run
SUBMITTED = "slurm.submitted"  # in the run's control folder: when its current attempt was submitted
AHEAD = "slurm.ahead"  # in a waiting run's control folder: the id of its job submitted ahead
CLOCK_SLACK = 5.0  # seconds the controller's clock (a job's submit time) may be behind the scheduler's
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlurmJobRef:
    """A run's Slurm job; ``steps``: its processes are srun tasks (a distributed run).

    A graceful stop signals the processes themselves: the batch script and its children for a run
    on one node; the srun tasks (not srun: a SIGTERM makes srun SIGKILL its tasks) for the others.
    """

    job_id: str
    run_id: int = 0
    steps: bool = False


class SlurmExecutor(Executor):
    slurm_conf = Unicode(
        "", help="""Path of the cluster's slurm.conf for every Slurm command ($SLURM_CONF); empty: Slurm's default.

        Example: ``c.SlurmExecutor.slurm_conf = "/etc/slurm/slurm.conf"``""",
    ).tag(config=True)

    partition = Unicode("", help="Partition the runs are submitted to (empty: the cluster's default).").tag(
        config=True)

    extra_sbatch_args = List(
        Unicode(), help="""More sbatch options for every run, e.g. ``["--account=vision", "--qos=normal"]``.""",
    ).tag(config=True)

    poll_interval = Float(
        1.0, help="""Seconds between squeue calls for the jobs being watched.

        Slurm forgets a finished job after its MinJobAge (300 s by default) and there may be no
        accounting to ask afterwards: keep this well below that.""",
    ).tag(config=True)

    inherit_env = List(
        Unicode(), default_value=["PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH"],
        help="""Variables of the scheduler's environment a run inherits (the job gets nothing else of it).""",
    ).tag(config=True)

    job_scope = Unicode(help="Prefix of the job names, so two schedulers on one cluster never mix their jobs.").tag(
        config=True)

    notebook_node = Unicode(
        "", help="""The Slurm name of the machine notebook servers run on (the hub's), where they hold GPUs.

        Notebooks stay on that machine (as without Slurm); a notebook's GPUs are held there by a
        placeholder Slurm job (``sbatch --nodelist=<it> --gres=gpu:N`` of a ``sleep``), so that no Slurm job
        is given the same devices, and the notebook sees the devices Slurm gave the placeholder. Empty: the
        hub's machine is not a Slurm node, and notebooks cannot hold GPUs (runs still can).
        Example: ``c.SlurmExecutor.notebook_node = "gpu1"``""",
    ).tag(config=True)

    notebook_hold_timeout = Float(
        20.0, help="""Seconds to wait for Slurm to start a notebook's placeholder job before giving up (a notebook
        does not queue: a person is waiting). Example: ``c.SlurmExecutor.notebook_hold_timeout = 30``""",
    ).tag(config=True)

    master_port_base = Integer(
        29500, help="""First port of the range the rendezvous of distributed runs use (``MASTER_PORT``,
        torchrun's ``--rdzv-endpoint``, TensorFlow's workers at ``MASTER_PORT + 1 + rank``).

        Each run gets a block of 64 ports in the range, chosen by its id, so runs that share a node
        do not collide. Example: ``c.SlurmExecutor.master_port_base = 40000``""",
    ).tag(config=True)

    master_port_count = Integer(
        4096, help="""Size of the port range of ``master_port_base`` (a multiple of 64); keep it free of other
        services on the compute nodes. Example: ``c.SlurmExecutor.master_port_count = 8192``""",
    ).tag(config=True)

    submit_ahead = Bool(
        True, help="""Submit the run the policy keeps nodes for before they are free, as a job that waits for
        the jobs on them (``sbatch --dependency=afterany``), so that Slurm starts it the moment they end, as it
        would start its own queued job. Withdrawn (``scancel``) if the queue changes first.
        Example: ``c.SlurmExecutor.submit_ahead = False``""",
    ).tag(config=True)

    def __init__(self, on_exit, **kwargs):
        super().__init__(on_exit, **kwargs)
        self._ahead: dict[int, tuple[SlurmJobRef, tuple[str, ...]]] = {}
        self._waiting: dict[str, asyncio.Future] = {}
        self._last: dict[str, SlurmJobStatus] = {}
        self._poller: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._details_slots = asyncio.Semaphore(4)  # scontrol calls at once, for jobs seen ending
        # From the inventory: Slurm's order of the nodes (a job's node ids follow it) and their addresses.
        self._node_order: dict[str, int] = {}
        self._addresses: dict[str, str] = {}

    # ------------------------------------------------------------------ the commands
    @property
    def command_env(self) -> dict[str, str]:
        return slurm_command_env(os.environ, self.slurm_conf or None)

    async def _run(self, argv: list[str], check: bool = True):
        return await run_command(argv, env=self.command_env, check=check)

    def set_scope(self, data_dir: str) -> None:
        if not self.job_scope:
            self.job_scope = "nothing-" + hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:8]

    def job_name(self, run_id: int) -> str:
        return f"{self.job_scope or 'nothing'}-{run_id}"

    def ref_text(self, ref: SlurmJobRef) -> str:
        return f"{ref.job_id} steps" if ref.steps else ref.job_id

    def parse_ref(self, run_id: int, text: str | None) -> SlurmJobRef | None:
        job_id, _, kind = (text or "").partition(" ")
        return SlurmJobRef(job_id, run_id, kind == "steps") if job_id.isdigit() else None

    async def inventory(self) -> list[NodeInfo]:
        result = await self._run(sinfo_argv())
        nodes = parse_nodes(result.stdout)
        self._node_order = {n.name: k for k, n in enumerate(nodes)}
        self._addresses = {n.name: n.address for n in nodes if n.address}
        return [NodeInfo(n.name, n.gpus, n.cpus, n.memory_mb * 1024**2, n.state, n.gpu_model,
                         n.reason or n.slurm_state) for n in nodes]

    def node_address(self, node: str) -> str:
        """The node's NodeAddr from the inventory (its name where Slurm gives none)."""
        return self._addresses.get(node, node)

    @property
    def listens_beyond_loopback(self) -> bool:
        return True

    def master_port(self, run_id: int) -> int:
        """The first port of the run's block of 64 in ``master_port_base`` + ``master_port_count``."""
        blocks = max(1, self.master_port_count // 64)
        return self.master_port_base + (run_id % blocks) * 64

    def _in_slurm_order(self, nodes: Iterable[str]) -> tuple[str, ...]:
        """Nodes as Slurm orders a job's nodes (by the inventory; unknown ones last, by name)."""
        return tuple(sorted(nodes, key=lambda n: (self._node_order.get(n, len(self._node_order)), n)))

    def _job_ref(self, job_id: str, run_id: int, paths: RunPaths | None) -> SlurmJobRef:
        """The reference of a run's job found by name: its processes are srun tasks if it has a rank plan."""
        return SlurmJobRef(job_id, run_id, paths is not None and (paths.root / RANKS_DIR / "plan.json").exists())

    def layout(self, launch: RunLaunch) -> tuple[RankLayout, tuple[str, ...]]:
        """The run's nodes in Slurm's order (``SLURM_NODEID`` counts them so) and where its ranks reach them."""
        placement = launch.placement or ((launch.node, launch.gpus),)
        names = self._in_slurm_order(n for n, _ in placement)
        hosts = tuple(self._addresses.get(n, n) for n in names)
        return RankLayout(hosts, launch.processes_per_node, self.master_port(launch.run_id), launch.torchrun,
                          launch.run_id), names

    # ------------------------------------------------------------------ notebooks
    def notebook_placement(self) -> str | None:
        if not self.notebook_node:
            raise EngineRefused("notebooks run on the hub's machine, which is not a node of the Slurm cluster here "
                                "(c.SlurmExecutor.notebook_node is not set): start the server without GPUs, or "
                                "submit the work as a run")
        return self.notebook_node

    def hold_name(self, key: str) -> str:
        return f"{self.job_scope or 'nothing'}-notebook-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    async def hold_gpus(self, key: str, node: str, gpus: int, chosen: tuple[int, ...]) -> tuple[int, ...]:
        """A placeholder job holding the GPUs on ``node``; the indices Slurm gave it are the notebook's."""
        await self.release_gpus(key)  # a placeholder left by an earlier hold of the same server
        extra = ((f"--partition={self.partition}",) if self.partition else ()) + tuple(self.extra_sbatch_args)
        argv = hold_sbatch_argv(self.hold_name(key), node, gpus, extra)
        job_id = parse_sbatch((await self._run(argv)).stdout)
        deadline = asyncio.get_running_loop().time() + self.notebook_hold_timeout
        while True:
            status = await self._status(job_id)
            if status is not None and status.state == "RUNNING":
                break
            if status is None or status.finished or asyncio.get_running_loop().time() > deadline:
                await self._run(scancel_argv(job_id), check=False)
                why = status.reason if status is not None and status.reason else "it did not start"
                raise EngineRefused(f"Slurm did not give the notebook {gpus} GPU{'s' if gpus != 1 else ''} on {node} "
                                    f"within {self.notebook_hold_timeout:g} s: {why}")
            await asyncio.sleep(0.1)
        details = await self._run(scontrol_job_details_argv(job_id))
        indices = parse_gpu_indices(details.stdout).get(node, ())
        if len(indices) != gpus:
            await self._run(scancel_argv(job_id), check=False)
            raise EngineRefused(f"Slurm's placeholder job {job_id} on {node} holds GPUs {indices}, not {gpus}")
        log.info("Notebook %s holds GPUs %s on %s through Slurm job %s", key, indices, node, job_id)
        return indices

    async def release_gpus(self, key: str) -> None:
        result = await self._run(squeue_argv(), check=False)
        if result.returncode != 0:
            raise SlurmCommandError(squeue_argv(), result.returncode, result.stderr)
        status = parse_job_names(result.stdout).get(self.hold_name(key))
        if status is not None and not status.finished:
            await self._run(scancel_argv(status.job_id), check=False)

    # ------------------------------------------------------------------ submitted ahead
    @property
    def submits_ahead(self) -> bool:
        return self.submit_ahead

    async def submit_ahead_of(self, launch: RunLaunch, paths: RunPaths, python: str, after: list) -> bool:
        """Submit the run the policy keeps nodes for, to start as soon as the jobs now on them end (Slurm's
        own hand-off: ``--dependency=afterany``), instead of after we have seen them end and submitted it."""
        if not self.submit_ahead or launch.run_id in self._ahead:
            return False
        ids = tuple(sorted({ref.job_id for ref in after if isinstance(ref, SlurmJobRef)}))
        if not ids:
            return False
        ref, nodelist = await self._submit(launch, paths, python, after=ids)
        self._ahead[launch.run_id] = (ref, nodelist)
        await asyncio.to_thread((paths.control / AHEAD).write_text, ref.job_id + "\n")
        log.info("Run %s submitted ahead as Slurm job %s on %s, after job %s", launch.run_id, ref.job_id,
                 ",".join(nodelist), ",".join(ids))
        return True

    async def withdraw_ahead(self, run_id: int, paths: RunPaths) -> None:
        """The run submitted ahead is not to start there after all (the queue changed, it was cancelled):
        its job ends whatever its state.  A job that had started is one the run never acknowledged."""
        entry = self._ahead.pop(run_id, None)
        job_id = entry[0].job_id if entry is not None else await asyncio.to_thread(_read_ahead, paths)
        if job_id:
            await self._run(scancel_argv(job_id), check=False)
            log.info("Run %s: withdrew Slurm job %s, submitted ahead", run_id, job_id)
        await asyncio.to_thread((paths.control / AHEAD).unlink, missing_ok=True)

    async def reclaim_ahead(self, runs: list[tuple[int, RunPaths]]) -> dict[int, tuple[str, ...]]:
        """After a restart: a waiting run's job submitted ahead by the previous life that Slurm has started (the
        jobs it waited for ended meanwhile) is kept, to be taken over by the run's start, rather than killed
        and run again; one still waiting ends, and this life's passes decide again.  The jobs are found by
        name, not only by ``slurm.ahead``: a scheduler killed between sbatch's answer and writing that file
        left a job no file names.  Returns the kept ones' nodes."""
        result = await self._run(squeue_argv(), check=False)
        try:
            jobs = parse_job_names(result.stdout) if result.returncode == 0 else None
        except SlurmOutputError:
            jobs = None
        if jobs is None:  # Slurm does not answer: withdraw what the files name, start the rest afresh
            found = await asyncio.to_thread(lambda: [(i, p) for i, p in runs if (p.control / AHEAD).exists()])
            for run_id, paths in found:
                await self.withdraw_ahead(run_id, paths)
            return {}
        kept: dict[int, tuple[str, ...]] = {}
        for run_id, paths in runs:
            status = jobs.get(self.job_name(run_id))
            if status is None or status.finished:
                continue
            if status.nodes:
                self._ahead[run_id] = (self._job_ref(status.job_id, run_id, paths), self._in_slurm_order(status.nodes))
                kept[run_id] = tuple(sorted(status.nodes))
                log.info("Run %s: its Slurm job %s, submitted ahead, has started; kept for the run's start",
                         run_id, status.job_id)
            else:
                await self._run(scancel_argv(status.job_id), check=False)
                log.info("Run %s: withdrew Slurm job %s, submitted ahead before a restart", run_id, status.job_id)
        await asyncio.to_thread(_forget_ahead_files, [p for i, p in runs if i not in kept])
        return kept

    # ------------------------------------------------------------------ the primitives
    async def _start(self, launch: RunLaunch, paths: RunPaths, python: str):
        if not launch.node:
            raise ValueError("a Slurm run needs the node the policy chose")
        ahead = self._ahead.get(launch.run_id)
        if ahead is not None and ahead[1] == self._nodelist(launch):
            ref = self._ahead.pop(launch.run_id)[0]
            # Started, or about to: whatever it still waits for is no longer needed.
            await self._run(scontrol_release_argv(ref.job_id), check=False)
            await asyncio.to_thread((paths.control / AHEAD).unlink, missing_ok=True)
            log.info("Run %s is Slurm job %s, submitted ahead", launch.run_id, ref.job_id)
            return ref, ref
        if ahead is not None:  # submitted ahead on other nodes than it starts on
            await self.withdraw_ahead(launch.run_id, paths)
        ref, _ = await self._submit(launch, paths, python)
        return ref, ref

    def _nodelist(self, launch: RunLaunch) -> tuple[str, ...]:
        return self.layout(launch)[1] if launch.distributed else (launch.node,)

    async def _submit(self, launch: RunLaunch, paths: RunPaths, python: str,
                      after: tuple[str, ...] = ()) -> tuple[SlurmJobRef, tuple[str, ...]]:
        requirements = paths.source / "requirements.txt"
        has_requirements = requirements.is_file()
        base = {k: os.environ[k] for k in self.inherit_env if k in os.environ}
        env = build_environment(base, launch, paths, has_requirements)
        env.pop("CUDA_VISIBLE_DEVICES", None)  # Slurm sets it to the devices it gives the job
        placement = launch.placement or ((launch.node, launch.gpus),)
        command = entry_argv(python, launch)
        nodelist, tasks_per_node = (launch.node,), 1
        if launch.distributed:
            layout, nodelist = self.layout(launch)
            tasks_per_node = layout.tasks_per_node
            # Every rank's variables and command, computed here; srun starts slurmrank.py once per task.
            plan = rank_plan(python, launch, layout, nodelist)
            await asyncio.to_thread(_write_plan, paths.root / RANKS_DIR, plan, launch.uid, launch.gid)
            if self.slurm_conf:
                env["SLURM_CONF"] = self.slurm_conf  # srun inside the job reads the same cluster's configuration
            command = srun_argv(len(nodelist), tasks_per_node, [python, "-I", "-S", RANK_SCRIPT,
                                                                str(paths.root / RANKS_DIR)])
        env_file = paths.control / "slurm.env"
        await asyncio.to_thread(write_env_file, env_file, env)
        # When this attempt was submitted: after a crash, a job of this name submitted since then is this
        # attempt's (finished or not), never an earlier attempt's of a requeued run.
        await asyncio.to_thread((paths.control / SUBMITTED).write_text, f"{time.time():.3f}\n")
        extra = [*self.extra_sbatch_args]
        if self.partition:
            extra.insert(0, f"--partition={self.partition}")
        if launch.uid is not None and launch.uid != os.geteuid():
            extra += [f"--uid={launch.uid}", f"--gid={launch.gid}"]
        request = SlurmJobRequest(
            name=self.job_name(launch.run_id), script=Path(JOB_SCRIPT), workdir=paths.root, output=paths.log,
            env_file=env_file, nodelist=nodelist, gpus_per_node=max(len(g) for _, g in placement),
            ntasks_per_node=tasks_per_node, cpus_per_task=max(1, launch.cpus // tasks_per_node),
            memory_per_node_mb=-(-launch.memory_bytes // 1024**2),
            # Our own timer stops the run at its max time; Slurm's limit is the backstop, a minute later.
            time_limit_seconds=launch.max_seconds + 60 if launch.max_seconds else None, extra=tuple(extra),
            after=after)
        argv = sbatch_argv(request)
        argv += [str(paths.source), str(requirements) if has_requirements else "", python, str(paths.packages),
                 str(paths.root / ".nothing-phase"), "--", *command]
        try:
            result = await self._run(argv)
        finally:
            env_file.unlink(missing_ok=True)  # sbatch has read it
        ref = SlurmJobRef(parse_sbatch(result.stdout), launch.run_id, launch.distributed)
        if not after:
            log.info("Run %s is Slurm job %s on %s", launch.run_id, ref.job_id, ",".join(nodelist))
        return ref, tuple(nodelist)

    async def _wait(self, ref: SlurmJobRef, paths: RunPaths) -> ExitStatus:
        future = self._waiting.get(ref.job_id)
        if future is None or future.done():
            future = self._waiting[ref.job_id] = asyncio.get_running_loop().create_future()
        self._ensure_poller()
        status: SlurmJobStatus | None = await future
        return self._exit_status(status, paths)

    def reattach(self, run_id: int, ref, paths: RunPaths) -> None:
        if ref is None:
            self._watch(run_id, self._lost())
        else:
            self._watch(run_id, self._wait(ref, paths))

    async def _lost(self) -> ExitStatus:
        return ExitStatus("lost", None)

    async def _alive(self, ref: SlurmJobRef) -> bool:
        status = await self._status(ref.job_id)
        return status is not None and not status.finished

    async def _signal(self, ref: SlurmJobRef, sig: int) -> None:
        status = await self._status(ref.job_id)
        if status is not None and status.state == "PENDING":
            # Nothing of it runs yet, so there is nothing to stop gracefully, and scancel --signal of a pending
            # job waits (retrying) until it starts: end it.
            sig = signal.SIGKILL
        argv = scancel_argv(ref.job_id) if sig == signal.SIGKILL else scancel_argv(ref.job_id, sig, full=not ref.steps)
        await self._run(argv, check=False)

    async def recover(self, run_id: int, paths: RunPaths | None) -> SlurmJobRef | None:
        """The job of the run's current attempt, found by its name: one that is still going, or, where the
        attempt's submission time is on record, one submitted since then even if it has already ended (it
        ran while the scheduler was down: it is adopted and reported, never started again)."""
        since = None
        if paths is not None:
            try:
                since = float((paths.control / SUBMITTED).read_text()) - CLOCK_SLACK
            except (OSError, ValueError):
                pass
        result = await self._run(squeue_argv(), check=False)
        if result.returncode != 0:
            return None
        status = parse_job_names(result.stdout, since).get(self.job_name(run_id))
        if status is None or (status.finished and since is None):
            return None
        return self._job_ref(status.job_id, run_id, paths)

    async def leftovers(self, run_id: int) -> bool:
        ref = await self.recover(run_id, None)
        if ref is None:
            return False
        await self._run(scancel_argv(ref.job_id), check=False)
        return True

    def pending_reason(self, ref: SlurmJobRef) -> str:
        """Slurm's reason while it has not started the job we asked for (e.g. ``Resources``), else ""."""
        status = self._last.get(ref.job_id)
        return status.reason if status is not None and status.state == "PENDING" else ""

    async def stop(self) -> None:
        await super().stop()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None

    # ------------------------------------------------------------------ watching
    async def _status(self, job_id: str) -> SlurmJobStatus | None:
        try:
            return (await self._statuses([job_id])).get(job_id)
        except (SlurmCommandError, ValueError):
            return self._last.get(job_id)

    async def _statuses(self, ids: list[str]) -> dict[str, SlurmJobStatus]:
        """Where each job of ``ids`` stands (a job Slurm forgot is absent): one ``squeue --format`` for them
        all, then ``scontrol show job`` only for the jobs seen ending other than COMPLETED, for their exit
        status.  Raises :class:`SlurmCommandError` or :class:`SlurmOutputError` where squeue cannot answer."""
        argv = squeue_poll_argv(ids)
        result = await self._run(argv, check=False)
        if result.returncode != 0:
            if squeue_forgot_all(result.stderr):
                return {}
            raise SlurmCommandError(argv, result.returncode, result.stderr)
        statuses = parse_squeue_lines(result.stdout, ids)
        ending = [status for status in statuses.values() if status.needs_details]
        if ending:
            for status in await asyncio.gather(*(self._details(status) for status in ending)):
                statuses[status.job_id] = status
        return statuses

    async def _details(self, status: SlurmJobStatus) -> SlurmJobStatus:
        """``status`` with its exit status from ``scontrol show job`` (as it is, if Slurm forgot it meanwhile)."""
        async with self._details_slots:
            result = await self._run(scontrol_job_argv(status.job_id), check=False)
        if result.returncode == 0:
            try:
                return parse_scontrol_job(result.stdout)
            except SlurmOutputError as e:
                log.warning("Could not read job %s's exit status: %s", status.job_id, e)
        return status

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        """One squeue call for every watched job per interval; each finished (or forgotten) job is reported."""
        misses: dict[str, int] = {}
        while self._waiting:
            ids = [j for j, f in self._waiting.items() if not f.done()]
            try:
                statuses = await self._statuses(ids)
            except (SlurmCommandError, ValueError) as e:
                log.warning("Could not ask Slurm about %d jobs: %s", len(ids), e)
                await asyncio.sleep(self.poll_interval)
                continue
            for job_id in ids:
                status = statuses.get(job_id)
                if status is not None:
                    self._last[job_id] = status
                    misses.pop(job_id, None)
                    if status.finished:
                        self._resolve(job_id, status)
                else:
                    # Slurm forgot it (it ended over MinJobAge ago, or while we were down).
                    misses[job_id] = misses.get(job_id, 0) + 1
                    if misses[job_id] >= 3:
                        self._resolve(job_id, self._last.get(job_id))
            await asyncio.sleep(self.poll_interval)

    def _resolve(self, job_id: str, status: SlurmJobStatus | None) -> None:
        future = self._waiting.pop(job_id, None)
        self._last.pop(job_id, None)
        if future is not None and not future.done():
            future.set_result(status if status is None or status.finished else None)

    def _exit_status(self, status: SlurmJobStatus | None, paths: RunPaths) -> ExitStatus:
        (paths.control / SUBMITTED).unlink(missing_ok=True)  # this attempt is over
        if status is None:
            return ExitStatus("lost", None)
        try:
            phase = (paths.root / ".nothing-phase").read_text().strip()
        except OSError:
            phase = "entry"
        if status.state == "NODE_FAIL":
            return ExitStatus("node", None)
        if status.state == "OUT_OF_MEMORY":
            return ExitStatus("oom", status.exit_code, 0)
        if status.state == "TIMEOUT":
            return ExitStatus("timeout", None)
        if status.signal is not None:
            return ExitStatus("killed", -status.signal)
        if phase != "requirements" and status.state != "CANCELLED":
            failed = first_failed_rank(_read_rank_exits(paths.root / RANKS_DIR))
            if failed is not None:
                return failed
        return ExitStatus("requirements" if phase == "requirements" else "entry", status.exit_code)


def _forget_ahead_files(paths: list[RunPaths]) -> None:
    for p in paths:
        (p.control / AHEAD).unlink(missing_ok=True)


def _read_ahead(paths: RunPaths) -> str:
    try:
        return (paths.control / AHEAD).read_text().strip()
    except OSError:
        return ""


def first_failed_rank(records: Iterable[Mapping]) -> ExitStatus | None:
    """The status of the rank of a distributed run that failed first, from the ranks' exit records
    (``slurmrank.py``), or None if none failed.  Ranks that died of SIGTERM or SIGINT were stopped (by
    us, or by srun after another rank failed) and are only blamed when no rank failed otherwise."""
    records = list(records)
    failed = sorted((r for r in records if r.get("exit_code")), key=lambda r: r.get("at", 0.0))
    if not failed:
        return None
    stopped = (-signal.SIGTERM, -signal.SIGINT)
    first = next((r for r in failed if r["exit_code"] not in stopped), None)
    if first is None:
        return ExitStatus("entry", failed[0]["exit_code"], detail="every rank was stopped")
    what, number = ("rank", first["rank"]) if "rank" in first else ("node", first.get("node_rank", 0))
    return ExitStatus("entry", first["exit_code"], detail=f"{what} {number} on {first['node']}")


def _read_rank_exits(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.glob("*.exit.json")):
        try:
            record = json.loads(path.read_text())
            if isinstance(record, dict) and isinstance(record.get("exit_code"), int):
                records.append(record)
        except (OSError, ValueError):
            continue
    return records


def task_file_content(entry: Mapping) -> bytes:
    """One task of :func:`runenv.rank_plan` as ``slurmrank.py`` reads it without ``json``: NUL-ended fields,
    node, node rank, local rank, ``rank`` or ``node`` (a torchrun launcher is named by its node) and its number,
    the count of environment entries, the ``NAME=value`` entries, then the command line."""
    env = entry["env"]
    what, number = ("rank", int(env["RANK"])) if "RANK" in env else ("node", int(entry["node_rank"]))
    fields = [entry["node"], str(entry["node_rank"]), str(entry["local_rank"]), what, str(number), str(len(env)),
              *(f"{name}={value}" for name, value in env.items()), *entry["argv"]]
    if not entry["argv"] or any("\0" in field for field in fields):
        raise ValueError(f"task {entry.get('task')} cannot be written: no command, or a NUL in it")
    return b"".join(field.encode("utf-8", "surrogateescape") + b"\0" for field in fields)


def _write_plan(folder: Path, plan: list[dict], uid: int | None, gid: int | None) -> None:
    """The ranks' folder (the run's account's: the ranks write their logs there) with the plan in it: the whole
    as ``plan.json``, and each task's part as ``task-N.plan`` (:func:`task_file_content`).

    The run's folder is its user's: nothing in it is followed if it is a link (folder descriptors,
    ``O_NOFOLLOW``), so a planted link never makes the scheduler write or hand over anything else.
    A requeued run starts again: the exit records of its earlier attempt must not speak for the new one.
    """
    parent = os.open(folder.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.mkdir(folder.name, 0o700, dir_fd=parent)
        except FileExistsError:
            pass
        fd = os.open(folder.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        owner = (uid, gid if gid is not None else -1) if uid is not None and uid != os.geteuid() else None
        if owner:
            os.fchown(fd, *owner)
        for name in os.listdir(fd):
            if name.endswith((".exit.json", ".tmp")):
                os.unlink(name, dir_fd=fd)
        files = [(f"task-{entry['task']}.plan", task_file_content(entry)) for entry in plan]
        for name, content in files + [("plan.json", json.dumps(plan, indent=1).encode())]:
            out = os.open(f".{name}.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
            with os.fdopen(out, "wb") as f:
                if owner:
                    os.fchown(f.fileno(), *owner)
                f.write(content)
            os.replace(f".{name}.tmp", name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
