"""The previous default policy (``fair-share-classic``): quotas, fair share with aging, borrowing, gangs, backfill.

The default is now ``servicefair.ServiceFairPolicy``, which adds attained-service
classes and a reservation that holds; this one stays for comparison and for
sites that want no preemption for service.

One pass of ``FairSharePolicy.decide`` is a pure function of the snapshot:

1. **Priority.**  ``score = priority * priority_step + fair_share + waited / aging_seconds``.
   ``fair_share`` is in (0, 1]: ``2 ** -(usage / share)`` as in Slurm's classic
   fair-share factor, where *usage* is the group's fraction of all recent usage
   (GPU-seconds decaying with ``half_life_seconds``, running runs included) and
   *share* its fraction of the fair-share weights; a user's factor is mixed in
   with ``user_weight``.  Waiting adds without bound, so any run eventually
   outranks every newer run of the same admin priority: nobody starves.
2. **Order.**  Runs that fit in their group's guarantee come before runs that would
   borrow (Kueue admits in-quota workloads first), then by score.
3. **Walk the queue.**  A run over a quota waits with the quota's reason and does
   not hold anyone up.  Otherwise its whole gang starts now if it fits (best fit,
   fewest nodes) without delaying the reservation: it ends before the reserved
   start (by its time limit, or its estimate with ``trust_estimates``) or leaves
   the reserved GPUs alone.  A shaped gang (``nodes`` x ``gpus_per_node``) takes
   exactly its ``nodes`` best-fitting nodes, and its reservation keeps exactly
   those; one the cluster can never host waits with a reason and holds nobody up.
   A run owed its group's guarantee preempts borrowed
   runs, newest first, instead.  The first run that cannot start gets the
   reservation (EASY backfill, see ``placement``).
4. **Estimates.**  Every waiting run gets a position, a reason and an estimated
   start from a projection of when GPUs come back.

Run times: a run's enforced ``max_seconds`` if it has one, else the caller's
``estimated_seconds``, else its group's typical run time from the usage history
(``Usage.typical_run_seconds``), else ``default_run_seconds``.  A run that has
outlived its estimate is expected to run as long again (heavy-tailed run times).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter

from .explain import resources_reason
from .placement import FreeMap, Release
from .policy import (
    ClusterSnapshot,
    Decisions,
    HeldRun,
    PendingRun,
    Preempt,
    QueueEntry,
    StartRun,
    expected_seconds,
    free_resources,
    held_runs,
    largest_node,
    normalized,
    shaped_capacity,
    shaped_never_reason,
    spans_nodes,
    typical_seconds,
)
from .quotas import QuotaBook, Quotas
from .usage import Usage, decayed_interval, decayed_now


@dataclass(frozen=True)
class FairShareConfig:
    """Tuning of ``FairSharePolicy``; the service maps its traitlets onto this.

    ``half_life_seconds``: how fast past usage stops counting (Slurm's
    ``PriorityDecayHalfLife``, 7 days by default).
    ``aging_seconds``: waiting this long is worth the whole fair-share range, so a
    run of the heaviest user overtakes a fresh run of the lightest after it.
    ``priority_step``: what one level of admin priority is worth (100 = 400 hours
    of waiting at the default aging).
    ``user_weight``: the user's part of the fair-share factor (the rest is the group's).
    ``backfill``: let later runs start if they do not delay the first blocked one.
    ``default_run_seconds``: run time assumed when nothing better is known.
    ``estimate_starts``: compute an estimated start for every waiting run.
    ``trust_estimates``: let runs without a time limit use GPUs kept for the
    reserved run when their *estimated* end comes first.  Off, only an enforced
    ``max_seconds`` counts (as Slurm's backfill trusts only time limits): the
    reserved run is never delayed, but fewer runs backfill (on the Philly week at
    384 GPUs the average JCT rose by 9 %).
    ``reservation_nodes``: nodes kept for the reserved run; one gets the
    reservation, the others hedge against run times longer than estimated
    (more than 1 cost small runs more than it saved large ones on Philly).
    ``max_reservation_attempts``: runs tried for the reservation in one pass.
    ``quotas``: guarantees, caps and budgets (a snapshot's ``quotas`` replace them).
    """

    half_life_seconds: float = 7 * 86400
    aging_seconds: float = 4 * 3600
    priority_step: float = 100.0
    user_weight: float = 0.3
    backfill: bool = True
    default_run_seconds: float = 3600.0
    estimate_starts: bool = True
    trust_estimates: bool = True
    reservation_nodes: int = 1
    max_reservation_attempts: int = 16
    quotas: Quotas = field(default_factory=Quotas)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fair_share_factors(records: Mapping[str, Usage], running: Iterable[tuple[str, float]],
                       waiting: Iterable[str], weights: Mapping[str, float], default_weight: float,
                       now: float, half_life: float) -> dict[str, float]:
    """``2 ** -(usage fraction / share fraction)`` for every name seen.

    ``running`` pairs a name (group or user) with the decayed usage of one of its
    running runs so far; it is added to the ended runs' ``records``.
    """
    used = {name: decayed_now(u, now, half_life) for name, u in records.items()}
    for name, value in running:
        used[name] = used.get(name, 0.0) + value
    names = set(used).union(waiting, weights)
    total_used = sum(used.values())
    total_weight = sum(weights.get(n, default_weight) for n in names)
    if total_used <= 0 or total_weight <= 0:
        return dict.fromkeys(names, 1.0)
    return {n: 2.0 ** -((used.get(n, 0.0) / total_used) / (weights.get(n, default_weight) / total_weight))
            for n in names}


class FairSharePolicy:
    """Quotas, fair share with aging, borrowing with preemption, gangs, EASY backfill."""

    def __init__(self, config: FairShareConfig | None = None, name: str = "fair-share"):
        self.config = config or FairShareConfig()
        self.name = name

    # ---------------------------------------------------------------- run times
    def _typical(self, usage: Mapping[str, Usage], group: str) -> float:
        return typical_seconds(usage, group, self.config.default_run_seconds)

    def run_seconds(self, run: PendingRun, usage: Mapping[str, Usage]) -> float:
        """How long ``run`` is expected to hold its GPUs (see the module docstring)."""
        return expected_seconds(run, usage, self.config.default_run_seconds)

    def expected_end(self, h: HeldRun, usage: Mapping[str, Usage], now: float) -> float:
        """When a running run should have given its GPUs back (inf: no idea, e.g. a notebook)."""
        if h.stopping:
            return now
        if h.expected_end is not None:
            return max(h.expected_end, now)
        if h.is_notebook:
            return math.inf
        end = h.started_at + self._typical(usage, h.group)
        if end <= now:
            end = now + max(now - h.started_at, 60.0)
        return end

    # ---------------------------------------------------------------- the pass
    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        cfg, now = self.config, snapshot.now
        quotas = snapshot.quotas or cfg.quotas
        gusage = snapshot.group_usage
        groups = {r.group for r in snapshot.queued}
        owners = {r.owner for r in snapshot.queued}
        typical = {g: self._typical(gusage, g) for g in groups}
        held = held_runs(snapshot)
        ends = {rid: self.expected_end(h, gusage, now) for rid, h in held.items()}
        book = QuotaBook(quotas, held, gusage, snapshot.user_usage, now)
        node_gpus = largest_node(snapshot.nodes)
        fm = FreeMap(free_resources(snapshot), node_gpus)
        order = self._order(snapshot, held, book, quotas, groups, owners)

        starts: list[StartRun] = []
        preempts: list[Preempt] = []
        waiting: list[tuple[PendingRun, str, str, float]] = []  # run, kind, reason, run seconds
        claimed: set[int] = set()
        victims: list[HeldRun] | None = None
        blocked_by: PendingRun | None = None
        reserve_tries = 0
        never_fits: set[tuple] = set()
        memo: dict[tuple, tuple[int, str, str]] = {}
        reclaim_failed: set[tuple] = set()
        stopping_runs: list[HeldRun] = []
        capable: dict[tuple, list[str]] = {}

        for run in order:
            run = normalized(run)
            if run.max_seconds is not None:
                seconds = run.max_seconds
            elif run.estimated_seconds is not None:
                seconds = run.estimated_seconds
            else:
                seconds = typical[run.group]
            reason = book.blocked(run) if book.active else None
            if reason is not None:
                waiting.append((run, "quota", reason, seconds))
                continue
            if run.shaped:
                form = (run.nodes, run.gpus_per_node, run.cpus, run.memory_bytes)
                if form not in capable:
                    capable[form] = shaped_capacity(snapshot.nodes, run)
                if len(capable[form]) < run.nodes:
                    waiting.append((run, "never", shaped_never_reason(run, capable[form]), seconds))
                    continue
            if blocked_by is not None and not cfg.backfill:
                waiting.append((run, "behind", f"Priority: waiting for run {blocked_by.run_id} ahead in the queue to start",
                                seconds))
                continue
            multi = spans_nodes(run, node_gpus)
            # Until something is taken or reserved, a run of the same shape and length
            # fails the same way: reuse the answer (this keeps long queues cheap).
            # Only an enforced limit may use GPUs kept for the reserved run (an estimate may overrun).
            by = now + run.max_seconds if run.max_seconds is not None else (None if cfg.trust_estimates else math.inf)
            key = (run.gpus, run.cpus, run.memory_bytes, run.nodes if run.shaped else 0, run.gpus_per_node,
                   seconds, by)
            seen = memo.get(key)
            reclaims = book.has_guarantees and book.within_share(run)
            if seen is not None and seen[0] == fm.version and not reclaims:
                waiting.append((run, seen[1], seen[2], seconds))
                continue
            if seen is None or seen[0] != fm.version:
                start = fm.place(run, now + seconds, multi, by)
                if start is not None:
                    starts.append(start)
                    book.account(run)
                    continue

            # A failed search for victims fails again for the same shape until something changes.
            attempt = (*key[:5], fm.version, len(claimed))
            if reclaims and attempt not in reclaim_failed:
                if victims is None:
                    # A group inside its guarantee has no borrowed runs, so none of these is the run's own.
                    victims = [h for h in book.borrowed() if not h.stopping]
                    stopping_runs = [h for h in held.values() if h.stopping]
                reclaim = fm.reclaim(run, multi, [h for h in victims if h.run_id not in claimed],
                                     [h for h in stopping_runs if h.run_id not in claimed])
                if reclaim is None:
                    reclaim_failed.add(attempt)
                else:
                    fm.hold(reclaim.nodes, run)
                    book.account(run)
                    for h in reclaim.victims + reclaim.stopping:
                        claimed.add(h.run_id)
                    for h in reclaim.victims:
                        preempts.append(Preempt(h.run_id, run.run_id, (
                            f"Preempted: group {run.group} needs its guaranteed GPUs back for run {run.run_id}; "
                            f"this run was borrowing idle GPUs beyond group {h.group}'s guarantee")))
                    ids = ", ".join(str(h.run_id) for h in reclaim.victims + reclaim.stopping)
                    reason = (f"Preempting: reclaiming group {run.group}'s guaranteed GPUs; "
                              f"waiting for borrowed runs {ids} to stop")
                    waiting.append((run, "reclaim", reason, seconds))
                    continue

            if blocked_by is None:
                blocked_by = run
            shape = key[:5]
            if (fm.reserved_for is None and cfg.backfill and reserve_tries < cfg.max_reservation_attempts
                    and shape not in never_fits):
                reserve_tries += 1
                at = fm.reserve(run, self._releases(held, ends, claimed) + fm.started, multi, cfg.reservation_nodes)
                if at is not None:
                    first, *others = fm.caps
                    where = ", ".join([first] if others and not multi else fm.caps)
                    reason = f"{resources_reason(run, fm, multi)}; reserved to start in about {_duration(at - now)} on {where}"
                    if others and not multi:
                        reason += f" (also kept free for it: {', '.join(others)})"
                    waiting.append((run, "head", reason, seconds))
                    continue
                never_fits.add(shape)
            if (fm.reserved_for is not None and (now + seconds if by is None else by) > fm.reserved_at
                    and fm.fits_now(run, multi, False)):
                why = (f"this run's {_duration(seconds)} limit would delay it" if run.max_seconds is not None
                       else f"this run's expected {_duration(seconds)} would delay it" if by is None
                       else "only runs with a time limit that ends before then may use them")
                kind, reason = "reserved", (
                    f"Reserved: the GPUs it would use are reserved for run {fm.reserved_for}, due to start in about "
                    f"{_duration(fm.reserved_at - now)}; {why}")
            else:
                kind, reason = "resources", resources_reason(run, fm, multi)
                if shape in never_fits and fm.reserved_for is None:
                    reason += "; it cannot fit even once every run with a known end has stopped"
            memo[key] = (fm.version, kind, reason)
            waiting.append((run, kind, reason, seconds))

        entries = self._entries(waiting, fm, held, ends, claimed, now)
        return Decisions(tuple(starts), entries, tuple(preempts))

    def _order(self, snapshot: ClusterSnapshot, held: dict[int, HeldRun], book: QuotaBook, quotas: Quotas,
               groups: set[str], owners: set[str]) -> list[PendingRun]:
        """Queued runs in the order the pass considers them (see the module docstring)."""
        cfg, now = self.config, snapshot.now
        queued = snapshot.queued
        hl = cfg.half_life_seconds
        gw = {n: q.weight for n, q in quotas.groups.items()}
        uw = {n: q.weight for n, q in quotas.users.items()}
        used = [(h, decayed_interval(h.gpus, h.started_at, now, now, hl)) for h in held.values()]
        fg = fair_share_factors(snapshot.group_usage, ((h.group, u) for h, u in used), groups, gw,
                                quotas.default_group.weight, now, hl)
        fu = fair_share_factors(snapshot.user_usage, ((h.owner, u) for h, u in used), owners, uw,
                                quotas.default_user.weight, now, hl)
        w = cfg.user_weight
        fg = {g: (1 - w) * f for g, f in fg.items()}
        fu = {o: w * f for o, f in fu.items()}
        step, aging = cfg.priority_step, cfg.aging_seconds
        keyed: list[tuple[tuple, PendingRun]]  # borrowing first when there are guarantees
        if book.has_guarantees:
            borrowing = book.borrowing
            keyed = [((borrowing(r), -(r.priority * step + fg[r.group] + fu[r.owner] + (now - r.submitted_at) / aging),
                       r.submitted_at, r.run_id), r) for r in queued]
        else:
            keyed = [((-(r.priority * step + fg[r.group] + fu[r.owner] + (now - r.submitted_at) / aging),
                       r.submitted_at, r.run_id), r) for r in queued]
        keyed.sort(key=itemgetter(0))
        return [r for _, r in keyed]

    @staticmethod
    def _releases(held: dict[int, HeldRun], ends: dict[int, float], claimed: set[int]) -> list[Release]:
        """When each running run's resources come back (runs with no known end left out)."""
        out: list[Release] = []
        for rid, h in held.items():
            end = ends[rid]
            if end == math.inf or rid in claimed:
                continue
            for p in h.parts:
                out.append((end, p.node, len(p.gpus), p.cpus, p.memory_bytes))
        return out

    # ---------------------------------------------------------------- estimates
    def _entries(self, waiting: list[tuple[PendingRun, str, str, float]], fm: FreeMap, held: dict[int, HeldRun],
                 ends: dict[int, float], claimed: set[int], now: float) -> tuple[QueueEntry, ...]:
        """Positions, reasons and estimated starts.

        The estimate replays the queue in order on a pool of GPUs that come back
        when runs are expected to end, each run taking the earliest GPUs free
        (node boundaries and new arrivals ignored; the reserved run gets its
        reservation time).  Runs held by a quota, and shaped runs the cluster
        can never host, get no estimate.
        """
        if not self.config.estimate_starts:
            return tuple(QueueEntry(r.run_id, i, reason) for i, (r, _, reason, _) in enumerate(waiting, 1))
        # One entry per GPU: when it is next free.  GPUs of runs with no known end
        # (notebook servers) are left out: they never come back.
        heap = [now] * fm.total
        for rid, h in held.items():
            end = ends[rid]
            if end != math.inf and rid not in claimed:
                heap.extend([end] * h.gpus)
        for end, _, g, _, _ in fm.started:
            heap.extend([end] * g)
        heapq.heapify(heap)
        heappop, heappush, heapreplace = heapq.heappop, heapq.heappush, heapq.heapreplace
        out = []
        for i, (run, kind, reason, seconds) in enumerate(waiting, 1):
            need = run.gpus
            if kind in ("quota", "never"):
                est = None
            elif kind == "reclaim":
                est = now
                for _ in range(need):
                    heappush(heap, now + seconds)
            elif need <= 0:
                est = now
            elif need > len(heap):
                est = None
            elif need == 1:
                est = max(now, heap[0])
                heapreplace(heap, est + seconds)
            else:
                # The earliest ``need`` GPUs; they come back when the run should end.
                taken = [heappop(heap) for _ in range(need)]
                est = max(now, taken[-1])
                for _ in range(need):
                    heappush(heap, est + seconds)
            if kind == "head":
                est = fm.reserved_at
            out.append(QueueEntry(run.run_id, i, reason, est))
        return tuple(out)
