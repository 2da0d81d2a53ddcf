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

from .placement import FreeMap
from .policy import HeldRun, PendingRun, QueueEntry, shaped_reason


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

def queue_entries(waiting: list[tuple[PendingRun, str, str, float]], fm: FreeMap, held: dict[int, HeldRun],
                  ends: dict[int, tuple[float, bool]], claimed: set[int], now: float,
                  estimate: bool = True) -> tuple[QueueEntry, ...]:
    """Positions, reasons and estimated starts, recomputed from scratch every pass.

    The queue is replayed in order on a pool of GPUs that come back when runs
    are expected to end (node boundaries ignored; the reserved run gets its
    reservation time).  Runs held by a quota or that can never fit get none."""
    reserved_nodes = tuple(sorted(fm.caps))
    if not estimate:
        return tuple(QueueEntry(r.run_id, i, reason, None, reserved_nodes if kind == "head" else ())
                     for i, (r, kind, reason, _) in enumerate(waiting, 1))
    heap = [now] * fm.total
    for rid, h in held.items():
        end = ends[rid][0]
        if end != math.inf and rid not in claimed:
            heap.extend([end] * h.gpus)
    for end, _, g, _, _ in fm.started:
        heap.extend([end] * g)
    heapq.heapify(heap)
    heappop, heappush, heapreplace = heapq.heappop, heapq.heappush, heapq.heapreplace
    out: list[QueueEntry] = []
    append, make, size = out.append, tuple.__new__, len(heap)
    est: float | None
    for i, (run, kind, reason, seconds) in enumerate(waiting, 1):
        need = run.gpus
        if need == 1 and size and (kind == "resources" or kind == "reserved"):
            est = heap[0] if heap[0] > now else now
            heapreplace(heap, est + seconds)
            append(make(QueueEntry, (run.run_id, i, reason, est, ())))
            continue
        if kind in ("quota", "never"):
            est = None
        elif kind == "reclaim":
            est = now
            for _ in range(need):
                heappush(heap, now + seconds)
            size += need
        elif need <= 0:
            est = now
        elif need > size:
            est = None
        elif need == 1:
            est = max(now, heap[0])
            heapreplace(heap, est + seconds)
        else:
            taken = [heappop(heap) for _ in range(need)]
            est = max(now, taken[-1])
            for _ in range(need):
                heappush(heap, est + seconds)
        if kind == "head":
            est = max(fm.reserved_at, now)
        append(make(QueueEntry, (run.run_id, i, reason, est, reserved_nodes if kind == "head" else ())))
    return tuple(out)
