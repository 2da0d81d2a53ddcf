"""Which queued run starts next, and on which GPUs: a pure function of a snapshot.

Nothing here does I/O or reads a clock: the live service and the simulator build a
``ClusterSnapshot`` and call ``Policy.decide``.  The result says which runs start on
which GPUs, which running runs to preempt and, for every run that keeps waiting,
its position, a reason a person can read and, where the policy can tell, an
estimated start time.

This module holds the vocabulary shared by every policy (the snapshot and the
decisions), the placement helpers, and ``PriorityFifoPolicy``, the strict-order
baseline.  The platform's policy is ``servicefair.ServiceFairPolicy`` (the
earlier ``fairshare.FairSharePolicy`` stays as ``fair-share-classic``).  Every field
added after the first version has a default, so older callers keep working.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .policy_types import Allocation, HeldRun, Node, PendingRun

if TYPE_CHECKING:
    from .quotas import Quotas
    from .usage import Usage


def normalized(run: PendingRun) -> PendingRun:
    """``run`` with ``gpus`` made consistent with its shape (``nodes * gpus_per_node``)."""
    if run.gpus_per_node > 0 and (run.nodes < 1 or run.gpus != run.nodes * run.gpus_per_node):
        n = max(run.nodes, 1)
        return replace(run, nodes=n, gpus=n * run.gpus_per_node)
    return run


def typical_seconds(usage: Mapping[str, Usage], group: str, default: float) -> float:
    """How long ``group``'s runs typically take, from its history; ``default`` without one."""
    u = usage.get(group)
    return u.typical_run_seconds if u is not None and u.typical_run_seconds else default


def expected_seconds(run: PendingRun, usage: Mapping[str, Usage], default: float) -> float:
    """How long ``run`` is expected to hold its GPUs: its limit, else the caller's estimate, else its group's
    typical run time."""
    if run.max_seconds is not None:
        return run.max_seconds
    if run.estimated_seconds is not None:
        return run.estimated_seconds
    return typical_seconds(usage, run.group, default)


def spans_nodes(run: PendingRun, node_gpus: int) -> bool:
    """Whether ``run`` goes on several nodes: a shaped gang of ``nodes > 1``, or an
    unshaped run bigger than the largest node (``node_gpus``)."""
    if run.gpus_per_node > 0:
        return run.nodes > 1
    return run.gpus > node_gpus


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything a policy may look at.  ``group_usage`` / ``user_usage`` carry the
    decayed usage history (see ``usage.UsageLedger``); ``quotas``, when given,
    replace the policy's configured quotas so an admin's change applies at once."""

    nodes: tuple[Node, ...]
    running: tuple[Allocation, ...] = ()
    queued: tuple[PendingRun, ...] = ()
    now: float = 0.0
    group_usage: Mapping[str, Usage] = field(default_factory=dict, hash=False)
    user_usage: Mapping[str, Usage] = field(default_factory=dict, hash=False)
    quotas: Quotas | None = None


@dataclass(frozen=True)
class StartRun:
    """Start ``run_id`` now.  ``node``/``gpus`` are its (first) node and GPUs; a
    run spread over nodes lists every ``(node, gpus)`` pair in ``placements``."""

    run_id: int
    node: str
    gpus: tuple[int, ...]
    placements: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def all_placements(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return self.placements or ((self.node, self.gpus),)


@dataclass(frozen=True)
class Preempt:
    """Stop ``run_id`` (signal it, then requeue it) so that ``for_run`` can start."""

    run_id: int
    for_run: int
    reason: str


class QueueEntry(NamedTuple):
    """A run that keeps waiting.  ``reserved_nodes`` names the nodes kept for it
    when it holds the reservation (empty otherwise).  A named tuple, not a
    dataclass: a pass makes one per queued run, and this is four times cheaper."""

    run_id: int
    position: int
    reason: str
    estimated_start: float | None = None
    reserved_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decisions:
    """What one pass decided.  ``next_pass_at``, when set, is the latest time at
    which the policy wants to be asked again although nothing else happened (an
    attained-service policy's order changes as running runs accumulate service;
    estimated starts go stale); callers may ask earlier."""

    starts: tuple[StartRun, ...] = ()
    waiting: tuple[QueueEntry, ...] = ()
    preemptions: tuple[Preempt, ...] = ()
    next_pass_at: float | None = None


class Policy(Protocol):
    def decide(self, snapshot: ClusterSnapshot) -> Decisions: ...


@dataclass
class _FreeNode:
    node: Node
    gpus: list[int]
    cpus: int
    memory_bytes: int

    def fits(self, run: PendingRun) -> bool:
        return self.hosts(run.gpus, run.cpus, run.memory_bytes)

    def hosts(self, gpus: int, cpus: int, memory_bytes: int) -> bool:
        """Whether this node has ``gpus`` GPUs, ``cpus`` CPUs and the memory free."""
        return (
            len(self.gpus) >= gpus
            and self.cpus >= cpus
            and (self.node.memory_bytes == 0 or self.memory_bytes >= memory_bytes)
        )

    def take(self, run: PendingRun) -> tuple[int, ...]:
        return self.take_some(run.gpus, run.cpus, run.memory_bytes)

    def take_some(self, gpus: int, cpus: int, memory_bytes: int) -> tuple[int, ...]:
        taken, self.gpus = self.gpus[:gpus], self.gpus[gpus:]
        self.cpus -= cpus
        self.memory_bytes -= memory_bytes
        return tuple(taken)

    def usable_gpus(self, run: PendingRun) -> int:
        """How many of this run's GPUs this node could host, with CPUs and memory
        in proportion (for runs spread over several nodes)."""
        n = len(self.gpus)
        if run.cpus > 0:
            n = min(n, self.cpus * run.gpus // run.cpus)
        if run.memory_bytes > 0 and self.node.memory_bytes:
            n = min(n, self.memory_bytes * run.gpus // run.memory_bytes)
        return max(n, 0)


def held_runs(snapshot: ClusterSnapshot) -> dict[int, HeldRun]:
    """The snapshot's allocations grouped by run (a multi-node run has several)."""
    held: dict[int, HeldRun] = {}
    for a in snapshot.running:
        h = held.get(a.run_id)
        if h is None:
            held[a.run_id] = HeldRun(a.run_id, a.owner, a.group, len(a.gpus), a.preemptible, a.is_notebook,
                                     a.started_at, a.expected_end, a.stopping, [a], a.attained_gpu_seconds,
                                     a.estimated_end, a.submitted_at)
        else:
            h.gpus += len(a.gpus)
            h.parts.append(a)
    return held


def free_resources(snapshot: ClusterSnapshot) -> dict[str, _FreeNode]:
    """What each node has left once the running runs' allocations are taken away."""
    taken: dict[str, list] = {}
    for alloc in snapshot.running:
        t = taken.get(alloc.node)
        if t is None:
            taken[alloc.node] = [set(alloc.gpus), alloc.cpus, alloc.memory_bytes]
        else:
            t[0].update(alloc.gpus)
            t[1] += alloc.cpus
            t[2] += alloc.memory_bytes
    free = {}
    for n in snapshot.nodes:
        t = taken.get(n.name)
        if t is None:
            free[n.name] = _FreeNode(n, sorted(n.gpus), n.cpus, n.memory_bytes)
        else:
            held = t[0]
            free[n.name] = _FreeNode(n, [g for g in sorted(n.gpus) if g not in held], n.cpus - t[1],
                                     n.memory_bytes - t[2])
    return free


def queue_order(run: PendingRun) -> tuple:
    return (-run.priority, run.submitted_at, run.run_id)


def best_fit(free: dict[str, _FreeNode], run: PendingRun) -> _FreeNode | None:
    """The fitting node with the fewest free GPUs, to keep large blocks whole."""
    fitting = [n for n in free.values() if n.fits(run)]
    if not fitting:
        return None
    return min(fitting, key=lambda n: (len(n.gpus), n.node.name))


def largest_node(nodes: tuple[Node, ...]) -> int:
    """GPUs on the biggest node: a run asking for more must span several nodes."""
    return max((len(n.gpus) for n in nodes), default=0)


def share(total: int, part: int, whole: int) -> int:
    """``total`` split in proportion ``part / whole``, rounded up."""
    return -(-total * part // whole) if whole else 0


def spread(free: dict[str, _FreeNode], run: PendingRun,
           usable: dict[str, int] | None = None) -> list[tuple[_FreeNode, int]] | None:
    """Place a run that spans nodes on as few nodes as possible, or None.

    Nodes are taken fullest-free first (which minimises their number); the last
    share goes to the node with the fewest free GPUs that still holds it, so
    large free blocks stay whole.  ``usable`` may cap what a node can give.
    """
    counts = []
    for n in free.values():
        k = n.usable_gpus(run)
        if usable is not None:
            k = min(k, usable.get(n.node.name, k))
        if k > 0:
            counts.append((k, n))
    if sum(k for k, _ in counts) < run.gpus:
        return None
    counts.sort(key=lambda kn: (-kn[0], kn[1].node.name))
    chosen: list[tuple[_FreeNode, int]] = []
    left = run.gpus
    for i, (k, n) in enumerate(counts):
        if k >= left:
            last = min((c for c in counts[i:] if c[0] >= left), key=lambda c: (c[0], c[1].node.name))
            chosen.append((last[1], left))
            return chosen
        chosen.append((n, k))
        left -= k
    return None


def take_spread(run: PendingRun, chosen: list[tuple[_FreeNode, int]]) -> StartRun:
    """Take the GPUs ``spread`` chose and say so as one StartRun."""
    placements = tuple(
        (n.node.name, n.take_some(k, share(run.cpus, k, run.gpus), share(run.memory_bytes, k, run.gpus)))
        for n, k in chosen
    )
    return StartRun(run.run_id, placements[0][0], placements[0][1], placements if len(placements) > 1 else ())


def node_can_host(node: Node, run: PendingRun) -> bool:
    """Whether an empty ``node`` could host one node's share of the shaped ``run``."""
    return (len(node.gpus) >= run.gpus_per_node and node.cpus >= run.cpus
            and (node.memory_bytes == 0 or node.memory_bytes >= run.memory_bytes))


def shaped_capacity(nodes: Iterable[Node], run: PendingRun) -> list[str]:
    """The names of the nodes that could ever host one node's share of ``run``."""
    return sorted(n.name for n in nodes if node_can_host(n, run))


def shaped_fit(free: dict[str, _FreeNode], run: PendingRun) -> list[_FreeNode] | None:
    """``run.nodes`` distinct nodes that each have ``run.gpus_per_node`` GPUs (and the
    run's CPUs and memory) free, best fit first (fewest free GPUs, then name), or None."""
    fitting = sorted((n for n in free.values() if n.hosts(run.gpus_per_node, run.cpus, run.memory_bytes)),
                     key=lambda n: (len(n.gpus), n.node.name))
    return fitting[:run.nodes] if len(fitting) >= run.nodes else None


def take_shaped(run: PendingRun, chosen: list[_FreeNode]) -> StartRun:
    """Take ``gpus_per_node`` GPUs (and the per-node CPUs and memory) on each chosen node."""
    placements = tuple((n.node.name, n.take_some(run.gpus_per_node, run.cpus, run.memory_bytes)) for n in chosen)
    return StartRun(run.run_id, placements[0][0], placements[0][1], placements if len(placements) > 1 else ())


def _names(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _shape(run: PendingRun, free: bool) -> str:
    word = "free " if free else ""
    extra = []
    if run.cpus:
        extra.append(f"{run.cpus} {word}CPUs")
    if run.memory_bytes:
        extra.append(f"{run.memory_bytes} bytes of {word}memory")
    gpus = _plural(run.gpus_per_node, f"{word}GPU")
    what = gpus if not extra else f"{gpus} and {' and '.join(extra)}"
    nodes = _plural(run.nodes, "node")
    return f"{nodes} with {what}" + (" each" if run.nodes > 1 else "")


def shaped_never_reason(run: PendingRun, capable: list[str]) -> str:
    """Why the shaped ``run`` can never start on this cluster (too few nodes large enough)."""
    where = f" ({_names(capable)})" if capable else ""
    return (f"Resources: needs {_shape(run, False)}; the cluster has {_plural(len(capable), 'such node')}{where}, "
            f"so it cannot start until such nodes are added")


def shaped_reason(run: PendingRun, hosts: list[str]) -> str:
    """Why the shaped ``run`` cannot start now; ``hosts`` are the nodes with its share free."""
    where = f" ({_names(hosts)})" if hosts else ""
    return f"Resources: needs {_shape(run, True)}; the cluster has {_plural(len(hosts), 'such node')} now{where}"


@dataclass
class PriorityFifoPolicy:
    """Strict priority-then-submit order, all-or-nothing GPU allocation, no backfill.

    A run starts only when every run ahead of it has started, so a large run is
    never starved by a stream of small ones.  A run asking for more GPUs than one
    node has is spread over the fewest nodes; a shaped gang takes exactly its
    ``nodes`` best-fitting nodes.  A shaped run the cluster can never host (too few
    nodes large enough) waits with a reason and holds nobody up.
    """

    name: str = field(default="priority-fifo")

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        free = free_resources(snapshot)
        node_gpus = largest_node(snapshot.nodes)
        starts: list[StartRun] = []
        waiting: list[QueueEntry] = []
        blocked_by: PendingRun | None = None
        behind = ""
        capable: dict[tuple, list[str]] = {}
        for run in sorted(snapshot.queued, key=queue_order):
            run = normalized(run)
            if run.shaped:
                shape = (run.nodes, run.gpus_per_node, run.cpus, run.memory_bytes)
                if shape not in capable:
                    capable[shape] = shaped_capacity(snapshot.nodes, run)
                if len(capable[shape]) < run.nodes:
                    waiting.append(QueueEntry(run.run_id, len(waiting) + 1, shaped_never_reason(run, capable[shape])))
                    continue
            if blocked_by is None:
                if run.shaped and run.nodes > 1:
                    picked = shaped_fit(free, run)
                    if picked is not None:
                        starts.append(take_shaped(run, picked))
                        continue
                elif spans_nodes(run, node_gpus):
                    chosen = spread(free, run)
                    if chosen is not None:
                        starts.append(take_spread(run, chosen))
                        continue
                else:
                    node = best_fit(free, run)
                    if node is not None:
                        starts.append(StartRun(run.run_id, node.node.name, node.take(run)))
                        continue
                blocked_by = run
                reason = resources_reason(run, free, node_gpus)
                behind = f"Priority: waiting for run {run.run_id} ahead in the queue to start"
            else:
                reason = behind
            waiting.append(QueueEntry(run.run_id, len(waiting) + 1, reason))
        return Decisions(tuple(starts), tuple(waiting))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def resources_reason(run: PendingRun, free: dict[str, _FreeNode], node_gpus: int | None = None) -> str:
    """Why the free resources cannot host ``run`` right now, in one sentence."""
    if run.shaped:
        hosts = sorted((n for n in free.values() if n.hosts(run.gpus_per_node, run.cpus, run.memory_bytes)),
                       key=lambda n: (len(n.gpus), n.node.name))
        return shaped_reason(run, [n.node.name for n in hosts])
    total_free = sum(len(n.gpus) for n in free.values())
    if node_gpus is not None and run.gpus > node_gpus:
        return (f"Resources: needs {_plural(run.gpus, 'GPU')} across nodes; "
                f"{total_free} free in the cluster")
    most_gpus = max((len(n.gpus) for n in free.values()), default=0)
    if most_gpus < run.gpus:
        return (
            f"Resources: needs {_plural(run.gpus, 'GPU')} on one node; "
            f"{total_free} free in the cluster, at most {most_gpus} on one node"
        )
    most_cpus = max((n.cpus for n in free.values()), default=0)
    if most_cpus < run.cpus:
        return f"Resources: needs {run.cpus} CPUs on one node; at most {most_cpus} free"
    return f"Resources: needs {run.memory_bytes} bytes of memory on one node"

