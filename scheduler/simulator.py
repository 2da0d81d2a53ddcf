"""A virtual-clock simulator that replays a job trace through any ``Policy``.

The simulator plays the live service's part: at every instant where something
happens (a job arrives, ends, or a preempted job has stopped) it builds a
``ClusterSnapshot``, calls the very ``decide`` the service calls, and applies the
decisions.  Jobs run for their true duration, which the policy never sees: it
only learns run times from the usage history, as ``UsageLedger`` records finished
jobs.  A preempted job is requeued; by default it resumes where it stopped (it
checkpointed), else it starts over.

Every decision is checked as it is applied (no GPU given twice, gangs whole), so
a policy bug stops the replay instead of skewing its figures.
"""

from __future__ import annotations

import calendar
import csv
import heapq
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from .policy import Allocation, ClusterSnapshot, Node, PendingRun, Policy, share
from .quotas import Quotas
from .estimates import RuntimeEstimator
from .usage import UsageLedger

_END, _ARRIVE, _WAKE = 0, 1, 2


@dataclass(frozen=True)
class Job:
    """One job of a trace: what a user submits, plus its true ``duration``."""

    job_id: int
    submit: float
    duration: float
    gpus: int
    group: str = ""
    owner: str = ""
    priority: int = 0
    preemptible: bool = False
    max_seconds: float | None = None
    cpus: int = 0
    memory_bytes: int = 0
    experiment: str = ""
    entry_point: str = ""


@dataclass(frozen=True)
class JobOutcome:
    job: Job
    first_start: float
    end: float
    running_seconds: float
    preemptions: int

    @property
    def jct(self) -> float:
        """Job completion time: submit to end."""
        return self.end - self.job.submit

    @property
    def queued(self) -> float:
        """Time spent not running (waiting, including after preemptions)."""
        return self.jct - self.running_seconds


@dataclass(frozen=True)
class SimulationReport:
    """What a replay measured.  Times are seconds; ``utilisation`` is busy GPU
    time over capacity in ``window`` (by default first to last submission);
    ``jain`` is Jain's index across groups of each group's mean
    ``running time / JCT`` (1 = every group waits in the same proportion);
    ``idle_gpu_hours_while_waiting`` is GPU time left idle while jobs waited
    (what head-of-line blocking and fragmentation cost); ``waiting_while_full``
    is the share of all job-seconds spent waiting that passed while no GPU was
    free (waits that no placement or backfill could have shortened); ``max_queued``
    is the longest any job waited in all; ``lost_gpu_hours`` is the work that
    preemptions threw away (since the last checkpoint, plus restarts)."""

    policy: str
    gpus: int
    jobs: int
    completed: int
    avg_jct: float
    avg_queued: float
    p50_queued: float
    p95_queued: float
    p99_queued: float
    utilisation: float
    makespan: float
    jain: float
    passes: int
    pass_p50: float
    pass_p95: float
    pass_max: float
    preemptions: int
    idle_gpu_hours_while_waiting: float = 0.0
    waiting_while_full: float = 0.0
    max_queued: float = 0.0
    lost_gpu_hours: float = 0.0
    outcomes: tuple[JobOutcome, ...] = field(default=(), repr=False)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def jain_index(values: Iterable[float]) -> float:
    xs = list(values)
    squares = sum(x * x for x in xs)
    return (sum(xs) ** 2) / (len(xs) * squares) if xs and squares > 0 else 1.0


def uniform_nodes(count: int, gpus_per_node: int = 8, cpus: int = 0, memory_bytes: int = 0) -> tuple[Node, ...]:
    width = len(str(count - 1))
    return tuple(Node(f"node-{i:0{width}d}", tuple(range(gpus_per_node)), cpus, memory_bytes) for i in range(count))


def load_philly(path: Path, start: str, end: str, min_duration: float = 60.0,
                max_gpu_hours: float = 1000.0) -> list[Job]:
    """Jobs of the Philly job-level CSV submitted in ``[start, end)`` (``YYYY-MM-DD``
    UTC), with ``duration >= min_duration`` and ``gpu_time < max_gpu_hours``, in
    submit order; the trace's ``cluster`` (virtual cluster) is the group."""
    jobs = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            ts = row["timestamp"]
            if not (start <= ts < end):
                continue
            duration, gpu_time = float(row["duration"]), float(row["gpu_time"])
            if duration < min_duration or gpu_time >= max_gpu_hours * 3600:
                continue
            submit = calendar.timegm(datetime.strptime(ts, "%Y-%m-%d %H:%M:%S").timetuple())
            jobs.append((submit, duration, int(row["num_gpus"]), row["cluster"]))
    jobs.sort()
    return [Job(i, s, d, g, c, f"vc-{c}") for i, (s, d, g, c) in enumerate(jobs)]


def load_itp(path: Path, min_duration: float = 0.0) -> list[Job]:
    """Jobs of one Microsoft ITP cluster (``raw/clusterNN.csv``: ``submission_time``
    in seconds from the start of collection, ``duration``, ``num_gpu``), in submit
    order.  The trace has no user or group column: every job is in group ``""``."""
    jobs = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            duration, gpus = float(row["duration"]), int(row["num_gpu"])
            if duration < max(min_duration, 1e-9) or gpus < 1:
                continue
            jobs.append((float(row["submission_time"]), duration, gpus))
    jobs.sort()
    return [Job(i, s, d, g) for i, (s, d, g) in enumerate(jobs)]


def _part(total: int, gpus: tuple[int, ...], job: Job) -> int:
    """The CPUs or memory a node holds for its share of a multi-node job (as the policy placed it)."""
    return share(total, len(gpus), job.gpus) if job.gpus else total


@dataclass(frozen=True)
class PreemptionCost:
    """What a preemption costs the job, the same for every policy.

    A job checkpoints every ``checkpoint_seconds`` of running (0: continuously, so
    nothing is lost); preempted, it loses the work since its last checkpoint, and
    every restart after a preemption spends ``restart_seconds`` (loading the
    checkpoint, warming up) before it makes progress again."""

    checkpoint_seconds: float = 600.0
    restart_seconds: float = 60.0

    def kept(self, ran: float) -> float:
        """Progress an attempt that ran ``ran`` seconds keeps when it is preempted."""
        if self.checkpoint_seconds <= 0:
            return ran
        return math.floor(ran / self.checkpoint_seconds) * self.checkpoint_seconds


FREE_PREEMPTION = PreemptionCost(0.0, 0.0)


class _Running:
    __slots__ = ("allocs", "attempt", "job", "remaining", "start")

    def __init__(self, job: Job, allocs: tuple[Allocation, ...], start: float, attempt: int, remaining: float):
        self.job, self.allocs, self.start, self.attempt, self.remaining = job, allocs, start, attempt, remaining


def simulate(jobs: Sequence[Job], nodes: Sequence[Node], policy: Policy, *, name: str | None = None,
             quotas: Quotas | None = None, half_life_seconds: float = 7 * 86400,
             estimate_quantile: float = 0.5, estimate_history: int = 100,
             resume_after_preempt: bool = True, preempt_grace_seconds: float = 0.0,
             preemption_cost: PreemptionCost = PreemptionCost(),
             estimator: RuntimeEstimator | None = None, perfect_estimates: bool = False,
             round_seconds: float = 0.0, window: tuple[float, float] | None = None) -> SimulationReport:
    """Replay ``jobs`` on ``nodes`` under ``policy`` and measure the outcome.

    ``estimator``, when given, supplies every queued run's ``estimated_seconds``
    and every running run's ``estimated_end`` (learning from finished jobs);
    ``perfect_estimates`` gives the true durations instead (to check that a policy
    does not get worse with better estimates).  A policy with a ``bind_oracle``
    method (the SRTF oracle) is handed the true remaining work of every job: the
    only way a policy can see durations.  ``Decisions.next_pass_at`` is honoured:
    the simulator passes again then even if nothing else happened.
    ``round_seconds`` > 0 passes only at multiples of it (scheduling rounds, as
    the Pollux, Sia and Tiresias simulators have): what happened in between is
    acted on at the round's end, the same for every policy; 0 passes at every event.
    """
    nodes = tuple(nodes)
    period = quotas.period_seconds if quotas else 30 * 86400
    groups = UsageLedger(half_life_seconds, period, estimate_history, estimate_quantile)
    users = UsageLedger(half_life_seconds, period, estimate_history, estimate_quantile)
    events: list[tuple[float, int, int, int, int]] = []  # time, kind, seq, job_id, attempt
    seq = 0
    by_id = {j.job_id: j for j in jobs}
    for j in jobs:
        events.append((j.submit, _ARRIVE, seq, j.job_id, 0))
        seq += 1
    heapq.heapify(events)
    queued: dict[int, PendingRun] = {}
    running: dict[int, _Running] = {}
    busy: set[tuple[str, int]] = set()
    remaining = {j.job_id: j.duration if j.max_seconds is None else min(j.duration, j.max_seconds) for j in jobs}
    first_start: dict[int, float] = {}
    ran: dict[int, float] = dict.fromkeys(by_id, 0.0)
    attained: dict[int, float] = dict.fromkeys(by_id, 0.0)
    estimated: dict[int, float | None] = {}
    preempted: dict[int, int] = dict.fromkeys(by_id, 0)
    attempts: dict[int, int] = dict.fromkeys(by_id, 0)
    outcomes: list[JobOutcome] = []
    segments: list[tuple[float, float, int]] = []
    pass_times: list[float] = []
    total_preemptions = 0
    lost_gpu_seconds = 0.0
    snapshot_running: tuple[Allocation, ...] | None = ()
    next_wake = math.inf

    def oracle(job_id: int, now: float) -> float:
        r = running.get(job_id)
        if r is not None:
            return max(0.0, r.remaining - (now - r.start))
        return remaining[job_id]

    if hasattr(policy, "bind_oracle"):
        policy.bind_oracle(oracle)

    def pending(job: Job, now: float) -> PendingRun:
        if job.job_id not in estimated:
            if perfect_estimates:
                estimated[job.job_id] = remaining[job.job_id]
            elif estimator is not None:
                estimated[job.job_id] = estimator.estimate(job.owner, job.group, job.experiment, job.entry_point,
                                                           job.max_seconds).seconds
            else:
                estimated[job.job_id] = None
        est = estimated[job.job_id]
        if est is not None and perfect_estimates:
            est = remaining[job.job_id]
        return PendingRun(job.job_id, job.owner, job.gpus, job.cpus, job.memory_bytes, job.priority, job.submit,
                          job.group, job.preemptible, job.max_seconds, est,
                          attained_gpu_seconds=attained[job.job_id], queued_since=now)

    def stop(r: _Running, now: float, finished: bool) -> None:
        for a in r.allocs:
            busy.difference_update((a.node, g) for g in a.gpus)
        job = r.job
        segments.append((r.start, now, job.gpus))
        ran[job.job_id] += now - r.start
        attained[job.job_id] += job.gpus * (now - r.start)
        groups.charge(job.group, job.gpus, r.start, now, finished)
        users.charge(job.owner, job.gpus, r.start, now, finished)

    total_gpus = sum(len(n.gpus) for n in nodes)
    idle_while_waiting = waiting_seconds = waiting_while_full = 0.0
    last_pass = (0.0, 0, 0)  # time of the last pass, GPUs it left free, runs it left waiting

    while events:
        now = events[0][0]
        if round_seconds > 0:
            now = math.ceil(now / round_seconds) * round_seconds
        at, free, waiting = last_pass
        if waiting:
            idle_while_waiting += free * (now - at)
            waiting_seconds += waiting * (now - at)
            if free == 0:
                waiting_while_full += waiting * (now - at)
        while events and events[0][0] <= now:
            t, kind, _, job_id, attempt = heapq.heappop(events)
            if kind == _ARRIVE:
                queued[job_id] = pending(by_id[job_id], t)
                continue
            if kind == _WAKE:
                continue
            r = running.get(job_id)
            if r is None or r.attempt != attempt:
                continue  # the end of an attempt that was preempted
            del running[job_id]
            snapshot_running = None
            ran_now = t - r.start
            finished = not any(a.stopping for a in r.allocs) or ran_now >= r.remaining
            stop(r, t, finished)
            if finished:
                outcomes.append(JobOutcome(r.job, first_start[job_id], t, ran[job_id], preempted[job_id]))
                if estimator is not None:
                    j = r.job
                    # What the run needed, as its own log tells once it has ended (restarts not counted).
                    needed = j.duration if j.max_seconds is None else min(j.duration, j.max_seconds)
                    estimator.learn(j.owner, j.group, needed, j.experiment, j.entry_point, estimated.get(job_id))
            else:
                kept = preemption_cost.kept(ran_now) if resume_after_preempt else 0.0
                lost_gpu_seconds += r.job.gpus * (ran_now - kept)
                remaining[job_id] = r.remaining - kept + preemption_cost.restart_seconds
                queued[job_id] = pending(r.job, t)
        if snapshot_running is None:
            snapshot_running = tuple(a for r in running.values() for a in r.allocs)
        snap = ClusterSnapshot(nodes, snapshot_running, tuple(queued.values()), now,
                               groups.snapshot(), users.snapshot(), quotas)
        t0 = time.perf_counter()
        decisions = policy.decide(snap)
        pass_times.append(time.perf_counter() - t0)
        for s in decisions.starts:
            queued.pop(s.run_id)
            job = by_id[s.run_id]
            placed = s.all_placements
            if sum(len(g) for _, g in placed) != job.gpus:
                raise AssertionError(f"run {s.run_id} needs {job.gpus} GPUs and was given {placed}")
            for node, gpus in placed:
                for g in gpus:
                    if (node, g) in busy:
                        raise AssertionError(f"GPU {g} of {node} given to run {s.run_id} while in use")
                    busy.add((node, g))
            end = None if job.max_seconds is None else now + job.max_seconds
            est = estimated.get(job.job_id)
            if perfect_estimates:
                est_end = now + remaining[job.job_id]
            elif est is not None:
                est_end = now + max(est - ran[job.job_id], 0.0)
            else:
                est_end = None
            allocs = tuple(Allocation(job.job_id, job.owner, node, gpus, _part(job.cpus, gpus, job),
                                      _part(job.memory_bytes, gpus, job), job.group, job.preemptible, False, now, end,
                                      attained_gpu_seconds=attained[job.job_id], estimated_end=est_end,
                                      submitted_at=job.submit)
                           for node, gpus in placed)
            attempts[job.job_id] += 1
            first_start.setdefault(job.job_id, now)
            running[job.job_id] = _Running(job, allocs, now, attempts[job.job_id], remaining[job.job_id])
            heapq.heappush(events, (now + remaining[job.job_id], _END, seq, job.job_id, attempts[job.job_id]))
            seq += 1
            snapshot_running = None
        for p in decisions.preemptions:
            r = running[p.run_id]
            if not r.job.preemptible or any(a.stopping for a in r.allocs):
                raise AssertionError(f"run {p.run_id} cannot be preempted")
            r.allocs = tuple(replace(a, stopping=True) for a in r.allocs)
            preempted[p.run_id] += 1
            total_preemptions += 1
            stop_at = min(now + preempt_grace_seconds, r.start + r.remaining)
            heapq.heappush(events, (stop_at, _END, seq, p.run_id, r.attempt))
            seq += 1
            snapshot_running = None
        wake = getattr(decisions, "next_pass_at", None)
        if wake is not None and wake > now and (wake < next_wake or next_wake <= now) and (queued or running):
            next_wake = wake
            heapq.heappush(events, (wake, _WAKE, seq, -1, 0))
            seq += 1
        last_pass = (now, total_gpus - len(busy), len(queued))
    report = _report(name or str(getattr(policy, "name", type(policy).__name__)), jobs, nodes, outcomes, segments,
                     pass_times, total_preemptions, window)
    return replace(report, idle_gpu_hours_while_waiting=idle_while_waiting / 3600,
                   waiting_while_full=waiting_while_full / waiting_seconds if waiting_seconds else 0.0,
                   lost_gpu_hours=lost_gpu_seconds / 3600)


def _report(name: str, jobs: Sequence[Job], nodes: tuple[Node, ...], outcomes: list[JobOutcome],
            segments: list[tuple[float, float, int]], pass_times: list[float], preemptions: int,
            window: tuple[float, float] | None) -> SimulationReport:
    gpus = sum(len(n.gpus) for n in nodes)
    if window is None and jobs:
        window = (min(j.submit for j in jobs), max(j.submit for j in jobs))
    busy = 0.0
    if window is not None and window[1] > window[0]:
        lo, hi = window
        busy = sum(max(0.0, min(e, hi) - max(s, lo)) * g for s, e, g in segments)
        utilisation = busy / (gpus * (hi - lo))
    else:
        utilisation = 0.0
    waits = [o.queued for o in outcomes]
    by_group: dict[str, list[float]] = {}
    for o in outcomes:
        by_group.setdefault(o.job.group, []).append(o.running_seconds / o.jct if o.jct > 0 else 1.0)
    first = min((j.submit for j in jobs), default=0.0)
    n = len(outcomes)
    return SimulationReport(
        policy=name, gpus=gpus, jobs=len(jobs), completed=n,
        avg_jct=sum(o.jct for o in outcomes) / n if n else 0.0,
        avg_queued=sum(waits) / n if n else 0.0,
        p50_queued=percentile(waits, 50), p95_queued=percentile(waits, 95), p99_queued=percentile(waits, 99),
        utilisation=utilisation,
        makespan=max((o.end for o in outcomes), default=first) - first,
        jain=jain_index(sum(v) / len(v) for v in by_group.values()),
        passes=len(pass_times), pass_p50=percentile(pass_times, 50), pass_p95=percentile(pass_times, 95),
        pass_max=max(pass_times, default=0.0), preemptions=preemptions, max_queued=max(waits, default=0.0),
        outcomes=tuple(outcomes),
    )
