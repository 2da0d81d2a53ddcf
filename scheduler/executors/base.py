"""The life cycle every executor shares; engines fill in a few primitives (template method, as BatchSpawner).

An executor is told to launch a run on the node(s) the policy chose, and later
tells the dispatcher, through ``on_exit``, how that run ended.  It can also
signal a run and, after a restart of the scheduler, re-attach to a run that kept
going meanwhile.  What it hands back for a started run is an opaque reference
(``ref``) that it alone interprets; the dispatcher stores it as text
(``ref_text``/``parse_ref``).  Engines that own their machines (Slurm,
Kubernetes) also tell the scheduler which nodes exist and in which state
(``inventory``).
"""

from __future__ import annotations

import asyncio
import json
import signal as signals
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from traitlets import Float
from traitlets.config import LoggingConfigurable

from ..runenv import RunLaunch, RunPaths


@dataclass(frozen=True)
class ProcessRef:
    """Names a run's process across scheduler restarts (a pid alone can be reused).

    ``run_id`` names the rest of the job (its cgroup, where the engine has one).
    """

    pid: int
    start: str
    run_id: int = 0


@dataclass(frozen=True)
class ExitStatus:
    """How a run's process ended.

    ``phase`` is ``entry`` (the entry point ran), ``requirements`` (installing
    requirements.txt failed), ``killed`` (the run's parent died by a signal before
    it could record anything), ``oom`` (the kernel killed a process of the run at
    its memory limit, ``memory_limit`` bytes) or ``lost`` (the process vanished
    while nobody watched).  ``detail`` names the process of a distributed run the
    status is about (``rank 1 on node2``); it leads the description.
    """

    phase: str
    exit_code: int | None
    memory_limit: int = 0
    detail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.phase == "entry" and self.exit_code == 0

    def describe(self) -> str:
        text = self._describe()
        return f"{self.detail}: {text}" if self.detail else text

    def _describe(self) -> str:
        if self.phase == "requirements":
            return f"installing requirements.txt failed (pip exited with code {self.exit_code}); see the log"
        if self.phase == "lost":
            return "the run's process ended while the scheduler was not watching and left no exit status"
        if self.phase == "oom":
            return "killed: out of memory" + (f" (limit {format_bytes(self.memory_limit)})" if self.memory_limit else "")
        if self.phase == "node":
            return "the node it ran on failed"
        if self.phase == "timeout":
            return "killed by the cluster at its time limit"
        code = self.exit_code
        signal_number = self.signal
        if signal_number is not None:
            try:
                name = signals.Signals(signal_number).name
            except ValueError:
                name = f"signal {signal_number}"
            return f"killed by {name}" + (f" (exit status {code})" if code and code > 0 else "")
        return f"exited with code {code}"

    @property
    def signal(self) -> int | None:
        """The signal that ended the process: a negative code from waitpid, or 128+N from the shell."""
        code = self.exit_code
        if code is None:
            return None
        if code < 0:
            return -code
        if self.phase == "entry" and 128 < code < 128 + 65:
            return code - 128
        return None


def format_bytes(size: int) -> str:
    """``8589934592`` → ``8 GiB``; ``1610612736`` → ``1.5 GiB``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class NodeInfo:
    """A node as an engine reports it: ``state`` is ``up``, ``drained`` (no new runs; running ones go on)
    or ``down`` (its runs are lost), with the engine's reason."""

    name: str
    gpus: int
    cpus: int
    memory_bytes: int
    state: str = "up"
    gpu_model: str = ""
    reason: str = ""


ExitCallback = Callable[[int, ExitStatus], Awaitable[None]]


class EngineRefused(RuntimeError):
    """The engine cannot do what was asked now; the message is its reason, for a person."""


def read_exit_file(path: Path) -> ExitStatus | None:
    """The exit record a run's parent left (written whole, then renamed into place), or None."""
    try:
        record = json.loads(path.read_text())
        return ExitStatus(str(record.get("phase", "entry")), int(record["exit_code"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
        return None


class Executor(LoggingConfigurable):
    """Template for executors: subclasses implement ``_start``, ``_wait``, ``_alive`` and ``_signal``."""

    reattach_poll_interval = Float(
        0.5,
        help="""Seconds between checks on a re-attached run's process.

        Runs started by this scheduler process are awaited directly; runs that were
        already going when it started are polled this often.
        """,
    ).tag(config=True)

    def __init__(self, on_exit: ExitCallback, **kwargs):
        super().__init__(**kwargs)
        self.on_exit = on_exit
        self._watchers: dict[int, asyncio.Task] = {}

    async def launch(self, launch: RunLaunch, paths: RunPaths, python: str) -> ProcessRef:
        handle, ref = await self._start(launch, paths, python)
        self._watch(launch.run_id, self._wait(handle, paths))
        return ref

    def reattach(self, run_id: int, ref: ProcessRef | None, paths: RunPaths) -> None:
        """Watch a run this process did not start; reports at once if it is gone."""
        self._watch(run_id, self._poll_until_gone(ref, paths))

    async def signal(self, ref: ProcessRef, sig: int) -> None:
        if await self._alive(ref):
            await self._signal(ref, sig)

    async def leftovers(self, run_id: int) -> bool:
        """Kill whatever of a run is left after a start that failed; True if anything was."""
        return False

    @property
    def submits_ahead(self) -> bool:
        """Whether the engine can be given the run that nodes are kept for before they are free, to start it
        itself the moment the runs on them end (``submit_ahead_of``); the others are started once we see them end."""
        return False

    async def submit_ahead_of(self, launch: RunLaunch, paths: RunPaths, python: str, after: list) -> bool:
        """Give the engine ``launch`` to start once the jobs ``after`` (their references) have ended; a later
        ``launch`` of the same run on the same nodes takes that job over.  False: not submitted."""
        return False

    async def withdraw_ahead(self, run_id: int, paths: RunPaths) -> None:
        """End the run's job submitted ahead, whatever its state (the run still waits)."""

    async def reclaim_ahead(self, runs: list[tuple[int, RunPaths]]) -> dict[int, tuple[str, ...]]:
        """After a restart, the jobs a previous life submitted ahead for these waiting runs: those the engine has
        started are kept for the runs' starts (their nodes returned), the others end."""
        return {}

    def node_address(self, node: str) -> str:
        """Where the platform reaches a process of a run on ``node`` (a model server's port): this machine for
        engines whose runs are local processes; an engine with nodes of its own says."""
        return "127.0.0.1"

    @property
    def reads_inputs(self) -> bool:
        """Whether runs can read root's read-only inputs (datasets, models): bound where the engine binds, else
        hard-linked into the run's folder on the data folder the engine's nodes share (local, Slurm)."""
        return True

    @property
    def listens_beyond_loopback(self) -> bool:
        """Whether a run's server must listen on every interface to be reached (it runs on another machine)."""
        return False

    @property
    def readonly_binds(self) -> bool:
        """Whether this engine binds ``RunLaunch.readonly_binds`` read-only into the run; where it does not,
        inputs such as ``--checkpoint`` are hard-linked into the run's own folder instead."""
        return False

    async def inventory(self) -> list[NodeInfo] | None:
        """The engine's nodes, or None where the scheduler's own machine is the only node (local)."""
        return None

    def pending_reason(self, ref) -> str:
        """The engine's reason while it has not started a job it was given (Slurm's ``Resources``), else ""."""
        return ""

    def ref_text(self, ref) -> str:
        """The reference as stored in the database."""
        return f"{ref.pid} {ref.start}"

    def parse_ref(self, run_id: int, text: str | None):
        """The reference stored by ``ref_text`` (None if there is none)."""
        if not text:
            return None
        pid, _, start = text.partition(" ")
        return ProcessRef(int(pid), start, run_id)

    async def recover(self, run_id: int, paths: RunPaths):
        """The job of a run whose start was interrupted before its reference was stored, or None if it never began."""
        return None

    def set_scope(self, data_dir: str) -> None:
        """Called once with the scheduler's data folder, to keep this scheduler's jobs apart from others'."""

    def notebook_placement(self) -> str | None:
        """The node notebook servers' GPU holds go on, where the engine owns the nodes and notebooks run on
        one machine (the hub's); None where the policy may choose any node (the local engine: its one node).
        Raises :class:`EngineRefused` (with the reason) where notebooks cannot hold GPUs at all."""
        return None

    async def hold_gpus(self, key: str, node: str, gpus: int, chosen: tuple[int, ...]) -> tuple[int, ...]:
        """Reserve ``gpus`` GPUs on ``node`` for a notebook (``key``) in the engine too, so that nothing the
        engine starts gets them; returns the device indices the notebook uses (``chosen``, the policy's, where
        the scheduler alone hands out devices).  Raises :class:`EngineRefused` with the engine's reason."""
        return chosen

    async def release_gpus(self, key: str) -> None:
        """Give back what :meth:`hold_gpus` reserved for ``key`` (nothing happens if it holds nothing)."""

    def tracking_note(self) -> str:
        """A sentence for the run's events when this engine cannot hold all of a run's processes, else ""."""
        return ""

    def _watch(self, run_id: int, waiter: Awaitable[ExitStatus]) -> None:
        task = asyncio.ensure_future(self._report(run_id, waiter))
        self._watchers[run_id] = task
        task.add_done_callback(lambda t, run_id=run_id: self._watchers.pop(run_id, None))

    async def _report(self, run_id: int, waiter: Awaitable[ExitStatus]) -> None:
        try:
            status = await waiter
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("Lost track of run %s", run_id)
            status = ExitStatus("lost", None)
        await self.on_exit(run_id, status)

    async def _poll_until_gone(self, ref: ProcessRef | None, paths: RunPaths) -> ExitStatus:
        while ref is not None and await self._alive(ref):
            await asyncio.sleep(self.reattach_poll_interval)
        return await self._finish(ref, read_exit_file(paths.exit_file) or ExitStatus("lost", None))

    async def _finish(self, ref: ProcessRef | None, status: ExitStatus) -> ExitStatus:
        """After the run's main process ended: end what is left of the job; the status as it should be told."""
        return status

    async def stop(self) -> None:
        """Stop watching (the runs themselves keep going)."""
        tasks = list(self._watchers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # The primitives an engine provides.
    async def _start(self, launch: RunLaunch, paths: RunPaths, python: str) -> tuple[object, ProcessRef]:
        raise NotImplementedError

    async def _wait(self, handle: object, paths: RunPaths) -> ExitStatus:
        raise NotImplementedError

    async def _alive(self, ref: ProcessRef) -> bool:
        raise NotImplementedError

    async def _signal(self, ref: ProcessRef, sig: int) -> None:
        raise NotImplementedError
