"""The fair-share policy: invariants on random snapshots, and scenarios a person can check by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nothing.scheduler.fairshare import FairShareConfig, FairSharePolicy, fair_share_factors
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
from nothing.scheduler.usage import Usage, UsageLedger, decayed_interval

NOW = 100_000.0
GROUPS = ("vision", "nlp", "speech")
USERS = ("ada", "bob", "cy", "dee")


def node(name: str, gpus: int = 8, cpus: int = 64) -> Node:
    return Node(name, tuple(range(gpus)), cpus, 0)


def alloc(run_id: int, node_name: str, gpus: tuple[int, ...], group: str = "vision", owner: str = "ada",
          **kw) -> Allocation:
    kw.setdefault("started_at", NOW - 100)
    return Allocation(run_id, owner, node_name, gpus, group=group, **kw)


def pending(run_id: int, gpus: int, group: str = "vision", owner: str = "ada", **kw) -> PendingRun:
    kw.setdefault("submitted_at", NOW - 10)
    return PendingRun(run_id, owner, gpus, group=group, **kw)


def decide(nodes, running=(), queued=(), quotas=None, config=None, **kw) -> Decisions:
    snap = ClusterSnapshot(tuple(nodes), tuple(running), tuple(queued), NOW, quotas=quotas, **kw)
    return FairSharePolicy(config).decide(snap)


def entry(d: Decisions, run_id: int) -> QueueEntry:
    return next(e for e in d.waiting if e.run_id == run_id)


# --------------------------------------------------------------------------- random snapshots
@st.composite
def snapshots(draw, stopping: bool = True):
    n_nodes = draw(st.integers(1, 4))
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
    total = sum(len(n.gpus) for n in nodes)
    queued = tuple(
        PendingRun(run_id + i, draw(st.sampled_from(USERS)), draw(st.integers(1, 4) | st.integers(0, total + 2)),
                   draw(st.integers(0, 8)), 0, draw(st.integers(0, 1)), NOW - draw(st.integers(0, 20000)),
                   draw(st.sampled_from(GROUPS)), draw(st.booleans()), float(draw(st.integers(10, 20000))))
        for i in range(draw(st.integers(0, 12))))
    quota = st.builds(Quota, st.none() | st.integers(0, 8), st.none() | st.integers(0, 12),
                      st.none() | st.sampled_from([0.5, 1000.0]))
    # Often every group has a guarantee, so borrowing and reclaiming happen.
    guarantees = st.fixed_dictionaries({g: st.builds(Quota, st.integers(0, 6)) for g in GROUPS})
    quotas = Quotas(draw(guarantees | st.dictionaries(st.sampled_from(GROUPS), quota, max_size=3)),
                    draw(st.dictionaries(st.sampled_from(USERS), quota, max_size=2)))
    usage = {g: Usage(draw(st.floats(0, 1e6)), NOW - 50, draw(st.floats(0, 1e4)), 0.0, None) for g in GROUPS}
    return ClusterSnapshot(nodes, tuple(running), queued, NOW, usage, {}, quotas)


PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def placed(d: Decisions):
    for s in d.starts:
        for node_name, gpus in s.all_placements:
            yield s.run_id, node_name, gpus


@PROPERTY
@given(snapshots(), st.sampled_from([FairSharePolicy(), PriorityFifoPolicy()]))
def test_no_gpu_is_ever_given_to_two_runs(snap, policy):
    d = policy.decide(snap)
    taken = {(a.node, g) for a in snap.running for g in a.gpus}
    exists = {(n.name, g) for n in snap.nodes for g in n.gpus}
    for _, node_name, gpus in placed(d):
        for g in gpus:
            assert (node_name, g) in exists
            assert (node_name, g) not in taken
            taken.add((node_name, g))


@PROPERTY
@given(snapshots())
def test_a_gang_never_starts_partially(snap):
    d = FairSharePolicy().decide(snap)
    by_id = {r.run_id: r for r in snap.queued}
    biggest = largest_node(snap.nodes)
    for s in d.starts:
        run = by_id[s.run_id]
        nodes = [n for n, _ in s.all_placements]
        assert sum(len(g) for _, g in s.all_placements) == run.gpus
        assert len(nodes) == len(set(nodes))
        if run.gpus <= biggest:
            assert len(nodes) == 1


@PROPERTY
@given(snapshots())
def test_hard_caps_and_budgets_hold(snap):
    d = FairSharePolicy().decide(snap)
    by_id = {r.run_id: r for r in snap.queued}
    started = [by_id[s.run_id] for s in d.starts]
    for key, quotas in (("group", snap.quotas.groups), ("owner", snap.quotas.users)):
        for name, q in quotas.items():
            mine = [r for r in started if getattr(r, key) == name]
            before = sum(len(a.gpus) for a in snap.running if getattr(a, key) == name)
            if q.max_gpus is not None and mine:
                assert before + sum(r.gpus for r in mine) <= q.max_gpus
            if q.gpu_hours_per_period == 0.5 and key == "group":
                used = sum(len(a.gpus) * (NOW - a.started_at) for a in snap.running if a.group == name)
                if used / 3600 >= 0.5:
                    assert not mine


@PROPERTY
@given(snapshots())
def test_every_queued_run_starts_or_has_a_position_and_reason(snap):
    d = FairSharePolicy().decide(snap)
    started = {s.run_id for s in d.starts}
    waiting = {e.run_id for e in d.waiting}
    assert started.isdisjoint(waiting)
    assert started | waiting == {r.run_id for r in snap.queued}
    assert sorted(e.position for e in d.waiting) == list(range(1, len(d.waiting) + 1))
    for e in d.waiting:
        assert e.reason.split(":")[0] in {"Resources", "Reserved", "Priority", "Preempting", "QuotaHardCap",
                                          "QuotaBudget", "QuotaGuarantee"}
        if not e.reason.startswith("Quota") and e.estimated_start is not None:
            assert e.estimated_start >= NOW


@PROPERTY
@given(snapshots())
def test_only_borrowed_preemptible_runs_are_preempted_and_never_notebooks(snap):
    d = FairSharePolicy().decide(snap)
    allocs = {a.run_id: a for a in snap.running}
    for p in d.preemptions:
        a = allocs[p.run_id]
        assert a.preemptible and not a.is_notebook and not a.stopping
        guarantee = snap.quotas.group(a.group).guaranteed_gpus
        assert guarantee is not None
        assert sum(len(b.gpus) for b in snap.running if b.group == a.group) > guarantee
    assert len({p.run_id for p in d.preemptions}) == len(d.preemptions)


def _earliest_start(nodes, busy: list[tuple[float, str, int, int]], run: PendingRun) -> float:
    """Brute force: the first time ``run``'s gang fits once the runs in ``busy`` have ended."""
    multi = run.gpus > largest_node(nodes)
    for t in sorted({NOW} | {end for end, *_ in busy if end >= NOW}):
        free = {n.name: [len(n.gpus), n.cpus] for n in nodes}
        for end, name, g, c in busy:
            if end > t:
                free[name][0] -= g
                free[name][1] -= c
        if multi:
            usable = sum(max(0, min(g, c * run.gpus // run.cpus if run.cpus else g)) for g, c in free.values())
            if usable >= run.gpus:
                return t
        elif any(g >= run.gpus and c >= run.cpus for g, c in free.values()):
            return t
    return math.inf


@PROPERTY
@given(snapshots(stopping=False))
def test_backfill_never_delays_the_reserved_head_run(snap):
    d = FairSharePolicy().decide(snap)
    by_id = {r.run_id: r for r in snap.queued}
    heads = [e for e in d.waiting if "reserved to start" in e.reason]
    assert len(heads) <= 1
    if not heads or d.preemptions:
        return
    head = heads[0]
    busy = [(math.inf if a.expected_end is None else max(a.expected_end, NOW), a.node, len(a.gpus), a.cpus)
            for a in snap.running]
    for s in d.starts:
        run = by_id[s.run_id]
        for node_name, gpus in s.all_placements:
            cpus = -(-run.cpus * len(gpus) // run.gpus) if run.gpus else run.cpus
            busy.append((NOW + run.max_seconds, node_name, len(gpus), cpus))
    assert _earliest_start(snap.nodes, busy, by_id[head.run_id]) <= head.estimated_start


# --------------------------------------------------------------------------- quotas
def test_user_over_their_cap_waits_with_the_quota_reason_and_others_go_ahead():
    quotas = Quotas(users={"ada": Quota(max_gpus=4)})
    d = decide([node("a")], [alloc(1, "a", (0, 1, 2), owner="ada")],
               [pending(2, 2, owner="ada", submitted_at=NOW - 100), pending(3, 2, owner="bob")], quotas)
    assert [s.run_id for s in d.starts] == [3]
    assert entry(d, 2).reason == "QuotaHardCap: user ada at the cap of 4 GPUs (3 in use, this run needs 2)"
    assert entry(d, 2).estimated_start is None


def test_group_cap_counts_runs_started_in_the_same_pass():
    quotas = Quotas(groups={"vision": Quota(max_gpus=16)})
    d = decide([node("a"), node("b"), node("c")], [], [pending(1, 8), pending(2, 8), pending(3, 8)], quotas)
    assert len(d.starts) == 2
    assert entry(d, 3).reason.startswith("QuotaHardCap: group vision at its cap of 16 GPUs (16 in use")


def test_group_out_of_budget_waits_for_the_next_period():
    quotas = Quotas(groups={"nlp": Quota(gpu_hours_per_period=10)}, period_seconds=86400)
    usage = {"nlp": Usage(0, NOW, 9 * 3600, (NOW // 86400) * 86400)}
    running = [alloc(1, "a", (0, 1), group="nlp", started_at=NOW - 1800)]
    d = decide([node("a")], running, [pending(2, 1, group="nlp")], quotas, group_usage=usage)
    assert entry(d, 2).reason.startswith("QuotaBudget: group nlp has used 10.0 of 10.0 GPU-hours this period")


def test_a_non_preemptible_run_may_not_borrow_beyond_the_guarantee():
    quotas = Quotas(groups={"vision": Quota(guaranteed_gpus=4)})
    d = decide([node("a")], [alloc(1, "a", (0, 1, 2, 3))],
               [pending(2, 2), pending(3, 2, preemptible=True)], quotas)
    assert [s.run_id for s in d.starts] == [3]
    assert entry(d, 2).reason.startswith("QuotaGuarantee: group vision uses 4 of its 4 GPUs guaranteed")


# --------------------------------------------------------------------------- borrowing and preemption
def _borrowers(notebook_last: bool = False):
    """nlp (guarantee 4) runs four 2-GPU preemptible runs on the only node: runs 13 and 14 borrow."""
    runs = [alloc(11 + i, "a", (2 * i, 2 * i + 1), group="nlp", owner="bob", preemptible=True,
                  started_at=NOW - 1000 + 100 * i, expected_end=NOW + 5000) for i in range(4)]
    if notebook_last:
        runs[-1] = alloc(14, "a", (6, 7), group="nlp", owner="bob", preemptible=True, is_notebook=True,
                         started_at=NOW - 600)
    return runs


QUOTAS = Quotas(groups={"vision": Quota(guaranteed_gpus=4), "nlp": Quota(guaranteed_gpus=4)})


def test_owner_reclaims_its_share_by_preempting_the_newest_borrowed_run():
    d = decide([node("a")], _borrowers(), [pending(1, 2)], QUOTAS)
    assert [(p.run_id, p.for_run) for p in d.preemptions] == [(14, 1)]
    assert d.starts == ()
    assert entry(d, 1).reason == ("Preempting: reclaiming group vision's guaranteed GPUs; "
                                  "waiting for borrowed runs 14 to stop")


def test_borrowed_runs_are_preempted_newest_first_until_the_gang_fits():
    d = decide([node("a")], _borrowers(), [pending(1, 4)], QUOTAS)
    assert [p.run_id for p in d.preemptions] == [14, 13]


def test_runs_already_stopping_are_waited_for_not_preempted_again():
    running = _borrowers()
    running[-1] = Allocation(**{**running[-1].__dict__, "stopping": True})
    d = decide([node("a")], running, [pending(1, 2)], QUOTAS)
    assert d.preemptions == ()
    assert "waiting for borrowed runs 14 to stop" in entry(d, 1).reason


def test_notebook_servers_are_never_preempted():
    d = decide([node("a")], _borrowers(notebook_last=True), [pending(1, 2)], QUOTAS)
    assert [p.run_id for p in d.preemptions] == [13]


def test_no_preemption_beyond_the_guarantee():
    d = decide([node("a")], _borrowers(), [pending(1, 6, preemptible=True)], QUOTAS)
    assert d.preemptions == ()
    assert entry(d, 1).reason.startswith("Resources:")


def test_in_share_runs_are_considered_before_borrowing_runs():
    quotas = Quotas(groups={"vision": Quota(guaranteed_gpus=0), "nlp": Quota(guaranteed_gpus=8)})
    queued = [pending(1, 8, preemptible=True, priority=1), pending(2, 8, group="nlp", submitted_at=NOW)]
    d = decide([node("a")], [], queued, quotas)
    assert [s.run_id for s in d.starts] == [2]


# --------------------------------------------------------------------------- placement and backfill
def test_runs_are_packed_onto_the_fullest_node_that_fits():
    d = decide([node("a"), node("b")], [alloc(1, "b", (0, 1, 2, 3, 4, 5))], [pending(2, 2)])
    assert d.starts == (StartRun(2, "b", (6, 7)),)


def test_a_multi_node_gang_takes_whole_free_nodes():
    running = [alloc(1, "b", (0, 1), expected_end=NOW + 100)]
    d = decide([node("a"), node("b"), node("c")], running, [pending(2, 16)])
    (s,) = d.starts
    assert sorted(n for n, _ in s.all_placements) == ["a", "c"]


def test_backfill_starts_a_short_run_but_not_one_that_would_delay_the_head():
    running = [alloc(1, "a", tuple(range(6)), expected_end=NOW + 1000)]
    queued = [pending(2, 8, submitted_at=NOW - 300, max_seconds=3600),
              pending(3, 2, submitted_at=NOW - 200, max_seconds=500),
              pending(4, 2, submitted_at=NOW - 250, max_seconds=5000)]
    d = decide([node("a")], running, queued)
    assert [s.run_id for s in d.starts] == [3]
    assert [e.run_id for e in d.waiting] == [2, 4]
    assert entry(d, 2).estimated_start == NOW + 1000
    assert "reserved to start in about 17 min on a" in entry(d, 2).reason
    assert entry(d, 4).reason.startswith("Reserved: the GPUs it would use are reserved for run 2")


def test_a_long_run_may_backfill_on_a_node_the_head_does_not_need():
    running = [alloc(1, "a", tuple(range(6)), expected_end=NOW + 1000),
               alloc(5, "b", (0, 1, 2, 3, 4, 5), expected_end=NOW + 2000)]
    queued = [pending(2, 8, submitted_at=NOW - 300), pending(4, 2, max_seconds=5000)]
    d = decide([node("a"), node("b")], running, queued, config=FairShareConfig(reservation_nodes=1))
    assert d.starts == (StartRun(4, "b", (6, 7)),)


def test_the_reservation_also_keeps_the_next_nodes_expected_to_fit_the_head():
    running = [alloc(1, "a", tuple(range(6)), expected_end=NOW + 1000),
               alloc(5, "b", (0, 1, 2, 3, 4, 5), expected_end=NOW + 2000)]
    queued = [pending(2, 8, submitted_at=NOW - 300), pending(4, 2, max_seconds=5000)]
    d = decide([node("a"), node("b")], running, queued, config=FairShareConfig(reservation_nodes=2))
    assert d.starts == ()
    assert entry(d, 2).reason.endswith("reserved to start in about 17 min on a (also kept free for it: b)")


def test_without_trusting_estimates_only_a_time_limit_lets_a_run_use_reserved_gpus():
    running = [alloc(1, "a", tuple(range(6)), expected_end=NOW + 1000)]
    queued = [pending(2, 8, submitted_at=NOW - 300), pending(3, 2, estimated_seconds=60)]
    d = decide([node("a")], running, queued, config=FairShareConfig(trust_estimates=False))
    assert d.starts == ()
    assert entry(d, 3).reason.endswith("only runs with a time limit that ends before then may use them")
    trusting = decide([node("a")], running, queued)
    assert [s.run_id for s in trusting.starts] == [3]


def test_without_backfill_runs_wait_behind_the_first_blocked_run():
    running = [alloc(1, "a", tuple(range(6)), expected_end=NOW + 1000)]
    queued = [pending(2, 8, submitted_at=NOW - 300), pending(3, 1, max_seconds=10)]
    d = decide([node("a")], running, queued, config=FairShareConfig(backfill=False))
    assert d.starts == ()
    assert entry(d, 3).reason == "Priority: waiting for run 2 ahead in the queue to start"


def test_every_waiting_run_gets_an_estimated_start():
    running = [alloc(1, "a", tuple(range(8)), expected_end=NOW + 600)]
    queued = [pending(i, 4, submitted_at=NOW - 100 + i, max_seconds=600) for i in range(2, 6)]
    d = decide([node("a")], running, queued)
    assert [e.estimated_start for e in d.waiting] == [NOW + 600, NOW + 600, NOW + 1200, NOW + 1200]


# --------------------------------------------------------------------------- priority
def test_recent_usage_lowers_priority():
    usage = {"vision": Usage(1e6, NOW), "nlp": Usage(1e3, NOW)}
    running = [alloc(1, "a", tuple(range(7)), expected_end=NOW + 1000)]
    queued = [pending(2, 1, group="vision", submitted_at=NOW - 60), pending(3, 1, group="nlp", owner="bob",
                                                                             submitted_at=NOW)]
    d = decide([node("a")], running, queued, group_usage=usage)
    assert [s.run_id for s in d.starts] == [3]


def test_aging_lets_a_heavy_users_old_run_overtake_fresh_runs():
    usage = {"vision": Usage(1e7, NOW), "nlp": Usage(0.0, NOW)}
    running = [alloc(1, "a", tuple(range(7)), expected_end=NOW + 1000)]
    queued = [pending(2, 1, group="vision", submitted_at=NOW - 5 * 3600),
              pending(3, 1, group="nlp", owner="bob", submitted_at=NOW)]
    d = decide([node("a")], running, queued, group_usage=usage)
    assert [s.run_id for s in d.starts] == [2]


def test_admin_priority_outranks_fair_share():
    usage = {"vision": Usage(1e7, NOW)}
    running = [alloc(1, "a", tuple(range(7)), expected_end=NOW + 1000)]
    queued = [pending(2, 1, priority=1, submitted_at=NOW), pending(3, 1, group="nlp", submitted_at=NOW - 3600)]
    d = decide([node("a")], running, queued, group_usage=usage)
    assert [s.run_id for s in d.starts] == [2]


@pytest.mark.parametrize("policy", [PriorityFifoPolicy(), FairSharePolicy()])
def test_old_style_snapshots_still_work(policy):
    snap = ClusterSnapshot((Node("a", (0, 1), 8, 0),), (Allocation(1, "ada", "a", (0,), 1, 0),),
                           (PendingRun(2, "bob", 1, 1, 0, 0, 5.0), PendingRun(3, "cy", 2, 1, 0, 0, 6.0)), 10.0)
    d = policy.decide(snap)
    assert d.starts == (StartRun(2, "a", (1,)),)
    assert [(e.run_id, e.position) for e in d.waiting] == [(3, 1)]
    assert d.waiting[0].reason.startswith("Resources: needs 2 GPUs on one node")


# --------------------------------------------------------------------------- usage history
def test_decayed_usage_is_the_exact_integral():
    day = 86400.0
    exact = decayed_interval(2, 0.0, day, day, day)
    steps = 10_000
    numeric = sum(2 * 2 ** -((day - (i + 0.5) * day / steps) / day) * day / steps for i in range(steps))
    assert exact == pytest.approx(numeric, rel=1e-6)
    assert decayed_interval(1, 0.0, 10.0, 10.0, math.inf) == 10.0


def test_ledger_keeps_period_totals_and_a_typical_run_time_from_finished_runs_only():
    ledger = UsageLedger(half_life_seconds=3600, period_seconds=1000, estimate_quantile=0.5)
    ledger.charge("nlp", 2, 100, 400)
    ledger.charge("nlp", 1, 500, 600)
    ledger.charge("nlp", 4, 600, 900, finished=False)  # preempted: counts as usage, not as a run time
    u = ledger.snapshot()["nlp"]
    assert u.period_gpu_seconds == 2 * 300 + 100 + 4 * 300
    assert u.typical_run_seconds == 100
    ledger.charge("nlp", 1, 900, 1100)  # crosses into the next period: only 100 s count there
    assert (ledger.snapshot()["nlp"].period_start, ledger.snapshot()["nlp"].period_gpu_seconds) == (1000, 100)


def test_fair_share_factor_halves_for_a_group_using_exactly_its_share():
    factors = fair_share_factors({"a": Usage(10.0, NOW), "b": Usage(10.0, NOW)}, [], [], {}, 1.0, NOW, 3600)
    assert factors == {"a": 0.5, "b": 0.5}
    idle = fair_share_factors({"a": Usage(10.0, NOW)}, [], ["b"], {}, 1.0, NOW, 3600)
    assert idle["b"] == 1.0 and idle["a"] == 0.25
