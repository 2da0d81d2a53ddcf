"""The live scheduler: keeps the active runs, asks the policy, tells the executor.

Every event (a submission, a cancel, a process that ended) wakes one scheduling
pass; a pass snapshots the active runs, calls the pure policy, records the
decisions and launches what it decided.  Over a long queue the policy runs in a
worker thread while the event loop goes on serving requests, and each start it
decided is checked against the state found afterwards (the run still waits, its
GPUs are still free) before it is recorded.  Runs that were going when the service
last stopped are re-attached at start.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import secrets
import signal
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from . import store
from .db import Database
from sqlalchemy.exc import InterfaceError, OperationalError

from .executors.base import EngineRefused, Executor, ExitStatus, NodeInfo, ProcessRef
from ..common.backoff import Backoff
from .helper_process import HelperGone, HelperProcess
from .policy import Allocation, ClusterSnapshot, Node, PendingRun, Policy, best_fit, free_resources
from .quotas import Quotas
from .rundir import (
    create_run_dir, give_to_user, hand_over_checkpoints, link_readonly_inputs, prepare_checkpoint_input,
    prepare_dataset_mounts, remove_run_dir, stage_source,
)
from .runenv import RunLaunch, RunPaths
from .snapshot import SnapshotLimits
from .states import HOLDING, RunState, StopCause, check_transition
from .usage import UsageLedger

log = logging.getLogger(__name__)
S = RunState


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def epoch(value: datetime) -> float:
    """Seconds since the epoch of a naive UTC datetime (as stored in the database)."""
    return value.replace(tzinfo=timezone.utc).timestamp()


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a burst of short-lived objects (a pass's ranks and queue
    entries, a view's sort keys over 10,000 runs).  Collected as they come, they outlive a few young
    collections, get promoted, and set off a full collection of the whole heap every few bursts: tens to
    hundreds of ms holding the GIL, and the event loop with it.  Paused, reference counting frees them when
    the burst is done.  Nested uses leave it to the outermost to resume."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class RunNotActive(Exception):
    """The run has already ended."""


EXTERNAL_NODE = "(external)"

# A pass whose policy call took longer than this is followed by a pause as long as
# that call (at most PASS_COALESCE_MAX) before the next pass: passes then take at
# most half of the event loop, however long the queue.
PASS_COALESCE_ABOVE = 0.002
PASS_COALESCE_MAX = 0.05
# A pass decided off the loop applies the queue's new positions in slices of this many runs (each slice about a
# millisecond: a request waits for one at most).
WAITING_SLICE = 500


class NotebookGpusUnavailable(Exception):
    """A notebook asked for GPUs that cannot be given now; the message says why."""


@dataclass
class NotebookHold:
    """GPUs held by one notebook server for as long as it runs (never preempted)."""

    id: int
    owner: str
    server: str
    group: str
    node: str
    gpus: tuple[int, ...]
    allocated_at: datetime
    release_token: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "server": self.server, "group": self.group, "node": self.node,
                "gpus": list(self.gpus), "allocated_at": self.allocated_at.isoformat() + "Z"}


@dataclass
class ActiveRun:
    """What the dispatcher keeps in memory about a run that has not ended."""

    id: int
    owner: str
    entry_point: str
    args: tuple[str, ...]
    hyperparameters: dict
    experiment: str
    group: str
    preemptible: bool
    gpus: int
    cpus: int
    memory_bytes: int
    priority: int
    max_seconds: int | None
    submitted_at: datetime
    state: RunState
    reason: str
    run_dir: str
    node: str | None = None
    assigned_gpus: tuple[int, ...] = ()
    # A multi-node run: its shape and every node the policy chose with its GPUs (``node`` and
    # ``assigned_gpus`` are the first of them); empty for a run on one node.
    nodes: int = 1
    gpus_per_node: int = 0
    procs_per_node: int | None = None
    torchrun: bool = False
    placement: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # --checkpoint RUN[:NAME]: whose checkpoints the run starts from.
    checkpoint_run: int | None = None
    checkpoint_name: str | None = None
    datasets: tuple = ()  # [{"name", "dataset_id", "dataset", "version", "path"}]
    # "train", or "serving"/"batch": a model server replica or a batch inference job (``parent_id``: whose).
    kind: str = "train"
    parent_id: int | None = None
    started_at: datetime | None = None
    process: Any = None  # the executor's reference to the run's job (``Executor.parse_ref``)
    job_text: str | None = None
    stop_cause: StopCause | None = None
    stopped_by: str | None = None
    position: int | None = None
    launched: asyncio.Event = field(default_factory=asyncio.Event)
    submitted_row: Any = field(default=None, repr=False)
    zombie: Any = None
    estimated_start: float | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    # The API's view of an end not committed yet (``exit_code``, ``ended_at``), set by ``Dispatcher._end``.
    ending: dict = field(default_factory=dict)
    _pending: PendingRun | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_row(cls, row) -> ActiveRun:
        run = cls(
            id=row.id, owner=row.owner, entry_point=row.entry_point, args=tuple(row.args or ()),
            hyperparameters=dict(row.hyperparameters or {}), experiment=row.experiment, group=row.group or "",
            preemptible=bool(row.preemptible), gpus=row.gpus,
            cpus=row.cpus, memory_bytes=row.memory_bytes, priority=row.priority, max_seconds=row.max_seconds,
            submitted_at=row.submitted_at, state=row.state, reason=row.reason, run_dir=row.run_dir,
            node=row.node, assigned_gpus=tuple(row.assigned_gpus or ()), started_at=row.started_at,
            job_text=getattr(row, "job_ref", None),
            stop_cause=row.stop_cause,
            nodes=getattr(row, "nodes", None) or 1, gpus_per_node=getattr(row, "gpus_per_node", None) or 0,
            procs_per_node=getattr(row, "procs_per_node", None), torchrun=bool(getattr(row, "torchrun", False)),
            placement=tuple((str(n), tuple(g)) for n, g in (getattr(row, "placement", None) or ())),
            checkpoint_run=getattr(row, "checkpoint_run", None), checkpoint_name=getattr(row, "checkpoint_name", None),
            datasets=tuple(getattr(row, "datasets", None) or ()),
            kind=getattr(row, "kind", None) or "train", parent_id=getattr(row, "parent_id", None),
        )
        if run.state != S.CREATE_IN_PROGRESS:
            run.launched.set()
        return run

    @property
    def placements(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Every (node, GPUs) the run holds: the whole placement, or its one node."""
        if self.placement:
            return self.placement
        return ((self.node, self.assigned_gpus),) if self.node else ()

    @property
    def held_gpus(self) -> int:
        return sum(len(gpus) for _, gpus in self.placements)

    @property
    def started_or_submitted(self) -> datetime:
        """When it started, else when it was submitted: the views order the runs holding GPUs by it."""
        return self.started_at or self.submitted_at

    @cached_property
    def submitted_epoch(self) -> float:
        """``submitted_at`` in seconds since the epoch (every pass reads it for every queued run)."""
        return epoch(self.submitted_at)

    @cached_property
    def paths(self) -> RunPaths:
        return RunPaths(Path(self.run_dir))

    def pending(self) -> PendingRun:
        """The run as the policy sees it while queued, made once and again only after its priority changed
        (the one field that changes while a run waits): a pass over 10,000 queued runs built them all each time."""
        cached = self._pending
        if cached is None or cached.priority != self.priority:
            cached = self._pending = PendingRun(
                self.id, self.owner, self.gpus, self.cpus, self.memory_bytes, self.priority, self.submitted_epoch,
                group=self.group, preemptible=self.preemptible, max_seconds=self.max_seconds, nodes=self.nodes,
                gpus_per_node=self.gpus_per_node)
        return cached

    def live_fields(self) -> dict[str, Any]:
        """Fields that change without a database write (queue position and reason)."""
        estimated = None
        if self.estimated_start is not None and self.state == S.QUEUED:
            estimated = datetime.fromtimestamp(self.estimated_start, timezone.utc).isoformat().replace("+00:00", "Z")
        fields = {"state": self.state.value, "reason": self.reason, "queue_position": self.position,
                  "estimated_start": estimated, "zombie": self.zombie.to_dict() if self.zombie else None}
        # Between ``_end`` and its commit the row still says RUNNING: the end shows whole, with the exit code and
        # end time the commit will store ("COMPLETE" with no exit code was once answered).
        fields.update(self.ending)
        return fields


class Dispatcher:
    def __init__(
        self,
        db: Database,
        executor: Executor,
        policy: Policy,
        nodes: list[Node],
        runs_dir: Path,
        python: str,
        snapshot_limits: SnapshotLimits,
        kill_grace_seconds: float = 10.0,
        group_usage: UsageLedger | None = None,
        user_usage: UsageLedger | None = None,
        quotas: Quotas | None = None,
        accounts=None,
    ):
        self.db = db
        # Whose Unix account each user's runs execute as (``UnixAccounts``); None: the scheduler's own.
        self.accounts = accounts
        # Two helper processes, so that starting runs never waits behind a burst of
        # submissions: one for the submissions' files, one that starts the runs.
        self.helper = HelperProcess()
        self.launcher = HelperProcess()
        self.executor = executor
        self.executor.helper = self.launcher
        self.executor.on_exit = self._on_exit
        self.executor.set_scope(str(runs_dir))
        self.policy = policy
        self.nodes = nodes
        self.runs_dir = runs_dir
        self.python = python
        # The serving runtime's interpreter (KServe and the frameworks it serves), for model-server
        # replicas and batch inference jobs; set by the service (``NothingScheduler.runtime_python``).
        self.runtime_python = python
        self.snapshot_limits = snapshot_limits
        self.kill_grace_seconds = kill_grace_seconds
        self.active: dict[int, ActiveRun] = {}
        # Decayed usage per group and per user, for fair share and GPU-hour budgets.
        self.group_usage = group_usage or UsageLedger()
        self.user_usage = user_usage or UsageLedger()
        self.quotas = quotas or Quotas()
        self.notebooks: dict[tuple[str, str], NotebookHold] = {}
        # The engine's nodes and their states, where the executor has an inventory (Slurm); the
        # policy is given only the nodes that are up.
        self.node_infos: list[NodeInfo] | None = None
        self.inventory_interval = 5.0
        self._inventory_task: asyncio.Task | None = None
        # Called with a run's id once its end is committed (the tracker reads its files a last time).
        self.run_ended: list[Callable[[int], None]] = []
        # Called with each scheduling pass's duration in seconds (the service's Prometheus histogram).
        self.pass_done: list[Callable[[float], None]] = []
        # Bumped on every change the views show (a submission, a transition, a run leaving ``active``, a pass
        # that moved the queue, notebook GPUs): the API's ETags and view caches are keyed on it, and each of
        # ``view_changed`` is called (the open view streams, ``api.views.ViewStreams``; it must return at once).
        self.view_changed: list[Callable[[], None]] = []
        self._view_version = 0
        self._next_id = 1
        self._decide_seconds = 0.0
        # A pass over at least this many active runs asks the policy in a worker thread (``_decide``).
        self.decide_in_thread_above = 500
        self._decided_off_loop = False
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        # The run the policy keeps nodes for, given to the engine ahead (``Executor.submit_ahead_of``): its id,
        # those nodes and its folders; at most one at a time.
        self._ahead: tuple[int, tuple[str, ...], RunPaths] | None = None
        self._ahead_lock = asyncio.Lock()

    @property
    def view_version(self) -> int:
        return self._view_version

    @view_version.setter
    def view_version(self, value: int) -> None:
        self._view_version = value
        for listener in self.view_changed:
            listener()

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        control = self.runs_dir.parent / "control"
        control.mkdir(exist_ok=True)
        # Users may pass through to their own run folders (0700 each), and see nothing else.
        for folder, mode in ((self.runs_dir.parent, 0o711), (self.runs_dir, 0o711), (control, 0o700)):
            folder.chmod(mode)
        await asyncio.gather(self.helper.start(), self.launcher.start())
        infos = await self.executor.inventory()
        if infos is not None:
            self._apply_inventory(infos)
            self._inventory_task = asyncio.ensure_future(self._watch_inventory())
        # Run ids are handed out here (this service is the only writer of runs), so a
        # submission knows its folder before its row is written.
        self._next_id = (await self.db.run(store.max_run_id) or 0) + 1
        since = utcnow() - timedelta(seconds=max(4 * self.group_usage.half_life, self.group_usage.period))
        for owner, group, gpus, started, ended, finished in await self.db.run(store.usage_history, since):
            self._charge(owner, group, gpus, started, ended, finished)
        for h in await self.db.run(store.notebook_holds):
            self.notebooks[(h.owner, h.server)] = NotebookHold(h.id, h.owner, h.server, h.group, h.node,
                                                               tuple(h.gpus), h.allocated_at, h.release_token)
        rows = await self.db.run(store.active_runs)
        for row in rows:
            run = ActiveRun.from_row(row)
            run.process = self.executor.parse_ref(run.id, run.job_text)
            self.active[run.id] = run
            if run.state == S.CREATE_IN_PROGRESS:
                try:
                    await self._settle_interrupted_start(run)
                except Exception:  # noqa: BLE001 - one run must never keep the service from starting
                    log.exception("Run %s: could not settle its interrupted start; it keeps its GPUs and is "
                                  "settled at the next start", run.id)
                    run.launched.set()
                    continue
            if run.state.holds_gpus:
                run.process = run.process or await self.executor.recover(run.id, run.paths)
                log.info("Re-attaching to run %s (%s, job %s)", run.id, run.state,
                         self.executor.ref_text(run.process) if run.process else None)
                self.executor.reattach(run.id, run.process, run.paths)
                self._arm_timers(run)
        if self.executor.submits_ahead:
            kept = await self.executor.reclaim_ahead([(r.id, r.paths) for r in self.active.values()
                                                      if r.state == S.QUEUED])
            for run_id, nodes in kept.items():  # one at most: one run holds the reservation
                if self._ahead is None:
                    self._ahead = (run_id, nodes, self.active[run_id].paths)
                else:
                    await self.executor.withdraw_ahead(run_id, self.active[run_id].paths)
        self._loop_task = asyncio.ensure_future(self._loop())
        self.wake()

    async def _settle_interrupted_start(self, run: ActiveRun) -> None:
        """A run caught between allocation and launch when the service last stopped."""
        t = await self._adopt_or_requeue(run, "the scheduler stopped")
        await self._persist([t])
        run.launched.set()

    async def _adopt_or_requeue(self, run: ActiveRun, what: str) -> store.Transition:
        """A start whose outcome the platform lost: adopt the process if its pid file names it, else requeue.

        The launcher writes the pid file before it answers, and a process that got
        as far as its cgroup without one is found there: a run that started is
        adopted, never started twice, and its GPUs are never shared.
        """
        ref = await self.executor.recover(run.id, run.paths)
        now = utcnow()
        if ref is not None:
            run.process, run.started_at = ref, run.started_at or now
            log.info("Run %s: %s during its start; adopting its job %s", run.id, what, self.executor.ref_text(ref))
            return self._transition(run, S.RUNNING, f"process started ({what} during the start; re-attached)", now,
                                    started_at=run.started_at, **self._ref_fields(ref))
        killed = await self.executor.leftovers(run.id)
        log.warning("Run %s: %s before its process was started; requeued%s", run.id, what,
                    " (its leftover processes were killed)" if killed else "")
        t = self._transition(run, S.QUEUED, f"{what} before the run's process was started; requeued", now,
                             node=None, assigned_gpus=[], started_at=None, pid=None, process_start=None,
                             job_ref=None, placement=None)
        run.node, run.assigned_gpus, run.process, run.started_at, run.placement = None, (), None, None, ()
        return t

    async def _persist(self, transitions: list[store.Transition]) -> None:
        """Commit state changes, retrying while the database refuses (disk full, lock held past the timeout).

        The in-memory state already holds the change and stays the truth the API
        shows and the GPU accounting uses; a run that ended leaves ``active`` only
        once its end is committed, so both agree while the commit is retried.
        """
        delays = Backoff(initial=0.05, maximum=5.0).delays()
        while True:
            try:
                await self.db.run(store.apply_transitions, transitions)
                break
            except (OperationalError, InterfaceError) as e:
                delay = next(delays)
                log.error("Could not commit %d state change(s) (%s); retrying in %.2fs",
                          len(transitions), str(e).splitlines()[0], delay)
                await asyncio.sleep(delay)
        for t in transitions:
            if t.to_state.is_terminal:
                run = self.active.get(t.run_id)
                if run is not None and run.state.is_terminal:
                    self.active.pop(t.run_id, None)
                    self.view_version += 1
                    for listener in self.run_ended:
                        listener(t.run_id)

    def _unusable_nodes(self) -> str:
        """The engine's nodes the policy cannot use now, with the engine's reason ("" when all are up)."""
        down = [f"{i.name} is {i.state} ({i.reason})" if i.reason else f"{i.name} is {i.state}"
                for i in self.node_infos or () if i.state != "up"]
        return "not usable now: " + ", ".join(down) if down else ""

    def _apply_inventory(self, infos: list[NodeInfo]) -> None:
        before = {i.name: i.state for i in self.node_infos or ()}
        self.node_infos = infos
        self.nodes = [Node(i.name, tuple(range(i.gpus)), i.cpus, i.memory_bytes) for i in infos if i.state == "up"]
        for info in infos:
            if before.get(info.name, "up") != info.state:
                log.warning("Node %s is now %s (%s)", info.name, info.state, info.reason or "no reason given")
        if before != {i.name: i.state for i in infos}:
            self.wake()

    async def _watch_inventory(self) -> None:
        """Keep the nodes' states current, and show the engine's reason on runs it has not started yet."""
        while True:
            await asyncio.sleep(self.inventory_interval)
            try:
                self._apply_inventory(await self.executor.inventory())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the engine is unreachable for now: keep the last inventory
                log.warning("Could not read the node inventory: %s", e)
            for run in self.active.values():
                pending = run.process is not None and run.state == S.RUNNING and \
                    self.executor.pending_reason(run.process)
                if pending:
                    job = getattr(run.process, "job_id", None) or self.executor.ref_text(run.process)
                    run.reason = f"submitted as job {job}; the cluster has not " \
                                 f"started it yet: {pending}"
                    self._replace_if_unusable(run, job)

    def _replace_if_unusable(self, run: ActiveRun, job: str) -> None:
        """A job the engine holds back on a node that is no longer up goes back to the policy, to be placed anew."""
        states = {i.name: i for i in self.node_infos or ()}
        lost = [states[n] for n, _ in run.placements if n in states and states[n].state != "up"]
        if lost:
            why = ", ".join(f"{i.name} is {i.state}" + (f" ({i.reason})" if i.reason else "") for i in lost)
            log.info("Run %s: job %s has not started and %s; placing it again", run.id, job, why)
            self._spawn(self._request_stop(run, StopCause.PREEMPT,
                                           f"the cluster had not started job {job} and {why}: placing it again"))

    async def stop(self) -> None:
        if self._inventory_task:
            self._inventory_task.cancel()
            await asyncio.gather(self._inventory_task, return_exceptions=True)
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for run in self.active.values():
            for timer in run.timers:
                timer.cancel()
        await self.executor.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(self.helper.stop(), self.launcher.stop())

    def wake(self) -> None:
        self._wake.set()

    def _wake_at(self, at: float | None) -> None:
        """Pass again at ``at`` (epoch seconds) even if nothing happens, as the policy asked
        (``Decisions.next_pass_at``: a run changes service class, estimates go stale)."""
        timer = getattr(self, "_pass_timer", None)
        if timer is not None:
            timer.cancel()
        self._pass_timer = None
        if at is not None:
            delay = min(max(at - epoch(utcnow()), 1.0), 3600.0)
            self._pass_timer = asyncio.get_running_loop().call_later(delay, self.wake)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            # Let callbacks that are already due (other submissions, other exits)
            # land first, so that one pass serves them all.
            await asyncio.sleep(0)
            self._wake.clear()
            started = time.perf_counter()
            try:
                await self._schedule_pass()
                for observe in self.pass_done:
                    observe(time.perf_counter() - started)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Scheduling pass failed; retrying on the next event")
                await asyncio.sleep(1)
                self.wake()
            if self._decide_seconds > PASS_COALESCE_ABOVE:
                # The policy took long (a long queue): leave the loop to requests for a
                # while, so that a burst of submissions costs a few passes, not one each.
                await asyncio.sleep(min(self._decide_seconds, PASS_COALESCE_MAX))

    # ------------------------------------------------------------------ submissions
    async def submit(self, values: dict[str, Any], archive: bytes) -> ActiveRun:
        """Check and store the snapshot and queue the run; nothing is left behind if either step fails.

        With ``values["client_key"]`` (the client's Idempotency-Key) a repeat of an
        earlier submission of the owner's, a retry, raises ``store.DuplicateSubmission``
        with the run the first one made, and makes nothing: across restarts (the key is
        in the database) and when both race (the later insert fails on the unique index).
        """
        key = values.get("client_key")
        if key is not None:
            existing = await self.db.run(store.run_by_client_key, values["owner"], key)
            if existing is not None:
                raise store.DuplicateSubmission(existing)
        run_id, self._next_id = self._next_id, self._next_id + 1
        paths = RunPaths(self.runs_dir / str(run_id))
        try:
            await self.helper.call_idempotent(create_run_dir, str(paths.root), archive,
                                        values["entry_point"], self.snapshot_limits)
            row = await self.db.run(store.insert_run, run_id, values, str(paths.root), str(paths.log), utcnow())
        except BaseException as e:
            await self.helper.call_idempotent(remove_run_dir, str(paths.root))
            if key is not None and store.is_integrity_error(e):
                existing = await self.db.run(store.run_by_client_key, values["owner"], key)
                if existing is not None:
                    raise store.DuplicateSubmission(existing) from None
            raise
        run = ActiveRun.from_row(row)
        run.submitted_row = row
        self.active[run.id] = run
        self.view_version += 1
        self.wake()
        return run

    # ------------------------------------------------------------------ scheduling
    def snapshot(self) -> ClusterSnapshot:
        return self._snapshot_of(list(self.active.values()), list(self.notebooks.values()), epoch(utcnow()),
                                 self.group_usage.snapshot(), self.user_usage.snapshot())

    def _snapshot_of(self, runs: list[ActiveRun], notebooks: list[NotebookHold], now: float, group_usage,
                     user_usage) -> ClusterSnapshot:
        """The policy's view of ``runs`` and ``notebooks`` (copies of the lists taken on the loop, so that a
        worker thread may walk them: a run changed meanwhile is seen either way, as a run changed during the
        policy's call is, and every decision is checked against the state found afterwards)."""
        running, queued = [], []
        queued_state = S.QUEUED
        for run in runs:
            if run.state is queued_state:  # most of a long queue: checked first
                queued.append(run.pending())
            elif run.state in HOLDING and run.node is not None:
                started = epoch(run.started_at) if run.started_at else 0.0
                for node, gpus in run.placements:  # one Allocation per node of the run
                    running.append(Allocation(
                        run.id, run.owner, node, gpus, run.cpus, run.memory_bytes, group=run.group,
                        preemptible=run.preemptible, started_at=started,
                        expected_end=started + run.max_seconds if run.max_seconds and run.started_at else None,
                        stopping=run.state == S.STOP_IN_PROGRESS))
        for hold in notebooks:
            # Negative ids keep notebooks apart from runs; the policy never preempts them.
            running.append(Allocation(-hold.id, hold.owner, hold.node, hold.gpus, group=hold.group,
                                      is_notebook=True, started_at=epoch(hold.allocated_at)))
        return ClusterSnapshot(tuple(self.nodes), tuple(running), tuple(queued), now,
                               group_usage=group_usage, user_usage=user_usage)

    def _charge(self, owner: str, group: str, gpus: int, started: datetime | None, ended: datetime,
                finished: bool) -> None:
        if not gpus or started is None:
            return
        for ledger, key in ((self.group_usage, group), (self.user_usage, owner)):
            ledger.charge(key, gpus, epoch(started), epoch(ended), finished)

    async def _decide(self):
        """The policy's decisions on a snapshot of now: in a worker thread once the queue is long.

        The policy is a pure function of the snapshot (frozen values), so it may run
        while the event loop goes on: a submission no longer waits for a whole pass
        over a long queue.  The walk over the active runs that makes the snapshot is
        done in that thread too, from copies of the lists (at 10,000 queued it was the
        longest step of a pass on the loop).  The loop may change the dispatcher's
        state meanwhile; ``_schedule_pass`` checks each decision against the state it
        finds afterwards.
        """
        parts = (list(self.active.values()), list(self.notebooks.values()), epoch(utcnow()),
                 self.group_usage.snapshot(), self.user_usage.snapshot())
        self._decided_off_loop = len(parts[0]) >= self.decide_in_thread_above  # active runs: nearly all queued
        if not self._decided_off_loop:
            return self.policy.decide(self._snapshot_of(*parts))
        return await asyncio.to_thread(lambda: self.policy.decide(self._snapshot_of(*parts)))

    def _still_free(self, start, holders: dict) -> bool:
        """Whether a start decided on a snapshot can still be made: the run waits, its nodes are usable and
        none of its GPUs was taken meanwhile (a notebook's GPUs are the only ones taken outside a pass)."""
        run = self.active.get(start.run_id)
        if run is None or run.state != S.QUEUED:
            return False
        usable = {n.name: n.gpus for n in self.nodes}
        return all(node in usable and all(g in usable[node] and (node, g) not in holders for g in gpus)
                   for node, gpus in start.all_placements)

    async def _apply_waiting(self, waiting) -> bool:
        """The policy's positions, reasons and estimates on the runs that still wait; whether any changed."""
        unusable = self._unusable_nodes()
        moved = False
        active, queued_state = self.active, S.QUEUED
        for i, entry in enumerate(waiting):
            run = active.get(entry.run_id)
            if run is not None and run.state is queued_state:
                reason = f"{entry.reason}; {unusable}" if unusable else entry.reason
                if run.position != entry.position or run.estimated_start != entry.estimated_start \
                        or run.reason != reason:
                    run.position, run.estimated_start, run.reason = entry.position, entry.estimated_start, reason
                    moved = True
            if i % WAITING_SLICE == WAITING_SLICE - 1 and self._decided_off_loop:
                await asyncio.sleep(0)  # a long queue: requests go in between (each entry is checked as it comes)
        return moved

    async def _schedule_pass(self) -> None:
        started = time.perf_counter()
        with paused_gc():  # a pass over a long queue makes tens of thousands of short-lived tuples
            decisions = await self._decide()
            self._decide_seconds = time.perf_counter() - started
            self._wake_at(getattr(decisions, "next_pass_at", None))
            moved = await self._apply_waiting(decisions.waiting)
            # Only the entries the rest of the pass reads outlive the pause: the others are freed now, not
            # promoted by the collector's first young collection after it.
            decisions = replace(decisions, waiting=tuple(e for e in decisions.waiting if e.reserved_nodes))
        if moved:
            self.view_version += 1
        if self.executor.submits_ahead:
            await self._withdraw_ahead_in_the_way(decisions.starts)
            self._spawn(self._plan_ahead(decisions))
        for preempt in getattr(decisions, "preemptions", ()):
            victim = self.active.get(preempt.run_id)
            if victim is not None and victim.state == S.RUNNING:
                log.info("Preempting run %s for run %s: %s", victim.id, preempt.for_run, preempt.reason)
                self._spawn(self._request_stop(victim, StopCause.PREEMPT, f"preempted: {preempt.reason}"))
        if not decisions.starts:
            return
        now = utcnow()
        transitions, starting = [], []
        holders = self.gpu_holders()
        for start in decisions.starts:
            if not self._still_free(start, holders):
                # Cancelled, or its GPUs went to a notebook while the policy ran: the next pass decides again.
                log.info("Run %s: not started as decided (its run or GPUs changed during the pass)", start.run_id)
                self.wake()
                continue
            run = self.active[start.run_id]
            run.node, run.assigned_gpus, run.position, run.estimated_start = start.node, start.gpus, None, None
            run.placement = start.placements if len(start.placements) > 1 else ()
            run.launched.clear()
            gpus = ",".join(map(str, start.gpus)) or "none"
            if run.placement:
                where = "starting on " + ", ".join(f"{n} (GPUs {','.join(map(str, g)) or 'none'})"
                                                   for n, g in run.placement)
                fields = dict(placement=[[n, list(g)] for n, g in run.placement])
            else:
                where, fields = f"starting on {start.node}, GPUs {gpus}", {}
            transitions.append(self._transition(run, S.CREATE_IN_PROGRESS, where, now, node=start.node,
                                                assigned_gpus=list(start.gpus), **fields))
            starting.append(run)
            for node, gpus in start.all_placements:
                holders.update(((node, g), run) for g in gpus)
        if not starting:
            return
        await self._persist(transitions)
        results = await asyncio.gather(*(self._launch(run) for run in starting), return_exceptions=True)
        now = utcnow()
        transitions = []
        note = self.executor.tracking_note()
        for run, result in zip(starting, results):
            if isinstance(result, HelperGone):
                transitions.append(await self._adopt_or_requeue(run, "the launcher process died"))
                if run.state == S.RUNNING:
                    self.executor.reattach(run.id, run.process, run.paths)
            elif isinstance(result, BaseException):
                log.error("Run %s failed to start: %s", run.id, result)
                await self.executor.leftovers(run.id)
                transitions.append(self._end(run, S.CREATE_FAILED, f"could not start the run's process: {result}", now))
            else:
                run.process, run.started_at = result, now
                transitions.append(self._transition(run, S.RUNNING, "process started" + (f"; {note}" if note else ""),
                                                    now, started_at=now, **self._ref_fields(result)))
        await self._persist(transitions)
        for run in starting:
            run.launched.set()
            if run.state == S.RUNNING:
                self._arm_timers(run)
        if any(r.state in (S.CREATE_FAILED, S.QUEUED) for r in starting):
            self.wake()

    async def account(self, owner: str):
        """The Unix account runs of ``owner`` execute as, or None where runs keep the scheduler's own user."""
        if self.accounts is None or not self.accounts.enabled:
            return None
        return await asyncio.to_thread(self.accounts.account, owner)

    # ------------------------------------------------------------------ submitted ahead
    def _holders_on(self, nodes: tuple[str, ...]) -> list[ActiveRun | NotebookHold]:
        wanted = set(nodes)
        return list({id(h): h for (node, _), h in self.gpu_holders().items() if node in wanted}.values())

    async def _withdraw_ahead_in_the_way(self, starts) -> None:
        """Before this pass's starts: the run submitted ahead goes if another run now starts on its nodes; its
        own start takes its job over in the executor (or replaces it, on other nodes)."""
        if not starts:
            return
        async with self._ahead_lock:  # a submission ahead still under way is finished (or refused) first
            ahead = self._ahead
            if ahead is None:
                return
            if any(start.run_id == ahead[0] for start in starts):
                self._ahead = None
                return
            if {node for start in starts for node, _ in start.all_placements} & set(ahead[1]):
                await self._withdraw_ahead()

    async def _withdraw_ahead(self) -> None:
        if self._ahead is not None:
            run_id, _, paths = self._ahead
            self._ahead = None
            await self.executor.withdraw_ahead(run_id, paths)

    async def _plan_ahead(self, decisions) -> None:
        """Give the engine the run holding the reservation, to start when the runs on its nodes end, so the
        hand-off costs what the engine's own queue costs, not our noticing the end and a fresh submission.

        Only while every GPU on those nodes is held by a run with a job of the engine's: a node whose holders
        are gone but whose reserved run did not start (something else holds it back) gets no job that could
        start unaccounted, and a job submitted ahead that might have started there is withdrawn.
        """
        async with self._ahead_lock:
            entry = next((e for e in decisions.waiting if e.reserved_nodes), None)
            run = self.active.get(entry.run_id) if entry is not None else None
            holders = self._holders_on(entry.reserved_nodes) if entry is not None else []
            ok = (run is not None and run.state == S.QUEUED and run.kind == "train" and bool(holders)
                  and all(isinstance(h, ActiveRun) and h.state in (S.RUNNING, S.STOP_IN_PROGRESS)
                          and h.process is not None for h in holders))
            if self._ahead is not None:
                if ok and entry is not None and self._ahead[:2] == (entry.run_id, entry.reserved_nodes):
                    return
                await self._withdraw_ahead()
            if not ok or run is None or entry is None:
                return
            try:
                launch, python = await self._prepare_launch(run, entry.reserved_nodes)
                if run.state == S.QUEUED and await self.executor.submit_ahead_of(
                        launch, run.paths, python, [h.process for h in holders if isinstance(h, ActiveRun)]):
                    self._ahead = (run.id, entry.reserved_nodes, run.paths)
            except Exception as e:  # noqa: BLE001 - the run is started the ordinary way then
                log.warning("Run %s: not submitted ahead: %s", run.id, e)

    # ------------------------------------------------------------------ launching
    async def _launch(self, run: ActiveRun) -> ProcessRef:
        launch, python = await self._prepare_launch(run)
        return await self.executor.launch(launch, run.paths, python)

    async def _prepare_launch(self, run: ActiveRun,
                              ahead_nodes: tuple[str, ...] = ()) -> tuple[RunLaunch, str]:
        """The run's code staged and what the executor needs to start it: where the policy placed it, or, for a
        run submitted ahead, on ``ahead_nodes`` (the engine picks the devices, so GPUs are counted, not named)."""
        node, gpus, placement = run.node or "", run.assigned_gpus, run.placement
        if ahead_nodes:
            per_node = tuple(range(run.gpus_per_node if run.nodes > 1 else run.gpus))
            node, gpus = ahead_nodes[0], per_node
            placement = tuple((n, per_node) for n in ahead_nodes) if len(ahead_nodes) > 1 else ()
        account = await self.account(run.owner)
        if account is None:
            await self.launcher.call_idempotent(stage_source, run.run_dir, self.snapshot_limits)
        else:
            # The code is unpacked by the run's own account, into a folder that is its own.
            await self.launcher.call_idempotent(give_to_user, run.run_dir, account.uid, account.gid)
            await self.launcher.call_idempotent(stage_source, run.run_dir, self.snapshot_limits,
                                        account.uid, account.gid)
        launch = RunLaunch(run.id, run.owner, run.experiment, run.entry_point, run.args, run.hyperparameters,
                           gpus, cpus=run.cpus, memory_bytes=run.memory_bytes, node=node,
                           max_seconds=run.max_seconds,
                           uid=account.uid if account else None, gid=account.gid if account else None,
                           unix_name=account.name if account else "", placement=placement,
                           procs_per_node=run.procs_per_node, torchrun=run.torchrun,
                           **await self._read_only_inputs(run))
        return launch, self.python if run.kind == "train" else self.runtime_python

    async def _read_only_inputs(self, run: ActiveRun) -> dict[str, Any]:
        """What the run reads and must not change: its checkpoint input and its datasets, bound read-only."""
        inputs = await self._checkpoint_input(run)
        if not run.datasets:
            return inputs
        if not self.executor.readonly_binds:  # hard links to root's read-only files instead of binds
            points = await self.launcher.call_idempotent(link_readonly_inputs, run.run_dir,
                                                         [(d["name"], d["path"]) for d in run.datasets])
            return dict(inputs, datasets=tuple((d["name"], point, d["dataset"], d["version"])
                                               for d, point in zip(run.datasets, points)))
        points = await self.launcher.call_idempotent(prepare_dataset_mounts, run.run_dir,
                                                     [d["name"] for d in run.datasets])
        binds = tuple(inputs.get("readonly_binds", ())) + tuple((d["path"], point)
                                                                for d, point in zip(run.datasets, points))
        return dict(inputs, readonly_binds=binds,
                    datasets=tuple((d["name"], point, d["dataset"], d["version"])
                                   for d, point in zip(run.datasets, points)))

    async def _checkpoint_input(self, run: ActiveRun) -> dict[str, Any]:
        """``--checkpoint``: the other run's checkpoints as this run's input, read-only where the executor can."""
        if run.checkpoint_run is None:
            return {}
        source = str(self.runs_dir / str(run.checkpoint_run))
        try:
            binds, folder = await self.launcher.call_idempotent(
                prepare_checkpoint_input, run.run_dir, source, run.checkpoint_name, self.executor.readonly_binds)
        except FileNotFoundError:
            what = f"checkpoint {run.checkpoint_name}" if run.checkpoint_name else "the checkpoint folder"
            raise RuntimeError(f"{what} of run {run.checkpoint_run} is gone (deleted since submission)") from None
        return {"readonly_binds": binds, "checkpoint_input": folder}

    def _ref_fields(self, ref) -> dict[str, Any]:
        """The columns that remember a started run's job (``pid`` too, for local processes, for people)."""
        return dict(job_ref=self.executor.ref_text(ref), pid=getattr(ref, "pid", None),
                    process_start=getattr(ref, "start", None))

    def _transition(self, run: ActiveRun, target: RunState, reason: str, at: datetime, **fields) -> store.Transition:
        check_transition(run.state, target)
        t = store.Transition(run.id, run.state, target, reason, at, fields)
        run.state, run.reason = target, reason
        self.view_version += 1
        return t

    def _end(self, run: ActiveRun, target: RunState, reason: str, at: datetime, **fields) -> store.Transition:
        """A terminal transition; the run leaves ``active`` when ``_persist`` has committed it."""
        t = self._transition(run, target, reason, at, ended_at=at, **fields)
        run.ending = {"ended_at": at.isoformat() + "Z",
                      **({"exit_code": fields["exit_code"]} if "exit_code" in fields else {})}
        for timer in run.timers:
            timer.cancel()
        return t

    def gpu_holders(self, runs: Iterable[ActiveRun] | None = None) -> dict[tuple[str, int], ActiveRun | NotebookHold]:
        """Who holds each allocated GPU: a run or a notebook server.  ``runs``: the active runs to look at, when
        the caller already has those that hold GPUs (else all of them)."""
        holders: dict[tuple[str, int], ActiveRun | NotebookHold] = {}
        for run in self.active.values() if runs is None else runs:
            if run.state in HOLDING and run.node:
                for node, gpus in run.placements:
                    for gpu in gpus:
                        holders[(node, gpu)] = run
        for hold in self.notebooks.values():
            if hold.node != EXTERNAL_NODE:
                for gpu in hold.gpus:
                    holders[(hold.node, gpu)] = hold
        return holders

    # ------------------------------------------------------------------ notebooks
    async def hold_notebook_gpus(self, owner: str, server: str, group: str, gpus: int,
                                 external: bool = False) -> NotebookHold:
        """Give a starting notebook server ``gpus`` GPUs on one node now, or say why not.

        Notebooks do not queue: a person is waiting for the server to start.  The
        GPUs count against the user's and group's caps like a run's.  ``external``
        GPUs are placed by someone else (Kubernetes' device plugin): they are only
        counted, on a node outside this scheduler's inventory.
        """
        existing = self.notebooks.get((owner, server))
        if existing is not None:
            if len(existing.gpus) == gpus:
                return existing
            await self.release_notebook_gpus(owner, server)
        self._check_caps(owner, group, gpus)
        if external:
            return await self._record_hold(owner, server, group, EXTERNAL_NODE, tuple(range(gpus)))
        free = free_resources(self.snapshot())
        try:
            where = self.executor.notebook_placement()
        except EngineRefused as e:
            raise NotebookGpusUnavailable(str(e)) from None
        if where is not None:  # an engine's cluster: notebooks run on one machine of it
            node = free.get(where)
            if node is None or len(node.gpus) < gpus:
                have = len(node.gpus) if node is not None else 0
                raise NotebookGpusUnavailable(
                    f"the notebook asks for {gpus} GPU{'s' if gpus != 1 else ''} but {have} "
                    f"{'is' if have == 1 else 'are'} free on {where}, the node notebooks run on; try fewer, or later")
        else:
            node = best_fit(free, PendingRun(0, owner, gpus))
        if node is None:
            most = max((len(n.gpus) for n in free.values()), default=0)
            raise NotebookGpusUnavailable(
                f"the notebook asks for {gpus} GPU{'s' if gpus != 1 else ''} but at most {most} "
                f"{'is' if most == 1 else 'are'} free on one node now; try fewer, or later")
        try:
            taken = await self.executor.hold_gpus(f"{owner}/{server}", node.node.name, gpus, tuple(node.gpus[:gpus]))
        except EngineRefused as e:
            raise NotebookGpusUnavailable(str(e)) from None
        return await self._record_hold(owner, server, group, node.node.name, taken)

    async def _record_hold(self, owner: str, server: str, group: str, node: str, taken: tuple[int, ...]):
        now, secret = utcnow(), secrets.token_hex(32)
        row = await self.db.run(store.add_notebook_hold, dict(owner=owner, server=server, group=group, node=node,
                                                               gpus=list(taken), allocated_at=now,
                                                               release_token=secret))
        hold = NotebookHold(row.id, owner, server, group, node, taken, now, secret)
        self.notebooks[(owner, server)] = hold
        self.view_version += 1
        log.info("Notebook %s/%s holds GPUs %s on %s", owner, server or "(default)", taken, hold.node)
        self.wake()
        return hold

    async def release_notebook_gpus(self, owner: str, server: str, release_token: str | None = None) -> bool:
        """Give a notebook's GPUs back; with ``release_token``, only if it matches the hold's."""
        hold = self.notebooks.get((owner, server))
        if hold is None or (release_token is not None and not hmac.compare_digest(release_token, hold.release_token)):
            return False
        del self.notebooks[(owner, server)]
        self.view_version += 1
        if hold.node != EXTERNAL_NODE:
            try:
                await self.executor.release_gpus(f"{owner}/{server}")
            except Exception:  # noqa: BLE001 - the hold ends here whatever the engine says; it is logged
                log.exception("Could not release notebook %s/%s's GPUs in the engine", owner, server or "(default)")
        await self.db.run(store.remove_notebook_hold, owner, server)
        self._charge(owner, hold.group, len(hold.gpus), hold.allocated_at, utcnow(), finished=False)
        self.wake()
        return True

    def _check_caps(self, owner: str, group: str, gpus: int) -> None:
        held_user = held_group = 0
        holders = [(r.owner, r.group, r.held_gpus) for r in self.active.values() if r.state in HOLDING]
        holders += [(h.owner, h.group, len(h.gpus)) for h in self.notebooks.values()]
        for o, g, n in holders:
            held_user += n if o == owner else 0
            held_group += n if g == group else 0
        for kind, name, held, cap in (("user", owner, held_user, self.quotas.user(owner).max_gpus),
                                      ("group", group, held_group, self.quotas.group(group).max_gpus)):
            if cap is not None and held + gpus > cap:
                raise NotebookGpusUnavailable(
                    f"QuotaHardCap: {kind} {name} at the cap of {cap} GPUs ({held} in use, the notebook needs {gpus})")

    # ------------------------------------------------------------------ stopping
    def _arm_timers(self, run: ActiveRun) -> None:
        if run.max_seconds and run.started_at and run.state == S.RUNNING:
            elapsed = (utcnow() - run.started_at).total_seconds()
            loop = asyncio.get_running_loop()
            run.timers.append(loop.call_later(max(0.0, run.max_seconds - elapsed), self._max_time_reached, run.id))
        if run.state == S.STOP_IN_PROGRESS:
            self._arm_kill(run)

    def _max_time_reached(self, run_id: int) -> None:
        run = self.active.get(run_id)
        if run is not None and run.state == S.RUNNING:
            self._spawn(self._request_stop(run, StopCause.MAX_TIME,
                                           f"exceeded its maximum run time of {format_seconds(run.max_seconds)}"))

    def _arm_kill(self, run: ActiveRun) -> None:
        loop = asyncio.get_running_loop()
        run.timers.append(loop.call_later(self.kill_grace_seconds, lambda: self._spawn(self._kill(run.id))))

    async def _kill(self, run_id: int) -> None:
        run = self.active.get(run_id)
        if run is not None and run.state == S.STOP_IN_PROGRESS and run.process is not None:
            log.info("Run %s did not stop within %ss of SIGTERM: sending SIGKILL", run_id, self.kill_grace_seconds)
            await self.executor.signal(run.process, signal.SIGKILL)

    async def cancel(self, run_id: int, by: str) -> ActiveRun:
        run = self.active.get(run_id)
        if run is None:
            raise RunNotActive(run_id)
        if run.state == S.QUEUED:
            await self._persist([self._end(run, S.STOPPED, f"cancelled by {by} while queued", utcnow(),
                                           stop_cause=StopCause.CANCEL)])
            if self._ahead is not None and self._ahead[0] == run.id:
                async with self._ahead_lock:
                    if self._ahead is not None and self._ahead[0] == run.id:
                        await self._withdraw_ahead()
            self.wake()
        elif run.state in (S.CREATE_IN_PROGRESS, S.RUNNING):
            await run.launched.wait()
            if run.state == S.RUNNING:
                await self._request_stop(run, StopCause.CANCEL, f"cancelled by {by}")
        return run

    async def stop_run(self, run: ActiveRun, cause: StopCause, reason: str) -> None:
        """SIGTERM to the run's process group, SIGKILL after the grace period; ``cause`` decides where it ends."""
        await self._request_stop(run, cause, reason)

    async def _request_stop(self, run: ActiveRun, cause: StopCause, reason: str) -> None:
        if run.state != S.RUNNING:
            return
        run.stop_cause = cause
        await self._persist([self._transition(run, S.STOP_IN_PROGRESS, reason, utcnow(), stop_cause=cause)])
        if run.process is not None:
            await self.executor.signal(run.process, signal.SIGTERM)
        self._arm_kill(run)

    # ------------------------------------------------------------------ exits
    async def _on_exit(self, run_id: int, status: ExitStatus) -> None:
        run = self.active.get(run_id)
        if run is None or run.state.is_terminal:
            return
        await run.launched.wait()
        if run.id not in self.active or not run.state.holds_gpus:
            return
        now = utcnow()
        exit_code = status.exit_code if status.phase in ("entry", "requirements", "killed") else None
        if run.state == S.STOP_IN_PROGRESS and run.stop_cause is not None:
            target = run.stop_cause.final_state()
            reason = f"{run.reason}; {status.describe()}"
        elif status.phase == "node" and run.preemptible:
            target, reason = S.QUEUED, f"{status.describe()} ({run.node})"
        elif status.succeeded:
            target, reason = S.COMPLETE, "exited with code 0"
        elif status.phase == "node":
            target, reason = S.FAIL_TRAIN, f"{status.describe()} ({run.node}); not requeued: the run is not --preemptible"
        else:
            target, reason = S.FAIL_TRAIN, status.describe()
        self._charge(run.owner, run.group, run.held_gpus, run.started_at, now, finished=target != S.QUEUED)
        if target == S.QUEUED:
            await self.helper.call_idempotent(hand_over_checkpoints, run.run_dir)
            reason += "; requeued with its checkpoints in EM_CHECKPOINT_INPUT_DIR"
            t = self._transition(run, S.QUEUED, reason, now, node=None, assigned_gpus=[], pid=None,
                                 process_start=None, job_ref=None, stop_cause=None, started_at=None, placement=None)
            run.node, run.assigned_gpus, run.process, run.stop_cause, run.started_at = None, (), None, None, None
            run.placement = ()
            for timer in run.timers:
                timer.cancel()
            run.timers.clear()
        else:
            t = self._end(run, target, reason, now, exit_code=exit_code)
        await self._persist([t])
        self.wake()


def format_seconds(seconds: int | None) -> str:
    if not seconds:
        return "unlimited"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
