"""Which queued run starts next, and on which GPUs: a pure function of a snapshot.

Nothing here does I/O or reads a clock: the live service and the simulator build a
``ClusterSnapshot`` and call ``Policy.decide``.  The result says which runs start on
which GPUs and, for every run that keeps waiting, its position and a reason a
person can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Node:
    name: str
    gpus: tuple[int, ...]
    cpus: int
    memory_bytes: int


@dataclass(frozen=True)
class Allocation:
    """Resources held by a run that has started."""

    run_id: int
    owner: str
    node: str
    gpus: tuple[int, ...]
    cpus: int = 0
    memory_bytes: int = 0


@dataclass(frozen=True)
class PendingRun:
    run_id: int
    owner: str
    gpus: int
    cpus: int = 0
    memory_bytes: int = 0
    priority: int = 0
    submitted_at: float = 0.0


@dataclass(frozen=True)
class ClusterSnapshot:
    nodes: tuple[Node, ...]
    running: tuple[Allocation, ...] = ()
    queued: tuple[PendingRun, ...] = ()
    now: float = 0.0


@dataclass(frozen=True)
class StartRun:
    run_id: int
    node: str
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class QueueEntry:
    run_id: int
    position: int
    reason: str


@dataclass(frozen=True)
class Decisions:
    starts: tuple[StartRun, ...] = ()
    waiting: tuple[QueueEntry, ...] = ()


class Policy(Protocol):
    def decide(self, snapshot: ClusterSnapshot) -> Decisions: ...


@dataclass
class _FreeNode:
    node: Node
    gpus: list[int]
    cpus: int
    memory_bytes: int

    def fits(self, run: PendingRun) -> bool:
        return (
            len(self.gpus) >= run.gpus
            and self.cpus >= run.cpus
            and (self.node.memory_bytes == 0 or self.memory_bytes >= run.memory_bytes)
        )

    def take(self, run: PendingRun) -> tuple[int, ...]:
        taken, self.gpus = self.gpus[: run.gpus], self.gpus[run.gpus :]
        self.cpus -= run.cpus
        self.memory_bytes -= run.memory_bytes
        return tuple(taken)


def free_resources(snapshot: ClusterSnapshot) -> dict[str, _FreeNode]:
    """What each node has left once the running runs' allocations are taken away."""
    free = {
        n.name: _FreeNode(n, sorted(n.gpus), n.cpus, n.memory_bytes) for n in snapshot.nodes
    }
    for alloc in snapshot.running:
        node = free.get(alloc.node)
        if node is None:
            continue
        held = set(alloc.gpus)
        node.gpus = [g for g in node.gpus if g not in held]
        node.cpus -= alloc.cpus
        node.memory_bytes -= alloc.memory_bytes
    return free


def queue_order(run: PendingRun) -> tuple:
    return (-run.priority, run.submitted_at, run.run_id)


def best_fit(free: dict[str, _FreeNode], run: PendingRun) -> _FreeNode | None:
    """The fitting node with the fewest free GPUs, to keep large blocks whole."""
    fitting = [n for n in free.values() if n.fits(run)]
    if not fitting:
        return None
    return min(fitting, key=lambda n: (len(n.gpus), n.node.name))


@dataclass
class PriorityFifoPolicy:
    """Strict priority-then-submit order, all-or-nothing GPU allocation, no backfill.

    A run starts only when every run ahead of it has started, so a large run is
    never starved by a stream of small ones.
    """

    name: str = field(default="priority-fifo")

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        free = free_resources(snapshot)
        starts: list[StartRun] = []
        waiting: list[QueueEntry] = []
        blocked_by: PendingRun | None = None
        for run in sorted(snapshot.queued, key=queue_order):
            if blocked_by is None:
                node = best_fit(free, run)
                if node is not None:
                    starts.append(StartRun(run.run_id, node.node.name, node.take(run)))
                    continue
                blocked_by = run
                reason = _resources_reason(run, free)
            else:
                reason = f"Priority: waiting for run {blocked_by.run_id} ahead in the queue to start"
            waiting.append(QueueEntry(run.run_id, len(waiting) + 1, reason))
        return Decisions(tuple(starts), tuple(waiting))


def _resources_reason(run: PendingRun, free: dict[str, _FreeNode]) -> str:
    most_gpus = max((len(n.gpus) for n in free.values()), default=0)
    if most_gpus < run.gpus:
        total_free = sum(len(n.gpus) for n in free.values())
        return (
            f"Resources: needs {run.gpus} GPU{'s' if run.gpus != 1 else ''} on one node; "
            f"{total_free} free in the cluster, at most {most_gpus} on one node"
        )
    most_cpus = max((n.cpus for n in free.values()), default=0)
    if most_cpus < run.cpus:
        return f"Resources: needs {run.cpus} CPUs on one node; at most {most_cpus} free"
    return f"Resources: needs {run.memory_bytes} bytes of memory on one node"
