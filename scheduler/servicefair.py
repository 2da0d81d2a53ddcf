"""The platform's default policy: least attained service first, fair share, quotas, gangs, bounded waits.

One pass of ``ServiceFairPolicy.decide`` is a pure, deterministic function of the
snapshot (the live service and the simulator call the same code):

1. **Order.**  Within one admin priority: *overdue* runs first (queued longer than
   ``overdue_seconds`` since they were submitted or last preempted), oldest
   first; then runs that fit in their group's guarantee before runs that would
   borrow; then by *service class*, the run's attained GPU-time cut by
   ``thresholds`` (a run that has not run yet is in class 0), which is
   Tiresias's discretized 2D-LAS and needs no run time; then by fair share with
   aging (``fairshare.fair_share_factors``), then submission.  Nothing here reads
   a run time, so better estimates cannot reorder anything.
2. **Start what fits**: the whole gang at once (best fit, fewest nodes; shaped
   gangs on exactly their nodes), as long as it does not take GPUs kept for the
   reserved run (below).  Quota caps, budgets and guarantees hold as in
   ``quotas``; a run blocked by one waits with its reason and holds nobody up.
3. **Preempt, only runs that said they checkpoint** (``preemptible=True``; never
   notebook servers).  A queued run that does not fit may stop running
   preemptible runs that rank below it, worst first (highest class, then the
   heaviest fair-share user, newest), if that makes its gang fit: runs of a
   higher service class (that is how short runs overtake long ones); for an
   overdue run, any lower-ranked run; for the run that would hold the
   reservation, runs of its class that started while it waited.  A run
   is never preempted before it has run ``min_run_seconds`` in its attempt (so
   it has checkpointed once and cannot thrash).  A group owed its guarantee
   reclaims borrowed runs as ``fairshare`` does.
4. **Reserve, and keep the reservation.**  The first run that can neither start
   nor preempt gets the reservation (EASY backfill, ``placement.FreeMap``).  Runs
   may use GPUs kept for it only if they will be gone in time: a time limit that
   ends before the reserved start, or ``preemptible`` (the reserved run will stop
   them), or, while the reserved run is not overdue, an estimated end before it.
   Once it is overdue, an estimate counts only with a margin (``held_backfill_factor``
   times it must end before the reserved start), and a one-node run's reservation
   sits on the node with the most GPUs free already, which stays the same node
   pass after pass unless a run admitted by that margin took GPUs there.

**The wide-run bound.**  A run waits at most ``overdue_seconds`` plus the longest
remaining run time of the runs holding its reserved node when it became overdue
(plus ``min_run_seconds`` for preemptible ones), plus what runs admitted by the
margin overran it by: from then on nothing else without a time limit that ends in
time is placed there (with ``held_backfill_factor = 0`` the bound is exact).
**When nothing is preemptible** step 3's class preemption never fires: the policy
is fair share with aging, EASY backfill and the held reservation; short runs no
longer overtake long ones that have started, so the average completion time is
that of a non-preemptive policy, and the held node is filled only by runs
expected to leave well before the reserved start (without the margin it would
drain idle, which under overload costs more than the bound gains).

Every waiting run gets a position, a reason saying what it waits for and behind
whom, and an estimated start recomputed every pass; ``next_pass_at`` asks to be
called again when a running run is due to change service class or a queued run
to become overdue, so neither the order nor the estimates go stale.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter

from .explain import (
    ahead_because,
    duration,
    preempt_reason,
    queue_entries,
    release_heap,
    resources_reason,
    tail_entries,
    when,
)
from .fairshare import fair_share_factors
from .placement import FreeMap, Release
from .policy import (
    ClusterSnapshot,
    Decisions,
    HeldRun,
    PendingRun,
    Preempt,
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
from .usage import Usage, decayed_interval


@dataclass(frozen=True)
class ServiceFairConfig:
    """Tuning of ``ServiceFairPolicy``; the service maps its traitlets onto this.

    ``thresholds``: attained GPU-seconds where a run moves to the next service
    class, e.g. ``(3600, 36000)``: under 1 GPU-hour, under 10, the rest.
    ``min_run_seconds``: a run is not preempted before it has run this long in
    its current attempt (set it to about the runs' checkpoint interval).
    ``overdue_seconds``: a run queued this long goes ahead of every class and
    its reservation is held strictly (the starvation bound).  With
    ``overdue_factor`` > 0 the bound is tighter when the queue moves fast: a run
    is overdue once it has waited ``overdue_factor`` times the median wait of the
    runs queued now, but never less than ``overdue_min_seconds`` and never more
    than ``overdue_seconds`` (so a long run squeezed out by a burst of short ones
    on a quiet cluster is not left waiting for a day).
    ``overdue_lane``: how many overdue runs (the longest-waiting) go ahead of
    everything at once; 0 = all of them.  A small lane bounds waits without
    turning an overloaded cluster into FIFO.
    ``protect_overdue``: a run that had waited past the bound before it started is
    not preempted again for service.
    ``head_preempts_backfill``: the run that would hold the reservation may stop
    preemptible runs of its class that started while it waited, once it has
    waited ``head_preempt_after_seconds``.
    ``preemptible_backfill``: preemptible runs may use GPUs kept for the reserved
    run whatever their expected end (it will stop them); off, they obey the
    reservation like every other run.
    ``held_backfill_factor``: once the reserved run is overdue, a run without a time
    limit that is not preemptible may still use its GPUs if this many times its
    expected run time ends before the reserved start (0: never, the reservation
    admits only limits and preemptible runs).  Without it, a held node drains
    idle while nothing preemptible can fill it, which under sustained overload
    costs more capacity than the bound is worth (ITP ``cluster04`` at 384 GPUs,
    nothing preemptible: 178 h average JCT strict, 109 h with 2).
    ``half_life_seconds``, ``aging_seconds``, ``priority_step``, ``user_weight``:
    fair share and aging, as in ``fairshare.FairShareConfig``.
    ``default_run_seconds``: run time assumed when nothing better is known (for
    backfill and estimated starts only).
    ``max_reservation_attempts``, ``max_preemption_attempts``: bounds on the work
    of one pass.  ``round_seconds``: ``next_pass_at`` is rounded up to a multiple
    of this (class changes are acted on within one round, not to the second).
    ``quotas``: guarantees, caps and budgets.
    """

    thresholds: tuple[float, ...] = (3600.0, 36000.0)
    min_run_seconds: float = 600.0
    overdue_seconds: float = 24 * 3600.0
    overdue_factor: float = 0.0
    overdue_min_seconds: float = 1800.0
    overdue_lane: int = 0
    protect_overdue: bool = True
    head_preempts_backfill: bool = True
    head_preempt_after_seconds: float = 0.0
    preemptible_backfill: bool = True
    held_backfill_factor: float = 2.0
    half_life_seconds: float = 7 * 86400
    aging_seconds: float = 4 * 3600
    priority_step: float = 100.0
    user_weight: float = 0.3
    default_run_seconds: float = 3600.0
    max_reservation_attempts: int = 16
    max_preemption_attempts: int = 8
    round_seconds: float = 300.0
    estimate_starts: bool = True
    quotas: Quotas = field(default_factory=Quotas)


class ServiceFairPolicy:
    """Attained-service classes, fair share, quotas, gangs, held reservations (see the module docstring)."""

    def __init__(self, config: ServiceFairConfig | None = None, name: str = "service-fair"):
        self.config = config or ServiceFairConfig()
        self.name = name

    # ---------------------------------------------------------------- run times
    def _typical(self, usage: Mapping[str, Usage], group: str) -> float:
        return typical_seconds(usage, group, self.config.default_run_seconds)

    def run_seconds(self, run: PendingRun, usage: Mapping[str, Usage]) -> float:
        """The limit, else the caller's estimate, else the group's typical run time."""
        return expected_seconds(run, usage, self.config.default_run_seconds)

    def expected_end(self, h: HeldRun, usage: Mapping[str, Usage], now: float) -> tuple[float, bool]:
        """When a running run should give its GPUs back, and whether that is certain
        (an enforced limit, or it is stopping); inf for notebook servers."""
        if h.stopping:
            return now, True
        if h.expected_end is not None:
            return max(h.expected_end, now), True
        if h.is_notebook:
            return math.inf, False
        end = h.estimated_end if h.estimated_end is not None else h.started_at + self._typical(usage, h.group)
        if end <= now:
            end = now + max(now - h.started_at, 60.0)  # outlived its estimate: expect as long again
        return end, False

    def service_class(self, attained: float) -> int:
        return bisect.bisect_right(self.config.thresholds, attained)

    # ---------------------------------------------------------------- the pass
    def decide(self, snapshot: ClusterSnapshot) -> Decisions:  # noqa: C901 (one pass, read top to bottom)
        cfg, now = self.config, snapshot.now
        quotas = snapshot.quotas or cfg.quotas
        gusage = snapshot.group_usage
        held = held_runs(snapshot)
        ends = {rid: self.expected_end(h, gusage, now) for rid, h in held.items()}
        book = QuotaBook(quotas, held, gusage, snapshot.user_usage, now)
        node_gpus = largest_node(snapshot.nodes)
        fm = FreeMap(free_resources(snapshot), node_gpus)
        fg, fu = self._factors(snapshot, held, quotas)
        overdue_after = self.overdue_after(snapshot)
        ranked, due = self._order(snapshot, book, fg, fu, overdue_after)
        victims: list[tuple[tuple, HeldRun]] | None = None
        has_victims = any(h.preemptible and not h.stopping and not h.is_notebook for h in held.values())

        starts: list[StartRun] = []
        preempts: list[Preempt] = []
        waiting: list[tuple[PendingRun, str, str, float]] = []
        claimed: set[int] = set()
        stopping = [h for h in held.values() if h.stopping]
        capable: dict[tuple, list[str]] = {}
        failed: set[tuple] = set()
        memo: dict[tuple, tuple[int, int, str, str]] = {}
        never_fits: set[tuple] = set()
        head: tuple[tuple, PendingRun] | None = None  # rank, run of the first run that could not start
        head_reason = ""
        head_overdue = False
        reserve_tries = preempt_tries = 0
        typical: dict[str, float] = {}
        borrowed: list[HeldRun] | None = None

        tail_from = len(ranked)
        for i, (rank, run) in enumerate(ranked):
            if (fm.total == 0 and head is not None and not book.active and not run.shaped
                    and (fm.reserved_for is not None or reserve_tries >= cfg.max_reservation_attempts)
                    and (not has_victims or preempt_tries >= cfg.max_preemption_attempts)):
                tail_from = i  # nothing is free and nothing more can be tried: the rest all wait
                break
            seconds: float
            if run.max_seconds is not None:
                seconds = run.max_seconds
            elif run.estimated_seconds is not None:
                seconds = run.estimated_seconds
            elif run.group in typical:
                seconds = typical[run.group]
            else:
                seconds = typical[run.group] = self._typical(gusage, run.group)
            if book.active:
                reason = book.blocked(run)
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
            multi = spans_nodes(run, node_gpus)
            # May it use GPUs kept for the reserved run?  Only if it is sure to be gone in time.
            by: float | None
            if run.max_seconds is not None:
                by = now + run.max_seconds
            elif run.preemptible and cfg.preemptible_backfill:
                by = -math.inf
            else:
                by = (now + cfg.held_backfill_factor * seconds if cfg.held_backfill_factor > 0 else math.inf) \
                    if head_overdue else None
            key = (run.gpus, run.cpus, run.memory_bytes, run.nodes, run.gpus_per_node, seconds, by)
            seen = memo.get(key)
            reclaims = book.has_guarantees and book.within_share(run)
            # Later runs rank no higher, so a shape that failed at this state fails again.
            if seen is not None and seen[0] == fm.version and seen[1] == len(claimed) and not reclaims:
                waiting.append((run, seen[2], seen[3], seconds))
                continue
            may_preempt = has_victims and preempt_tries < cfg.max_preemption_attempts
            if run.gpus <= fm.total:
                start = fm.place(run, now + seconds, multi, by)
                if start is not None:
                    starts.append(start)
                    book.account(run)
                    continue

            # Preemption: guarantees first (a group owed its share), then service.
            is_head = head is None
            overdue = rank[1] == 0
            shape = (*key[:5], fm.version, len(claimed))
            if (may_preempt or reclaims) and shape not in failed:
                if victims is None:
                    victims = self._victims(held, fg, fu, now, overdue_after)
                    has_victims = bool(victims)
                if reclaims:
                    # A guarantee is taken back at once, newest borrowed run first (no minimum run time).
                    if borrowed is None:
                        borrowed = [h for h in book.borrowed() if not h.stopping]
                    cands = [h for h in borrowed if h.run_id not in claimed]
                    why = "guarantee"
                else:
                    preempt_tries += 1
                    # Only a wide head needs it: any GPU that frees serves a one-GPU run.
                    since = run.submitted_at if (is_head and cfg.head_preempts_backfill and run.gpus > 1 and
                                                 now - run.submitted_at
                                                 >= cfg.head_preempt_after_seconds) else None
                    cands = [h for vr, h in victims
                             if h.run_id not in claimed and self._outranks(rank, vr, overdue, since)]
                    why = "service"
                reclaim = fm.reclaim(run, multi, cands, [h for h in stopping if h.run_id not in claimed]) \
                    if cands else None
                if reclaim is None:
                    failed.add(shape)
                else:
                    fm.hold(reclaim.nodes, run)
                    book.account(run)
                    claimed.update(h.run_id for h in reclaim.victims + reclaim.stopping)
                    for h in reclaim.victims:
                        preempts.append(Preempt(h.run_id, run.run_id, preempt_reason(run, h, why, now)))
                    stops = reclaim.victims + reclaim.stopping
                    ids = ", ".join(f"run {h.run_id}" for h in stops)
                    waiting.append((run, "reclaim", f"Preempting: waiting for {ids} to stop and give back "
                                                   f"{'its GPUs' if len(stops) == 1 else 'their GPUs'}", seconds))
                    continue

            if head is None:
                head = (rank, run)
                head_overdue = overdue
            if (fm.reserved_for is None and reserve_tries < cfg.max_reservation_attempts
                    and key[:5] not in never_fits):
                reserve_tries += 1
                reason = self._reserve(run, multi, overdue, held, ends, claimed, fm, now)
                if reason is not None:
                    head_reason = reason
                    waiting.append((run, "head", reason, seconds))
                    continue
                never_fits.add(key[:5])
            if fm.reserved_for is not None and fm.fits_now(run, multi, False):
                if run.max_seconds is not None:
                    why = f"its {duration(run.max_seconds)} limit ends after that"
                elif head_overdue and cfg.held_backfill_factor > 0:
                    why = (f"it has no time limit and is not preemptible, and {cfg.held_backfill_factor:g} times its "
                           f"expected {duration(seconds)} would run past that (that run has waited too long to "
                           f"risk an estimate)")
                elif head_overdue:
                    why = "it has no time limit and is not preemptible, and that run has waited too long to risk it"
                else:
                    why = f"its expected {duration(seconds)} would run past that"
                kind, reason = "reserved", (
                    f"Reserved: the GPUs it could use are kept for run {fm.reserved_for}, "
                    f"due to start {when(fm.reserved_at, now)}; {why}")
            else:
                kind, reason = "resources", resources_reason(run, fm, multi)
                if head is not None and head[1].run_id != run.run_id:
                    reason += f"; behind run {head[1].run_id}: {ahead_because(head[0], rank)}"
                if key[:5] in never_fits and fm.reserved_for is None and not claimed:
                    reason += "; estimate unknown: the runs holding the GPUs have no time limit or end"
            if head is not None and head[1] is not run:
                memo[key] = (fm.version, len(claimed), kind, reason)
            waiting.append((run, kind, reason, seconds))

        del head_reason
        heap = release_heap(fm, held, ends, claimed, now) if cfg.estimate_starts else None
        entries = queue_entries(waiting, fm, heap, now)
        if tail_from < len(ranked) and head is not None:
            tail_entries(ranked, tail_from, head, fm, node_gpus, entries, heap, typical,
                         lambda group: self._typical(gusage, group))
        return Decisions(tuple(starts), tuple(entries), tuple(preempts), self._next_pass(snapshot, held, now, due))

    # ---------------------------------------------------------------- order
    def _factors(self, snapshot: ClusterSnapshot, held: dict[int, HeldRun],
                 quotas: Quotas) -> tuple[dict[str, float], dict[str, float]]:
        cfg, now = self.config, snapshot.now
        hl = cfg.half_life_seconds
        groups = set(map(attrgetter("group"), snapshot.queued)).union(map(attrgetter("group"), held.values()))
        owners = set(map(attrgetter("owner"), snapshot.queued)).union(map(attrgetter("owner"), held.values()))
        used = [(h, decayed_interval(h.gpus, h.started_at, now, now, hl)) for h in held.values()]
        fg = fair_share_factors(snapshot.group_usage, ((h.group, u) for h, u in used), groups,
                                {n: q.weight for n, q in quotas.groups.items()}, quotas.default_group.weight, now, hl)
        fu = fair_share_factors(snapshot.user_usage, ((h.owner, u) for h, u in used), owners,
                                {n: q.weight for n, q in quotas.users.items()}, quotas.default_user.weight, now, hl)
        w = cfg.user_weight
        return {g: (1 - w) * f for g, f in fg.items()}, {o: w * f for o, f in fu.items()}

    def overdue_after(self, snapshot: ClusterSnapshot) -> float:
        """How long a run may wait before it is overdue, for this snapshot (see ``overdue_factor``)."""
        cfg, now = self.config, snapshot.now
        if cfg.overdue_factor <= 0 or not snapshot.queued:
            return cfg.overdue_seconds
        waits = sorted(now - r.submitted_at - (r.attained_gpu_seconds / r.gpus if r.gpus else 0.0)
                       for r in snapshot.queued)
        median = waits[(len(waits) - 1) // 2]
        return min(cfg.overdue_seconds, max(cfg.overdue_min_seconds, cfg.overdue_factor * median))

    def _order(self, snapshot: ClusterSnapshot, book: QuotaBook, fg: dict[str, float], fu: dict[str, float],
               overdue_after: float) -> tuple[list[tuple[tuple, PendingRun]], float]:
        """(rank, run) in the order the pass considers them (a smaller rank goes
        first), and the earliest time a run that is not overdue will be.

        rank = (-priority, 0 if overdue else 1, -waited if overdue else borrowing, class, -score, submitted, id)."""
        cfg, now = self.config, snapshot.now
        aging = cfg.aging_seconds
        thresholds = cfg.thresholds
        borrowing = book.borrowing if book.has_guarantees else None
        bisect_right = bisect.bisect_right
        out = []
        append = out.append
        # Waited >= overdue_after, for a run that has not run yet, is submitted <= late_before.
        late_before = now - overdue_after
        oldest = math.inf  # submission (less time run) of the longest-waiting run not overdue
        lane = cfg.overdue_lane
        late: list[tuple[tuple, tuple, PendingRun]] = []
        for r in snapshot.queued:
            if r.gpus_per_node:
                r = normalized(r)
            att = r.attained_gpu_seconds
            sub = r.submitted_at
            if att:
                since = sub + (att / r.gpus if r.gpus else 0.0)
                cls = bisect_right(thresholds, att)
            else:
                since, cls = sub, 0
            if since > late_before:
                if since < oldest:
                    oldest = since
                append(((-r.priority, 1, 1.0 if borrowing is not None and borrowing(r) else 0.0, cls,
                         -(fg[r.group] + fu[r.owner] + (now - sub) / aging), sub, r.run_id), r))
                continue
            first = (-r.priority, 0, since - now, 0, 0.0, sub, r.run_id)
            if not lane:
                append((first, r))
                continue
            late.append((first, (-r.priority, 1, 1.0 if borrowing is not None and borrowing(r) else 0.0, cls,
                                 -(fg[r.group] + fu[r.owner] + (now - sub) / aging), sub, r.run_id), r))
        if late:
            # Only the ``overdue_lane`` longest-waiting overdue runs go first; the others keep their place.
            late.sort(key=itemgetter(0))
            out += [(first, r) for first, _, r in late[:lane]] + [(rank, r) for _, rank, r in late[lane:]]
        out.sort(key=itemgetter(0))
        return out, (oldest + overdue_after if oldest < math.inf else math.inf)

    def _victims(self, held: dict[int, HeldRun], fg: dict[str, float], fu: dict[str, float],
                 now: float, overdue: float) -> list[tuple[tuple, HeldRun]]:
        """Preemptible runs that have run long enough, worst first, each with its rank."""
        cfg = self.config
        thresholds, min_run = cfg.thresholds, cfg.min_run_seconds
        keyed = []
        for h in held.values():
            if not h.preemptible or h.is_notebook or h.stopping:
                continue
            started = h.started_at
            if now - started < min_run:
                continue
            if cfg.protect_overdue and h.submitted_at is not None and h.gpus and (
                    started - h.submitted_at - h.attained_gpu_seconds / h.gpus >= overdue):
                continue  # it has waited its share already: not preempted again for service
            cls = bisect.bisect_right(thresholds, h.attained_gpu_seconds + h.gpus * (now - started))
            score = fg.get(h.group, 0.0) + fu.get(h.owner, 0.0)
            if h.submitted_at is not None:
                score += (now - h.submitted_at) / cfg.aging_seconds  # its score were it queued again
            keyed.append(((-cls, score, -started, -h.run_id), (0, 1, 0.0, cls, -score, started, h.run_id), h))
        keyed.sort(key=lambda t: t[0])
        return [(rank, h) for _, rank, h in keyed]

    @staticmethod
    def _outranks(rank: tuple, victim: tuple, overdue: bool, head_since: float | None) -> bool:
        """May a queued run of ``rank`` preempt a running one of ``victim`` rank?

        Admin priority counts first; a higher service class always yields; an overdue
        run displaces any run that ranks below it; the run that would hold the
        reservation (``head_since``: when it was submitted) displaces runs of its own
        class that started while it waited (they backfilled in front of it)."""
        if rank[0] != victim[0]:
            return rank[0] < victim[0]
        if victim[3] > rank[3] or overdue:
            return True
        # ...and only those that would rank below it if queued again, or they would take the GPUs back.
        return head_since is not None and victim[3] == rank[3] and victim[5] > head_since and victim[4] > rank[4]

    # ---------------------------------------------------------------- reservation
    def _reserve(self, run: PendingRun, multi: bool, overdue: bool, held: dict[int, HeldRun],
                 ends: dict[int, tuple[float, bool]], claimed: set[int], fm: FreeMap, now: float) -> str | None:
        releases: list[Release] = []
        for rid, h in held.items():
            end = ends[rid][0]
            if end == math.inf or rid in claimed:
                continue
            for p in h.parts:
                releases.append((end, p.node, len(p.gpus), p.cpus, p.memory_bytes))
        releases += fm.started
        if overdue and not multi:
            at = self._reserve_held(run, releases, fm)
        else:
            at = fm.reserve(run, releases, multi, 1)
        if at is None:
            return None
        nodes = sorted(fm.caps)
        last = [rid for rid, h in held.items() if rid not in claimed and ends[rid][0] == at
                and any(p.node in fm.caps for p in h.parts)]
        if at <= now or not last:
            start = f"starts {when(max(at, now), now)}"
        else:
            certain = all(ends[rid][1] for rid in last)
            who = ", ".join(f"run {rid}" for rid in sorted(last)[:3])
            start = f"starts when {who} {'ends' if len(last) == 1 else 'end'}, {when(at, now)}"
            if not certain:
                start += " (estimated: no time limit, so the end is a guess from runs like it)"
        how = "held: nothing that could delay it is placed there" if overdue else "backfill may use them"
        return f"Reserved: {start} on {', '.join(nodes[:4])}{' and more' if len(nodes) > 4 else ''} ({how})"

    @staticmethod
    def _reserve_held(run: PendingRun, releases: list[Release], fm: FreeMap) -> float | None:
        """A one-node reservation that stays put: on the node with the most GPUs free now
        (then the earliest expected to fit), keeping every GPU free there for the run."""
        by_node: dict[str, list[tuple[float, int]]] = {}
        for end, name, g, _, _ in releases:
            by_node.setdefault(name, []).append((end, g))
        best: tuple | None = None
        for name, n in fm.free.items():
            if len(n.node.gpus) < run.gpus or n.node.cpus < run.cpus or (
                    n.node.memory_bytes and n.node.memory_bytes < run.memory_bytes):
                continue
            have, at = len(n.gpus), -math.inf
            for end, g in sorted(by_node.get(name, ())):
                if have >= run.gpus:
                    break
                have, at = have + g, end
            if have < run.gpus:
                continue
            cand = (-len(n.gpus), at, name)
            if best is None or cand < best:
                best = cand
        if best is None:
            return None
        _, at, name = best
        n = fm.free[name]
        caps = {name: [len(n.gpus) - run.gpus, n.cpus - run.cpus, n.memory_bytes - run.memory_bytes]}
        return fm._set_reservation(run, max(at, 0.0), caps)

    def _next_pass(self, snapshot: ClusterSnapshot, held: dict[int, HeldRun], now: float,
                   due: float) -> float | None:
        """When the order may change with nothing else happening: a running run reaches
        the next class or its minimum run time, a queued run becomes overdue (``due``)."""
        if not snapshot.queued:
            return None
        cfg, best = self.config, due
        thresholds, min_run = cfg.thresholds, cfg.min_run_seconds
        for h in held.values():
            if not h.preemptible or h.stopping or h.is_notebook or not h.gpus:
                continue
            if now - h.started_at < min_run:
                best = min(best, h.started_at + min_run)
                continue
            att = h.attained_gpu_seconds + h.gpus * (now - h.started_at)
            i = bisect.bisect_right(thresholds, att)
            if i < len(thresholds):
                best = min(best, now + (thresholds[i] - att) / h.gpus)
        if best == math.inf:
            return None
        r = cfg.round_seconds
        return math.ceil(best / r) * r if r > 0 else best + 1e-6


def waited_so_far(run: PendingRun, now: float) -> float:
    """How long ``run`` has waited in all since it was submitted (time it ran, in
    earlier attempts, taken out)."""
    ran = run.attained_gpu_seconds / run.gpus if run.gpus else 0.0
    return now - run.submitted_at - ran

