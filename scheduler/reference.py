"""The field's yardsticks, for the simulator only: Tiresias-style 2D-LAS and an SRTF oracle.

Neither is offered to the live service.  Both are *preemptive priority*
schedulers: every pass ranks the queued runs, starts each one whose gang fits
(best fit, fewest nodes, as every policy here places), and lets a queued run that
does not fit preempt running runs ranked strictly below it, worst first, when
that makes its gang fit.  Neither reserves GPUs for wide runs, holds quotas, or
cares about groups.  Every run is treated as preemptible only if it says so
(``preemptible=True``), like the platform's policy; the bench marks every job of
a trace preemptible for them, as their papers assume.

* ``Tiresias2DLAS`` (Gu et al., NSDI'19, "discretized two-dimensional
  least-attained service"): a run's attained service is GPUs x time it has run
  (all attempts); ``thresholds`` cut it into queues, lower queues first, FIFO by
  submission within a queue, preemption only across queues.  Starvation guard
  as in the paper (its ``STARVELIMIT`` rule, "PromoteKnob"): a queued run that has
  waited, since it last ran, ``promote_knob`` times as long as it has run so far
  goes back to the first queue, its attained service counted from zero again.
  That reset is the only state the policy keeps between passes.
  Non-clairvoyant: it never looks at a run time.
* ``SrtfOracle``: shortest remaining time first with the *true* remaining work of
  every job, handed over by the simulator through ``bind_oracle``.  Clairvoyant,
  so unreachable in practice: the bound a non-clairvoyant policy is measured
  against.  This is the only code of the project that reads durations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .placement import FreeMap
from .policy import (
    ClusterSnapshot,
    Decisions,
    HeldRun,
    PendingRun,
    Preempt,
    QueueEntry,
    StartRun,
    free_resources,
    held_runs,
    largest_node,
    normalized,
    resources_reason,
    shaped_capacity,
    shaped_never_reason,
    spans_nodes,
)


class PreemptivePriority(ABC):
    """Rank, start what fits, preempt strictly lower-ranked runs for what does not."""

    name = "preemptive-priority"
    #: Runs that may look for victims in one pass (each look costs a walk over the nodes).
    max_reclaims_per_pass = 64

    @abstractmethod
    def rank_queued(self, run: PendingRun, now: float) -> tuple:
        """The order of a queued run (lower first); each reference policy says what it ranks by."""

    @abstractmethod
    def rank_running(self, h: HeldRun, now: float) -> tuple:
        """The same order for a running run, so that the two compare (``outranks``)."""

    def outranks(self, queued: tuple, running: tuple) -> bool:
        """Whether a queued run of rank ``queued`` may preempt a running one of rank ``running``."""
        return running > queued

    def next_change(self, snapshot: ClusterSnapshot, held: dict[int, HeldRun]) -> float | None:
        return None

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        now = snapshot.now
        held = held_runs(snapshot)
        node_gpus = largest_node(snapshot.nodes)
        fm = FreeMap(free_resources(snapshot), node_gpus)
        keyed = sorted(((self.rank_queued(r, now), r.run_id, normalized(r)) for r in snapshot.queued),
                       key=lambda t: (t[0], t[1]))
        victims = sorted(((self.rank_running(h, now), h) for h in held.values()
                          if h.preemptible and not h.is_notebook and not h.stopping),
                         key=lambda t: (t[0], t[1].run_id), reverse=True)
        stopping = [h for h in held.values() if h.stopping]
        starts: list[StartRun] = []
        preempts: list[Preempt] = []
        waiting: list[QueueEntry] = []
        claimed: set[int] = set()
        failed: set[tuple] = set()
        capable: dict[tuple, list[str]] = {}
        tries = 0
        for key, _, run in keyed:
            if run.shaped:
                form = (run.nodes, run.gpus_per_node, run.cpus, run.memory_bytes)
                if form not in capable:
                    capable[form] = shaped_capacity(snapshot.nodes, run)
                if len(capable[form]) < run.nodes:
                    waiting.append(QueueEntry(run.run_id, len(waiting) + 1, shaped_never_reason(run, capable[form])))
                    continue
            multi = spans_nodes(run, node_gpus)
            if run.gpus <= fm.total:
                start = fm.place(run, math.inf, multi)
                if start is not None:
                    starts.append(start)
                    continue
            shape = (run.gpus, run.cpus, run.memory_bytes, run.nodes, run.gpus_per_node, fm.version, len(claimed))
            if tries < self.max_reclaims_per_pass and shape not in failed and victims \
                    and self.outranks(key, victims[0][0]):
                tries += 1
                cands = [h for rk, h in victims if h.run_id not in claimed and self.outranks(key, rk)]
                reclaim = fm.reclaim(run, multi, cands, [h for h in stopping if h.run_id not in claimed]) \
                    if cands else None
                if reclaim is None:
                    failed.add(shape)
                else:
                    fm.hold(reclaim.nodes, run)
                    for h in reclaim.victims + reclaim.stopping:
                        claimed.add(h.run_id)
                    for h in reclaim.victims:
                        preempts.append(Preempt(h.run_id, run.run_id,
                                                f"Preempted by {self.name}: run {run.run_id} ranks higher"))
                    waiting.append(QueueEntry(run.run_id, len(waiting) + 1,
                                              f"Preempting: waiting for lower-ranked runs to stop ({self.name})"))
                    continue
            waiting.append(QueueEntry(run.run_id, len(waiting) + 1, resources_reason(run, fm.free, node_gpus)))
        return Decisions(tuple(starts), tuple(waiting), tuple(preempts), self.next_change(snapshot, held))


@dataclass
class Tiresias2DLAS(PreemptivePriority):
    """Discretized 2D-LAS with Tiresias's starvation guard (see the module docstring).

    ``thresholds``: attained GPU-seconds at which a run moves to the next queue
    (the default, 1 and 10 GPU-hours, makes three queues).  ``promote_knob``:
    a queued run that has waited this many times as long as it has run goes back
    to the first queue (0 switches the guard off).  ``round_seconds``: a crossing is
    acted on at the next multiple of this (a scheduling round), besides every
    arrival and end."""

    thresholds: tuple[float, ...] = (3600.0, 36000.0)
    promote_knob: float = 8.0
    round_seconds: float = 300.0
    name: str = "tiresias-2dlas"
    _reset: dict[int, float] = field(default_factory=dict, repr=False)

    def _attained(self, run_id: int, attained: float) -> float:
        return max(0.0, attained - self._reset.get(run_id, 0.0))

    def rank_queued(self, run: PendingRun, now: float) -> tuple:
        att = self._attained(run.run_id, run.attained_gpu_seconds)
        if self.promote_knob > 0 and att > 0 and run.gpus:
            waited = now - (run.submitted_at if run.queued_since is None else run.queued_since)
            if waited >= self.promote_knob * run.attained_gpu_seconds / run.gpus:
                self._reset[run.run_id] = run.attained_gpu_seconds
                att = 0.0
        return (bisect.bisect_right(self.thresholds, att), run.submitted_at)

    def rank_running(self, h: HeldRun, now: float) -> tuple:
        return (bisect.bisect_right(self.thresholds, self._attained(h.run_id, h.attained(now))), h.started_at)

    def outranks(self, queued: tuple, running: tuple) -> bool:
        return running[0] > queued[0]  # only across queues: FIFO within one

    def next_change(self, snapshot: ClusterSnapshot, held: dict[int, HeldRun]) -> float | None:
        """The next time a running run crosses a threshold or a queued run is promoted."""
        if not snapshot.queued:
            return None
        now, best = snapshot.now, math.inf
        for h in held.values():
            if h.gpus and not h.stopping:
                att = self._attained(h.run_id, h.attained(now))
                i = bisect.bisect_right(self.thresholds, att)
                if i < len(self.thresholds):
                    best = min(best, now + (self.thresholds[i] - att) / h.gpus)
        if self.promote_knob > 0:
            for r in snapshot.queued:
                if r.gpus and self._attained(r.run_id, r.attained_gpu_seconds) > 0:
                    since = r.submitted_at if r.queued_since is None else r.queued_since
                    best = min(best, since + self.promote_knob * r.attained_gpu_seconds / r.gpus)
        if best == math.inf:
            return None
        return math.ceil(best / self.round_seconds) * self.round_seconds if self.round_seconds > 0 else best + 1e-6


class SrtfOracle(PreemptivePriority):
    """Preemptive shortest-remaining-time-first with true durations: an ORACLE.

    The simulator calls ``bind_oracle`` with a function giving a job's true
    remaining run time; without it the policy refuses to decide.  A running run
    is preempted only for a queued run with strictly less remaining work."""

    name = "srtf-oracle"

    def __init__(self) -> None:
        self._remaining: Callable[[int, float], float] | None = None

    def bind_oracle(self, remaining: Callable[[int, float], float]) -> None:
        self._remaining = remaining

    def _left(self, run_id: int, now: float) -> float:
        if self._remaining is None:
            raise RuntimeError("SrtfOracle needs the true durations: only the simulator can give them")
        return self._remaining(run_id, now)

    def rank_queued(self, run: PendingRun, now: float) -> tuple:
        return (self._left(run.run_id, now) * max(run.gpus, 1), run.submitted_at)

    def rank_running(self, h: HeldRun, now: float) -> tuple:
        return (self._left(h.run_id, now) * max(h.gpus, 1), h.started_at)

    def outranks(self, queued: tuple, running: tuple) -> bool:
        return running[0] > queued[0]
