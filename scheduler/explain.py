"""What the default policy tells people: reasons and estimated starts.

Kept apart from ``servicefair`` (which decides) so each stays readable.  Pure:
times are formatted from the snapshot's clock, in UTC, never from the machine's.
Estimated starts are recomputed from scratch on every pass, from when running
runs are expected to end, so they move with the queue and never lie in the past.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

from .placement import FreeMap
from .policy import HeldRun, PendingRun, QueueEntry, shaped_reason, spans_nodes


def duration(seconds: float) -> str:
    """``45 s``, ``25 min`` or ``3.2 h``."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def clock(t: float) -> str:
    """``t`` as a UTC wall-clock time a person reads, e.g. ``14:05 UTC`` (a date when not today)."""
    return time.strftime("%H:%M UTC", time.gmtime(t))


def when(t: float, now: float) -> str:
    """``about 14:05 UTC (in 25 min)``, with the date when it is not today."""
    day = "" if int(t // 86400) == int(now // 86400) else time.strftime(" on %b %d", time.gmtime(t))
    return f"about {clock(t)}{day} (in {duration(t - now)})"


def ahead_because(ahead: tuple, mine: tuple) -> str:
    """Why a run of rank ``ahead`` goes before one of rank ``mine`` (``ServiceFairPolicy`` ranks)."""
    if ahead[0] != mine[0]:
        return "admin priority"
    if ahead[1] == 0:
        return "it has waited longest (past the overdue bound)"
    if ahead[2] != mine[2]:
        return "it is within its group's guarantee"
    if ahead[3] != mine[3]:
        return "it has had less GPU time so far"
    return "fair share and waiting time"


def resources_reason(run: PendingRun, fm: FreeMap, multi: bool) -> str:
    """Why what is free now cannot host ``run``, in one sentence."""
    if run.shaped:
        return shaped_reason(run, fm.shaped_hosts(run))
    gpus = f"{run.gpus} GPU{'s' if run.gpus != 1 else ''}"
    if multi:
        return f"Resources: needs {gpus} across nodes; {fm.total} free in the cluster"
    most = fm.max_free()
    if most < run.gpus:
        return f"Resources: needs {gpus} on one node; {fm.total} free in the cluster, at most {most} on one node"
    return (f"Resources: no node with {gpus} free also has {run.cpus} CPUs and "
            f"{run.memory_bytes} bytes of memory free")

def preempt_reason(run: PendingRun, h: HeldRun, why: str, now: float) -> str:
    """What a preempted run is told (``why``: ``guarantee`` or ``service``)."""
    if why == "guarantee":
        return (f"Preempted: group {run.group} needs its guaranteed GPUs back for run {run.run_id}; "
                f"this run was borrowing idle GPUs beyond group {h.group}'s guarantee")
    return (f"Preempted for run {run.run_id}: this run has had {h.attained(now) / 3600:.1f} GPU-hours, "
            f"run {run.run_id} {run.attained_gpu_seconds / 3600:.1f}; runs with less GPU time go first "
            f"(it resumes from its last checkpoint)")

class FreeTimes:
    """When GPUs are expected to come free, for estimated starts: a heap of
    ``(time, count)`` (node boundaries ignored), so a run of many GPUs costs a few
    heap steps, not one per GPU."""

    __slots__ = ("heap", "now", "size")

    def __init__(self, now: float, free: int, releases: list[tuple[float, int]]):
        self.now = now
        heap = [(now, free)] if free > 0 else []
        heap += [r for r in releases if r[1] > 0]
        heapq.heapify(heap)
        self.heap = heap
        self.size = sum(c for _, c in heap)

    def take(self, need: int, seconds: float) -> float | None:
        """When a run of ``need`` GPUs for ``seconds`` starts, after every run taken before
        it (the time its ``need``-th GPU comes free, not before now), or None if there are
        never that many; its GPUs come back ``seconds`` later."""
        if need > self.size:
            return None
        now = self.now
        if need <= 0:
            return now
        heap = self.heap
        t, c = heap[0]
        if c == need:  # the common case: one heap step
            est = t if t > now else now
            heapq.heapreplace(heap, (est + seconds, need))
            return est
        left = need
        while True:
            t, c = heap[0]
            if c > left:
                heapq.heapreplace(heap, (t, c - left))
                break
            heapq.heappop(heap)
            left -= c
            if not left:
                break
        est = t if t > now else now
        heapq.heappush(heap, (est + seconds, need))
        return est

    def add(self, at: float, count: int) -> None:
        """``count`` more GPUs come free at ``at`` (and stay in the pool)."""
        heapq.heappush(self.heap, (at, count))
        self.size += count


def release_heap(fm: FreeMap, held: dict[int, HeldRun], ends: dict[int, tuple[float, bool]], claimed: set[int],
                 now: float) -> FreeTimes:
    """The cluster's GPUs and when each is expected to be free (now for free GPUs).
    GPUs of notebooks and of claimed runs never come back."""
    releases = [(ends[rid][0], h.gpus) for rid, h in held.items()
                if rid not in claimed and ends[rid][0] != math.inf]
    releases += [(end, g) for end, _, g, _, _ in fm.started]
    return FreeTimes(now, fm.total, releases)


def queue_entries(waiting: list[tuple[PendingRun, str, str, float]], fm: FreeMap, heap: FreeTimes | None,
                  now: float) -> list[QueueEntry]:
    """Positions, reasons and estimated starts, recomputed from scratch every pass.

    The queue is replayed in order on ``heap`` (``release_heap``: GPUs that come
    back when runs are expected to end; the reserved run gets its reservation
    time), which it leaves as the runs after these would find it.  ``heap`` None:
    no estimates.  Runs held by a quota or that can never fit get none."""
    reserved_nodes = tuple(sorted(fm.caps))
    if heap is None:
        return [QueueEntry(r.run_id, i, reason, None, reserved_nodes if kind == "head" else ())
                for i, (r, kind, reason, _) in enumerate(waiting, 1)]
    out: list[QueueEntry] = []
    append, make, take = out.append, tuple.__new__, heap.take
    est: float | None
    for i, (run, kind, reason, seconds) in enumerate(waiting, 1):
        if kind == "resources" or kind == "reserved":
            append(make(QueueEntry, (run.run_id, i, reason, take(run.gpus, seconds), ())))
            continue
        if kind in ("quota", "never"):
            est = None
        elif kind == "reclaim":
            est = now
            heap.add(now + seconds, run.gpus)
        else:
            est = take(run.gpus, seconds)
            if kind == "head":
                est = max(fm.reserved_at, now)
        append(make(QueueEntry, (run.run_id, i, reason, est, reserved_nodes if kind == "head" else ())))
    return out


def tail_entries(ranked: list[tuple[tuple, PendingRun]], start: int, head: tuple[tuple, PendingRun], fm: FreeMap,
                 node_gpus: int, entries: list[QueueEntry], heap: FreeTimes | None, typical: dict[str, float],
                 typical_of: Callable[[str], float]) -> None:
    """The runs left once no GPU is free and nothing more can be tried: each waits for
    resources, behind the first run that could not start, with its estimated start
    from ``heap`` (as ``queue_entries`` would give it).  One reason per size and
    cause, and one loop that makes the entries at once, so a long queue costs little.
    ``typical_of(group)`` is the run time assumed for a group's runs without an
    estimate (kept in ``typical``)."""
    reasons: dict[tuple | int, str] = {}
    head_rank, head_id = head[0], head[1].run_id
    h0, h2, h3 = head_rank[0], head_rank[2], head_rank[3]
    head_late = head_rank[1] == 0
    append, make = entries.append, tuple.__new__
    take = heap.take if heap is not None else None
    pool = heap.heap if heap is not None else []
    now = heap.now if heap is not None else 0.0
    heapreplace = heapq.heapreplace
    est: float | None = None
    position = len(entries)
    for rank, run in ranked[start:]:
        position += 1
        # Why the head goes first (``ahead_because``), as a small code.
        cause = 0 if rank[0] != h0 else 1 if head_late else 2 if rank[2] != h2 else 3 if rank[3] != h3 else 4
        need = run.gpus
        # Nothing is free here, so an unshaped run's reason depends on its GPUs only.
        why = (need, run.cpus, run.memory_bytes, run.gpus_per_node, cause) \
            if run.gpus_per_node or need <= 0 else need * 8 + cause
        reason = reasons.get(why)
        if reason is None:
            reason = reasons[why] = (f"{resources_reason(run, fm, spans_nodes(run, node_gpus))}; "
                                     f"behind run {head_id}: {ahead_because(head_rank, rank)}")
        if take is not None:
            seconds = run.max_seconds
            if seconds is None:
                seconds = run.estimated_seconds
                if seconds is None:
                    seconds = typical.get(run.group) or typical.setdefault(
                        run.group, typical_of(run.group))
            t, c = pool[0] if pool else (0.0, 0)
            if c == need:  # FreeTimes.take's common case, inline
                est = t if t > now else now
                heapreplace(pool, (est + seconds, need))
            else:
                est = take(need, seconds)
        append(make(QueueEntry, (run.run_id, position, reason, est, ())))
