"""Gang placement, the backfill reservation and preemption victims, for one pass.

``FreeMap`` is what is free while a pass decides.  It places a run all at once or
not at all (a gang): on the node with the fewest free GPUs that fits (best fit,
which keeps large blocks whole), or, for a run bigger than any node, on the fewest
nodes in uneven shares.  A *shaped* gang (``PendingRun.gpus_per_node > 0`` with
``nodes > 1``, as torchrun needs) goes on exactly ``nodes`` distinct nodes with
``gpus_per_node`` GPUs (and its CPUs and memory) on each, again best fit.  Every
method's ``multi`` means "spans nodes" (``policy.spans_nodes``); which of the two
multi-node kinds a run is comes from the run itself.  Nodes sit in buckets by free-GPU count, so a best-fit lookup costs a few
steps instead of a scan of every node: a pass over 10,000 queued runs stays cheap.

Backfill is EASY backfill: the first run that cannot start gets a *reservation*,
the earliest time its gang fits given when running runs should end.  A later run
may still start now if it ends (by its time limit or estimate) before that time,
or if it leaves enough on the reserved nodes for the gang at that time.  So a
backfilled run never delays the reserved run, as long as the end times hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .policy import HeldRun, PendingRun, StartRun, _FreeNode, share

# (end time, node, gpus, cpus, memory bytes): resources that come back at that time.
Release = tuple[float, str, int, int, int]


def spread_counts(usable: dict[str, int], need: int) -> list[tuple[str, int]] | None:
    """How many GPUs to take from which node for a multi-node gang, or None.

    Fullest nodes first, which uses the fewest nodes; the last share goes to the
    node with the fewest usable GPUs that still holds it.
    """
    if sum(usable.values()) < need:
        return None
    order = sorted(((k, name) for name, k in usable.items() if k > 0), key=lambda kn: (-kn[0], kn[1]))
    chosen: list[tuple[str, int]] = []
    left = need
    for i, (k, name) in enumerate(order):
        if k >= left:
            _, last = min((c for c in order[i:] if c[0] >= left), key=lambda c: (c[0], c[1]))
            chosen.append((last, left))
            return chosen
        chosen.append((name, k))
        left -= k
    return None


def _usable(run: PendingRun, gpus: int, cpus: int, memory: int, tracks_memory: bool) -> int:
    n = gpus
    if run.cpus > 0:
        n = min(n, cpus * run.gpus // run.cpus)
    if run.memory_bytes > 0 and tracks_memory:
        n = min(n, memory * run.gpus // run.memory_bytes)
    return max(n, 0)


def _hosts_share(run: PendingRun, a: list[int]) -> bool:
    """Whether ``a`` (free GPUs, CPUs, memory, node memory) holds one node's share of a shaped run."""
    return a[0] >= run.gpus_per_node and a[1] >= run.cpus and (not a[3] or a[2] >= run.memory_bytes)


def _best_hosts(run: PendingRun, avail: dict[str, list[int]], names: Iterable[str]) -> list[tuple[str, int]] | None:
    """The ``run.nodes`` best-fitting of ``names`` (fewest free GPUs, then name), or None."""
    fitting = sorted((avail[nm][0], nm) for nm in names if _hosts_share(run, avail[nm]))
    if len(fitting) < run.nodes:
        return None
    return [(nm, run.gpus_per_node) for _, nm in fitting[:run.nodes]]


@dataclass
class Reclaim:
    """What a run that is owed its group's guarantee needs preempted (``victims``)
    or is already waiting on (``stopping``); ``nodes`` are where it will go."""

    victims: list[HeldRun]
    stopping: list[HeldRun]
    nodes: list[tuple[str, int]]


class FreeMap:
    """Free GPUs, CPUs and memory per node while one pass decides."""

    def __init__(self, free: dict[str, _FreeNode], node_gpus: int):
        self.free = free
        self.node_gpus = node_gpus
        self.buckets: list[dict[str, _FreeNode]] = [{} for _ in range(node_gpus + 1)]
        for name, n in free.items():
            self.buckets[len(n.gpus)][name] = n
        self.total = sum(len(n.gpus) for n in free.values())
        # Per reserved node: what a run ending after ``reserved_at`` may still take.
        self.caps: dict[str, list[int]] = {}
        self.reserved_at = math.inf
        self.reserved_for: int | None = None
        self.started: list[Release] = []
        self._max_free: int | None = None
        self._max_long: int | None = None
        #: Changes whenever something is taken or reserved.
        self.version = 0

    # ---------------------------------------------------------------- capacity
    def max_free(self) -> int:
        """Most free GPUs on one node (cached until something is taken)."""
        if self._max_free is None:
            self._max_free = next((k for k in range(self.node_gpus, 0, -1) if self.buckets[k]), 0)
        return self._max_free

    def max_long(self) -> int:
        """Most GPUs on one node for a run that would still hold them at the reservation."""
        if not self.caps:
            return self.max_free()
        if self._max_long is None:
            best = max(min(len(self.free[name].gpus), cap[0]) for name, cap in self.caps.items())
            for k in range(self.node_gpus, best, -1):
                if any(name not in self.caps for name in self.buckets[k]):
                    best = k
                    break
            self._max_long = best
        return self._max_long

    def total_long(self) -> int:
        held_back = sum(max(0, len(self.free[name].gpus) - cap[0]) for name, cap in self.caps.items())
        return self.total - held_back

    def fits_now(self, run: PendingRun, multi: bool, long: bool) -> bool:
        """A cheap necessary test: are there enough GPUs where the run could go?

        For a shaped gang the test is exact: are there ``nodes`` nodes for it?"""
        if multi and run.shaped:
            if run.gpus > (self.total_long() if long else self.total) or run.gpus_per_node > self.max_free():
                return False
            return self.shaped_pick(run, long, run.nodes) is not None
        if multi:
            return run.gpus <= (self.total_long() if long else self.total)
        return run.gpus <= (self.max_long() if long else self.max_free())

    # ---------------------------------------------------------------- placing
    def _take(self, n: _FreeNode, gpus: int, cpus: int, memory: int, long: bool) -> tuple[int, ...]:
        name = n.node.name
        self._max_free = self._max_long = None
        self.version += 1
        del self.buckets[len(n.gpus)][name]
        taken = n.take_some(gpus, cpus, memory)
        self.buckets[len(n.gpus)][name] = n
        self.total -= gpus
        cap = self.caps.get(name)
        if long and cap is not None:
            cap[0] -= gpus
            cap[1] -= cpus
            cap[2] -= memory
        return taken

    def _node_fits(self, n: _FreeNode, run: PendingRun, long: bool, gpus: int | None = None) -> bool:
        """Whether ``n`` (already known to have ``gpus`` free, default ``run.gpus``) has
        the run's CPUs and memory, and leaves a reservation on it whole if ``long``."""
        gpus = run.gpus if gpus is None else gpus
        if n.cpus < run.cpus or (n.node.memory_bytes and n.memory_bytes < run.memory_bytes):
            return False
        cap = self.caps.get(n.node.name) if long else None
        return cap is None or (cap[0] >= gpus and cap[1] >= run.cpus
                               and (not n.node.memory_bytes or cap[2] >= run.memory_bytes))

    def shaped_pick(self, run: PendingRun, long: bool, count: int) -> list[_FreeNode] | None:
        """``count`` distinct nodes that each hold one node's share of the shaped ``run``
        now, best fit (fewest free GPUs, then name), or None if there are fewer."""
        g = run.gpus_per_node
        picked: list[_FreeNode] = []
        for k in range(max(g, 0), self.node_gpus + 1):
            for name in sorted(self.buckets[k]):
                n = self.buckets[k][name]
                if self._node_fits(n, run, long, g):
                    picked.append(n)
                    if len(picked) == count:
                        return picked
        return None

    def shaped_hosts(self, run: PendingRun) -> list[str]:
        """Every node that has one node's share of the shaped ``run`` free now, best fit first."""
        g = run.gpus_per_node
        return [name for k in range(max(g, 0), self.node_gpus + 1) for name in sorted(self.buckets[k])
                if self._node_fits(self.buckets[k][name], run, False, g)]

    def best_node(self, run: PendingRun, long: bool) -> _FreeNode | None:
        for k in range(run.gpus, self.node_gpus + 1):
            for n in self.buckets[k].values():
                if self._node_fits(n, run, long):
                    return n
        return None

    def _long_usable(self, run: PendingRun) -> dict[str, int]:
        return {name: _usable(run, cap[0], cap[1], cap[2], bool(self.free[name].node.memory_bytes))
                for name, cap in self.caps.items()}

    def place(self, run: PendingRun, end: float, multi: bool, must_end_by: float | None = None) -> StartRun | None:
        """Start ``run`` now if its whole gang fits without delaying the reservation.

        ``end`` is when it should end (recorded for later reservations);
        ``must_end_by`` is when it will have ended for sure (its enforced time
        limit), the only end that lets it use GPUs kept for the reserved run.
        """
        long = (end if must_end_by is None else must_end_by) > self.reserved_at
        if not self.fits_now(run, multi, long):
            return None
        if not multi:
            n = self.best_node(run, long)
            if n is None:
                return None
            gpus = self._take(n, run.gpus, run.cpus, run.memory_bytes, long)
            self.started.append((end, n.node.name, run.gpus, run.cpus, run.memory_bytes))
            return StartRun(run.run_id, n.node.name, gpus)
        if run.shaped:
            picked = self.shaped_pick(run, long, run.nodes)
            if picked is None:
                return None
            g, c, m = run.gpus_per_node, run.cpus, run.memory_bytes
            placements = []
            for n in picked:
                placements.append((n.node.name, self._take(n, g, c, m, long)))
                self.started.append((end, n.node.name, g, c, m))
            return StartRun(run.run_id, placements[0][0], placements[0][1], tuple(placements))
        usable = {name: n.usable_gpus(run) for name, n in self.free.items()}
        if long:
            for name, k in self._long_usable(run).items():
                usable[name] = min(usable[name], k)
        chosen = spread_counts(usable, run.gpus)
        if chosen is None:
            return None
        placements = []
        for name, k in chosen:
            c, m = share(run.cpus, k, run.gpus), share(run.memory_bytes, k, run.gpus)
            placements.append((name, self._take(self.free[name], k, c, m, long)))
            self.started.append((end, name, k, c, m))
        return StartRun(run.run_id, placements[0][0], placements[0][1], tuple(placements))

    def hold(self, nodes: list[tuple[str, int]], run: PendingRun) -> None:
        """Keep what is free on ``nodes`` for ``run`` (it waits for preempted runs)."""
        for name, k in nodes:
            n = self.free[name]
            g = min(len(n.gpus), k)
            if run.shaped or not run.gpus:
                c, m = min(n.cpus, run.cpus), min(n.memory_bytes, run.memory_bytes)
            else:
                c = min(n.cpus, share(run.cpus, k, run.gpus))
                m = min(n.memory_bytes, share(run.memory_bytes, k, run.gpus))
            self._take(n, g, max(c, 0), max(m, 0), True)

    # ---------------------------------------------------------------- reservation
    def _avail(self) -> dict[str, list[int]]:
        return {name: [len(n.gpus), n.cpus, n.memory_bytes, n.node.memory_bytes] for name, n in self.free.items()}

    def reserve(self, run: PendingRun, releases: Iterable[Release], multi: bool, hedge: int = 1) -> float | None:
        """Reserve the earliest time ``run``'s gang fits once runs end; None if never.

        Walks the releases in time order, adding each back to its node, until the
        gang fits; then records, per node it will use, what runs ending later may
        still take from what is free now without leaving it short at that time.

        End times are estimates, often short of the truth.  So a single-node gang
        also keeps the next ``hedge - 1`` nodes expected to fit it: long runs may
        not fill them either, and whichever of them really frees first hosts it.
        """
        avail = self._avail()
        ordered = sorted(releases)
        need = run.gpus
        if multi and run.shaped:
            return self._reserve_shaped(run, avail, ordered)
        usable = {name: _usable(run, a[0], a[1], a[2], bool(a[3])) for name, a in avail.items()} if multi else {}
        total = sum(usable.values())
        caps: dict[str, list[int]] = {}
        at: float | None = None
        for t, touched in _released(avail, ordered):
            if multi:
                for name in touched:
                    a = avail[name]
                    k = _usable(run, a[0], a[1], a[2], bool(a[3]))
                    total += k - usable[name]
                    usable[name] = k
                if total >= need:
                    chosen = spread_counts(usable, need)
                    assert chosen is not None
                    caps = {name: [avail[name][0] - k, avail[name][1] - share(run.cpus, k, need),
                                   avail[name][2] - share(run.memory_bytes, k, need)] for name, k in chosen}
                    return self._set_reservation(run, t, caps)
            else:
                fitting = [name for name in touched
                           if avail[name][0] >= need and avail[name][1] >= run.cpus
                           and (not avail[name][3] or avail[name][2] >= run.memory_bytes)]
                for name in sorted(fitting, key=lambda nm: (avail[nm][0], nm)):
                    if name not in caps and len(caps) < hedge:
                        a = avail[name]
                        caps[name] = [a[0] - need, a[1] - run.cpus, a[2] - run.memory_bytes]
                if fitting and at is None:
                    at = t
                if len(caps) >= hedge:
                    break
        return None if at is None else self._set_reservation(run, at, caps)

    def _reserve_shaped(self, run: PendingRun, avail: dict[str, list[int]], ordered: list[Release]) -> float | None:
        """``reserve`` for a shaped gang: the earliest release after which ``nodes``
        nodes each hold its share; the reservation keeps exactly the best-fitting
        of them, each for ``gpus_per_node`` GPUs and the run's CPUs and memory."""
        hosts = {name for name, a in avail.items() if _hosts_share(run, a)}
        for t, touched in _released(avail, ordered):
            hosts.update(name for name in touched if _hosts_share(run, avail[name]))
            if len(hosts) >= run.nodes:
                chosen = _best_hosts(run, avail, hosts)
                assert chosen is not None
                caps = {name: [avail[name][0] - k, avail[name][1] - run.cpus, avail[name][2] - run.memory_bytes]
                        for name, k in chosen}
                return self._set_reservation(run, t, caps)
        return None

    def _set_reservation(self, run: PendingRun, at: float, caps: dict[str, list[int]]) -> float:
        self.caps, self.reserved_at, self.reserved_for = caps, at, run.run_id
        self._max_long = None
        self.version += 1
        return at

    # ---------------------------------------------------------------- preemption
    def reclaim(self, run: PendingRun, multi: bool, victims: list[HeldRun],
                stopping: list[HeldRun]) -> Reclaim | None:
        """The fewest newest borrowed runs to preempt so ``run``'s gang fits, or None.

        Runs already stopping count first (nothing new is preempted while they
        suffice); then borrowed runs are added newest first until one node (or,
        for a multi-node gang, the cluster) has room.  Only the runs on the nodes
        chosen are preempted.
        """
        avail = self._avail()
        need = run.gpus

        def add(h: HeldRun) -> set[str]:
            touched = set()
            for p in h.parts:
                a = avail.get(p.node)
                if a is not None:
                    a[0] += len(p.gpus)
                    a[1] += p.cpus
                    a[2] += p.memory_bytes
                    touched.add(p.node)
            return touched

        def fit(touched: set[str]) -> list[tuple[str, int]] | None:
            if multi and run.shaped:
                return _best_hosts(run, avail, avail)
            if multi:
                usable = {nm: _usable(run, a[0], a[1], a[2], bool(a[3])) for nm, a in avail.items()}
                return spread_counts(usable, need)
            fitting = [nm for nm in touched if avail[nm][0] >= need and avail[nm][1] >= run.cpus
                       and (not avail[nm][3] or avail[nm][2] >= run.memory_bytes)]
            if not fitting:
                return None
            return [(min(fitting, key=lambda nm: (avail[nm][0], nm)), need)]

        touched: set[str] = set()
        for h in stopping:
            touched |= add(h)
        nodes = fit(touched)
        walked: list[HeldRun] = []
        if nodes is None:
            for h in victims:
                walked.append(h)
                nodes = fit(add(h))
                if nodes is not None:
                    break
            else:
                return None
        chosen = {nm for nm, _ in nodes}

        def on_chosen(h: HeldRun) -> bool:
            return any(p.node in chosen for p in h.parts)

        return Reclaim([h for h in walked if on_chosen(h)], [h for h in stopping if on_chosen(h)], nodes)


def _released(avail: dict[str, list[int]], ordered: list[Release]) -> Iterator[tuple[float, set[str]]]:
    """Walk ``ordered`` releases in time order, adding each to ``avail``; yields each time and the nodes it freed."""
    i = 0
    while i < len(ordered):
        t = ordered[i][0]
        touched: set[str] = set()
        while i < len(ordered) and ordered[i][0] == t:
            _, name, g, c, m = ordered[i]
            a = avail.get(name)
            if a is not None:
                a[0] += g
                a[1] += c
                a[2] += m
                touched.add(name)
            i += 1
        yield t, touched
