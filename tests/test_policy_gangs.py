"""Shaped gangs (``nodes`` x ``gpus_per_node``, as torchrun needs) in both policies:
scenarios a person can check by hand, and invariants on random snapshots."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nothing.scheduler.fairshare import FairShareConfig, FairSharePolicy
from nothing.scheduler.policy import (
    Allocation,
    ClusterSnapshot,
    Decisions,
    Node,
    PendingRun,
    PriorityFifoPolicy,
    QueueEntry,
    StartRun,
    largest_node,
)
from nothing.scheduler.quotas import Quota, Quotas

NOW = 100_000.0
GROUPS = ("vision", "nlp")
USERS = ("ada", "bob", "cy")
POLICIES = [FairSharePolicy(), PriorityFifoPolicy()]
POLICY_IDS = ["fair-share", "priority-fifo"]


def node(name: str, gpus: int = 4, cpus: int = 32) -> Node:
    return Node(name, tuple(range(gpus)), cpus, 0)


def alloc(run_id: int, node_name: str, gpus: tuple[int, ...], group: str = "vision", owner: str = "ada",
          **kw) -> Allocation:
    kw.setdefault("started_at", NOW - 100)
    return Allocation(run_id, owner, node_name, gpus, group=group, **kw)


def gang(run_id: int, nodes: int, per_node: int, group: str = "vision", owner: str = "ada", **kw) -> PendingRun:
    kw.setdefault("submitted_at", NOW - 10)
    return PendingRun(run_id, owner, nodes * per_node, group=group, nodes=nodes, gpus_per_node=per_node, **kw)


def pending(run_id: int, gpus: int, group: str = "vision", owner: str = "ada", **kw) -> PendingRun:
    kw.setdefault("submitted_at", NOW - 10)
    return PendingRun(run_id, owner, gpus, group=group, **kw)


def snapshot(nodes, running=(), queued=(), quotas=None) -> ClusterSnapshot:
    return ClusterSnapshot(tuple(nodes), tuple(running), tuple(queued), NOW, quotas=quotas)


def entry(d: Decisions, run_id: int) -> QueueEntry:
    return next(e for e in d.waiting if e.run_id == run_id)


# --------------------------------------------------------------------------- scenarios
@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_two_by_two_gang_takes_the_two_best_fitting_nodes(policy):
    # Free GPUs: a 4, b 2, c 4.  Best fit keeps one whole 4-GPU block: b and a.
    snap = snapshot([node("a"), node("b"), node("c")], [alloc(1, "b", (0, 1))], [gang(2, 2, 2)])
    d = policy.decide(snap)
    assert d.starts == (StartRun(2, "b", (2, 3), (("b", (2, 3)), ("a", (0, 1)))),)


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_gang_takes_its_cpus_on_every_node_and_skips_nodes_short_of_cpus(policy):
    nodes = [node("a", cpus=8), node("b", cpus=32), node("c", cpus=32)]
    d = policy.decide(snapshot(nodes, [], [gang(2, 2, 4, cpus=16)]))
    (s,) = d.starts
    assert s.all_placements == (("b", (0, 1, 2, 3)), ("c", (0, 1, 2, 3)))


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_gang_waits_when_only_one_node_has_its_share_free(policy):
    # Four GPUs are free in all, but only node a has two of them.
    running = [alloc(1, "a", (0, 1)), alloc(3, "b", (0, 1, 2))]
    d = policy.decide(snapshot([node("a"), node("b")], running, [gang(2, 2, 2)]))
    assert d.starts == ()
    reason = entry(d, 2).reason
    assert reason.startswith("Resources: needs 2 nodes with 2 free GPUs each; the cluster has 1 such node now (a)")


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_gang_asking_for_more_nodes_than_the_cluster_has_waits_and_holds_nobody_up(policy):
    queued = [gang(2, 3, 4, submitted_at=NOW - 100), pending(3, 1)]
    d = policy.decide(snapshot([node("a"), node("b")], [], queued))
    assert [s.run_id for s in d.starts] == [3]
    e = entry(d, 2)
    assert e.reason == ("Resources: needs 3 nodes with 4 GPUs each; the cluster has 2 such nodes (a, b), "
                        "so it cannot start until such nodes are added")
    assert e.estimated_start is None


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_gang_asking_for_more_gpus_per_node_than_any_node_has_waits_and_says_so(policy):
    d = policy.decide(snapshot([node("a"), node("b")], [], [gang(2, 2, 8)]))
    assert d.starts == ()
    assert entry(d, 2).reason.startswith("Resources: needs 2 nodes with 8 GPUs each; the cluster has 0 such nodes,")


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_one_node_shaped_run_is_placed_like_a_single_node_run(policy):
    nodes = [node("a"), node("b"), node("c")]
    running = [alloc(1, "b", (0, 1))]
    shaped = policy.decide(snapshot(nodes, running, [gang(2, 1, 2)]))
    plain = policy.decide(snapshot(nodes, running, [pending(2, 2)]))
    assert shaped.starts == plain.starts == (StartRun(2, "b", (2, 3)),)
    too_big = policy.decide(snapshot(nodes, [], [gang(3, 1, 8)]))
    assert too_big.starts == ()
    assert "needs 1 node with 8 GPUs; the cluster has 0 such nodes" in entry(too_big, 3).reason


def test_an_unshaped_run_bigger_than_a_node_is_still_spread_unevenly():
    d = FairSharePolicy().decide(snapshot([node("a"), node("b")], [alloc(1, "b", (0, 1))], [pending(2, 6)]))
    (s,) = d.starts
    assert sorted((n, len(g)) for n, g in s.all_placements) == [("a", 4), ("b", 2)]


def test_backfill_does_not_delay_a_reserved_gang():
    # The 2x4 gang needs two whole nodes: c is free now, a frees at +1000 s.
    running = [alloc(1, "a", (0, 1, 2, 3), expected_end=NOW + 1000),
               alloc(5, "b", (0, 1), expected_end=NOW + 5000)]
    queued = [gang(2, 2, 4, submitted_at=NOW - 300, max_seconds=3600),
              pending(3, 4, submitted_at=NOW - 200, max_seconds=5000),
              pending(4, 2, submitted_at=NOW - 150, max_seconds=5000),
              pending(6, 2, submitted_at=NOW - 100, max_seconds=300)]
    d = FairSharePolicy(FairShareConfig(trust_estimates=False)).decide(
        snapshot([node("a"), node("b"), node("c")], running, queued))
    # The long 2-GPU run backfills on b, which the gang does not use; the short one may use c until +300 s.
    assert sorted((s.run_id, s.node) for s in d.starts) == [(4, "b"), (6, "c")]
    head = entry(d, 2)
    assert head.estimated_start == NOW + 1000
    assert "reserved to start in about 17 min on a, c" in head.reason
    assert entry(d, 3).reason.startswith("Reserved: the GPUs it would use are reserved for run 2")


def test_a_gang_owed_its_guarantee_preempts_only_borrowed_runs_on_the_nodes_it_takes():
    quotas = Quotas(groups={"vision": Quota(guaranteed_gpus=8), "nlp": Quota(guaranteed_gpus=0)})
    running = [alloc(11, "a", (0, 1, 2, 3), group="nlp", owner="bob", preemptible=True, started_at=NOW - 500),
               alloc(12, "b", (0, 1), group="nlp", owner="bob", preemptible=True, started_at=NOW - 100)]
    d = FairSharePolicy().decide(snapshot([node("a"), node("b"), node("c")], running, [gang(2, 2, 4)], quotas))
    assert d.starts == ()
    assert [p.run_id for p in d.preemptions] == [12]
    assert entry(d, 2).reason.startswith("Preempting:")


def test_two_gangs_never_share_a_node_share():
    nodes = [node("a"), node("b"), node("c"), node("d")]
    d = FairSharePolicy().decide(snapshot(nodes, [], [gang(1, 2, 4, submitted_at=NOW - 20), gang(2, 2, 4)]))
    used = [n for s in d.starts for n, _ in s.all_placements]
    assert sorted(used) == ["a", "b", "c", "d"]


# --------------------------------------------------------------------------- random snapshots
@st.composite
def runs(draw, run_id: int, total: int):
    owner, group = draw(st.sampled_from(USERS)), draw(st.sampled_from(GROUPS))
    common = dict(cpus=draw(st.integers(0, 8)), priority=draw(st.integers(0, 1)),
                  submitted_at=NOW - draw(st.integers(0, 20000)), group=group, preemptible=draw(st.booleans()),
                  max_seconds=float(draw(st.integers(10, 20000))))
    if draw(st.booleans()):
        n, per = draw(st.integers(1, 4)), draw(st.sampled_from([1, 2, 2, 4, 8]))
        return PendingRun(run_id, owner, n * per, nodes=n, gpus_per_node=per, **common)
    return PendingRun(run_id, owner, draw(st.integers(1, 4) | st.integers(0, total + 2)), **common)


@st.composite
def snapshots(draw, stopping: bool = True):
    n_nodes = draw(st.integers(1, 5))
    nodes = tuple(Node(f"n{i}", tuple(range(draw(st.sampled_from([2, 4, 8])))), draw(st.sampled_from([16, 64])), 0)
                  for i in range(n_nodes))
    running, run_id = [], 1
    for nd in nodes:
        free, cpus = list(nd.gpus), nd.cpus
        while free and draw(st.booleans()):
            k = draw(st.integers(1, len(free)))
            c = draw(st.integers(0, min(cpus, 8)))
            notebook = draw(st.integers(0, 9)) == 0
            started = NOW - draw(st.integers(0, 5000))
            end = None if notebook else started + draw(st.integers(1, 10000))
            running.append(Allocation(run_id, draw(st.sampled_from(USERS)), nd.name, tuple(free[:k]), c, 0,
                                      draw(st.sampled_from(GROUPS)), draw(st.booleans()), notebook, started, end,
                                      stopping and draw(st.integers(0, 9)) == 0))
            free, cpus, run_id = free[k:], cpus - c, run_id + 1
    # A running gang spread over two nodes: one allocation per node, one run id.
    if len(running) >= 2 and draw(st.booleans()):
        a, b = running[0], running[-1]
        if a.node != b.node:
            running[-1] = Allocation(a.run_id, a.owner, b.node, b.gpus, b.cpus, 0, a.group, a.preemptible,
                                     False, a.started_at, a.expected_end, a.stopping)
            running[0] = Allocation(a.run_id, a.owner, a.node, a.gpus, a.cpus, 0, a.group, a.preemptible,
                                    False, a.started_at, a.expected_end, a.stopping)
    total = sum(len(n.gpus) for n in nodes)
    queued = tuple(draw(runs(run_id + i, total)) for i in range(draw(st.integers(0, 10))))
    quota = st.builds(Quota, st.none() | st.integers(0, 8), st.none() | st.integers(0, 12))
    guarantees = st.fixed_dictionaries({g: st.builds(Quota, st.integers(0, 8)) for g in GROUPS})
    quotas = Quotas(draw(guarantees | st.dictionaries(st.sampled_from(GROUPS), quota, max_size=2)),
                    draw(st.dictionaries(st.sampled_from(USERS), quota, max_size=2)))
    return ClusterSnapshot(nodes, tuple(running), queued, NOW, {}, {}, quotas)


PROPERTY = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _cpus_taken(run: PendingRun, gpus: int) -> int:
    if run.gpus_per_node:
        return run.cpus
    return -(-run.cpus * gpus // run.gpus) if run.gpus else run.cpus


@PROPERTY
@given(snapshots(), st.sampled_from(POLICIES))
def test_no_gpu_or_cpu_is_given_twice_with_gangs(snap, policy):
    d = policy.decide(snap)
    by_id = {r.run_id: r for r in snap.queued}
    taken = {(a.node, g) for a in snap.running for g in a.gpus}
    exists = {(n.name, g) for n in snap.nodes for g in n.gpus}
    cpus = {n.name: n.cpus - sum(a.cpus for a in snap.running if a.node == n.name) for n in snap.nodes}
    for s in d.starts:
        for node_name, gpus in s.all_placements:
            cpus[node_name] -= _cpus_taken(by_id[s.run_id], len(gpus))
            for g in gpus:
                assert (node_name, g) in exists
                assert (node_name, g) not in taken
                taken.add((node_name, g))
    assert all(c >= 0 for c in cpus.values())


@PROPERTY
@given(snapshots(), st.sampled_from(POLICIES))
def test_every_shaped_start_has_exactly_its_nodes_and_gpus_per_node(snap, policy):
    d = policy.decide(snap)
    by_id = {r.run_id: r for r in snap.queued}
    biggest = largest_node(snap.nodes)
    for s in d.starts:
        run = by_id[s.run_id]
        nodes = [n for n, _ in s.all_placements]
        assert (s.node, s.gpus) == s.all_placements[0]
        assert len(nodes) == len(set(nodes))
        assert sum(len(g) for _, g in s.all_placements) == run.gpus
        if run.gpus_per_node:
            assert len(nodes) == run.nodes
            assert all(len(g) == run.gpus_per_node for _, g in s.all_placements)
        elif run.gpus <= biggest:
            assert len(nodes) == 1


@PROPERTY
@given(snapshots())
def test_hard_caps_hold_with_gangs(snap):
    d = FairSharePolicy().decide(snap)
    by_id = {r.run_id: r for r in snap.queued}
    started = [by_id[s.run_id] for s in d.starts]
    for key, quotas in (("group", snap.quotas.groups), ("owner", snap.quotas.users)):
        for name, q in quotas.items():
            mine = [r for r in started if getattr(r, key) == name]
            before = sum(len(a.gpus) for a in snap.running if getattr(a, key) == name)
            if q.max_gpus is not None and mine:
                assert before + sum(r.gpus for r in mine) <= q.max_gpus


@PROPERTY
@given(snapshots(), st.sampled_from(POLICIES))
def test_every_queued_run_starts_or_waits_with_a_reason(snap, policy):
    d = policy.decide(snap)
    started = {s.run_id for s in d.starts}
    waiting = [e.run_id for e in d.waiting]
    assert len(waiting) == len(set(waiting))
    assert started.isdisjoint(waiting)
    assert started | set(waiting) == {r.run_id for r in snap.queued}
    assert sorted(e.position for e in d.waiting) == list(range(1, len(d.waiting) + 1))
    for e in d.waiting:
        assert e.reason.split(":")[0] in {"Resources", "Reserved", "Priority", "Preempting", "QuotaHardCap",
                                          "QuotaBudget", "QuotaGuarantee"}


def _gang_fits_at(nodes, busy: list[tuple[float, str, int, int]], run: PendingRun) -> float:
    """Brute force: the first time ``run``'s shaped gang fits once the runs in ``busy`` have ended."""
    for t in sorted({NOW} | {end for end, *_ in busy if end >= NOW}):
        free = {n.name: [len(n.gpus), n.cpus] for n in nodes}
        for end, name, g, c in busy:
            if end > t:
                free[name][0] -= g
                free[name][1] -= c
        if sum(g >= run.gpus_per_node and c >= run.cpus for g, c in free.values()) >= run.nodes:
            return t
    return math.inf


@PROPERTY
@given(snapshots(stopping=False))
def test_backfill_never_delays_a_reserved_gang(snap):
    d = FairSharePolicy().decide(snap)
    by_id = {r.run_id: r for r in snap.queued}
    heads = [e for e in d.waiting if "reserved to start" in e.reason]
    if not heads or d.preemptions:
        return
    head = by_id[heads[0].run_id]
    if not (head.gpus_per_node and head.nodes > 1):
        return
    busy = [(math.inf if a.expected_end is None else max(a.expected_end, NOW), a.node, len(a.gpus), a.cpus)
            for a in snap.running]
    for s in d.starts:
        run = by_id[s.run_id]
        for node_name, gpus in s.all_placements:
            busy.append((NOW + run.max_seconds, node_name, len(gpus), _cpus_taken(run, len(gpus))))
    assert _gang_fits_at(snap.nodes, busy, head) <= heads[0].estimated_start
