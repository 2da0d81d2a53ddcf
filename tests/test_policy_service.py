"""The default policy (least attained service, fair share, quotas, gangs, held reservations):
invariants on random snapshots, and scenarios a person can check by hand."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nothing.scheduler.policy import Allocation, ClusterSnapshot, Decisions, Node, PendingRun, QueueEntry
from nothing.scheduler.policy_config import make_policy
from nothing.scheduler.quotas import Quota, Quotas
from nothing.scheduler.explain import clock
from nothing.scheduler.servicefair import ServiceFairConfig, ServiceFairPolicy, waited_so_far
from nothing.scheduler.usage import Usage

NOW = 1_000_000.0
GROUPS = ("vision", "nlp", "speech")
USERS = ("ada", "bob", "cy", "dee")
CONFIG = ServiceFairConfig(overdue_seconds=6 * 3600)


def node(name: str, gpus: int = 8, cpus: int = 64) -> Node:
    return Node(name, tuple(range(gpus)), cpus, 0)


def decide(nodes, running=(), queued=(), quotas=None, config=CONFIG, now=NOW) -> Decisions:
    return ServiceFairPolicy(config).decide(ClusterSnapshot(tuple(nodes), tuple(running), tuple(queued), now,
                                                            quotas=quotas))


def entry(d: Decisions, run_id: int) -> QueueEntry:
    return next(e for e in d.waiting if e.run_id == run_id)


# --------------------------------------------------------------------------- random snapshots
@st.composite
def snapshots(draw):
    nodes = tuple(Node(f"n{i}", tuple(range(draw(st.sampled_from([2, 4, 8])))), draw(st.sampled_from([16, 64])), 0)
                  for i in range(draw(st.integers(1, 4))))
    running, run_id = [], 1
    for nd in nodes:
        free, cpus = list(nd.gpus), nd.cpus
        while free and draw(st.booleans()):
            k = draw(st.integers(1, len(free)))
            c = draw(st.integers(0, min(cpus, 8)))
            notebook = draw(st.integers(0, 9)) == 0
            started = NOW - draw(st.integers(0, 50000))
            limit = None if notebook or draw(st.booleans()) else started + draw(st.integers(1, 80000))
            running.append(Allocation(run_id, draw(st.sampled_from(USERS)), nd.name, tuple(free[:k]), c, 0,
                                      draw(st.sampled_from(GROUPS)), draw(st.booleans()), notebook, started, limit,
                                      draw(st.integers(0, 9)) == 0, float(draw(st.integers(0, 200000))),
                                      None if limit else started + draw(st.integers(1, 80000)),
                                      started - draw(st.integers(0, 40000))))
            free, cpus, run_id = free[k:], cpus - c, run_id + 1
    total = sum(len(n.gpus) for n in nodes)
    queued = []
    for i in range(draw(st.integers(0, 12))):
        shaped = draw(st.integers(0, 5)) == 0
        per_node = draw(st.sampled_from([1, 2, 4])) if shaped else 0
        n = draw(st.integers(1, 3)) if shaped else 1
        gpus = n * per_node if shaped else draw(st.integers(1, 4) | st.integers(0, total + 2))
        queued.append(PendingRun(
            run_id + i, draw(st.sampled_from(USERS)), gpus, draw(st.integers(0, 8)), 0, draw(st.integers(0, 1)),
            NOW - draw(st.integers(0, 60000)), draw(st.sampled_from(GROUPS)), draw(st.booleans()),
            draw(st.none() | st.floats(10, 50000)), draw(st.none() | st.floats(10, 50000)), n, per_node,
            float(draw(st.sampled_from([0, 100, 5000, 50000]))), None))
    quota = st.builds(Quota, st.none() | st.integers(0, 8), st.none() | st.integers(0, 12),
                      st.none() | st.sampled_from([0.5, 1000.0]))
    guarantees = st.fixed_dictionaries({g: st.builds(Quota, st.integers(0, 6)) for g in GROUPS})
    quotas = Quotas(draw(guarantees | st.dictionaries(st.sampled_from(GROUPS), quota, max_size=3)),
                    draw(st.dictionaries(st.sampled_from(USERS), quota, max_size=2)))
    usage = {g: Usage(draw(st.floats(0, 1e6)), NOW - 50, draw(st.floats(0, 1e4)), 0.0, None) for g in GROUPS}
    return ClusterSnapshot(nodes, tuple(running), tuple(queued), NOW, usage, {}, quotas)


PROPERTY = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
POLICY = ServiceFairPolicy(CONFIG)


def placed(d: Decisions):
    for s in d.starts:
        for node_name, gpus in s.all_placements:
            yield s.run_id, node_name, gpus


@PROPERTY
@given(snapshots())
def test_no_gpu_or_cpu_is_ever_given_twice(snap):
    d = POLICY.decide(snap)
    taken = {(a.node, g) for a in snap.running for g in a.gpus}
    cpus = {n.name: n.cpus - sum(a.cpus for a in snap.running if a.node == n.name) for n in snap.nodes}
    gpus_of = {n.name: set(n.gpus) for n in snap.nodes}
    queued = {r.run_id: r for r in snap.queued}
    for run_id, node_name, gpus in placed(d):
        for g in gpus:
            assert g in gpus_of[node_name]
            assert (node_name, g) not in taken, f"GPU {g} of {node_name} given twice"
            taken.add((node_name, g))
        r = queued[run_id]
        cpus[node_name] -= r.cpus if r.shaped else -(-r.cpus * len(gpus) // r.gpus) if r.gpus else r.cpus
    assert all(c >= 0 for c in cpus.values()), cpus


@PROPERTY
@given(snapshots())
def test_gangs_start_whole_and_shaped_gangs_on_exactly_their_nodes(snap):
    d = POLICY.decide(snap)
    queued = {r.run_id: r for r in snap.queued}
    for s in d.starts:
        r = queued[s.run_id]
        assert sum(len(g) for _, g in s.all_placements) == r.gpus
        if r.shaped:
            assert len({n for n, _ in s.all_placements}) == r.nodes == len(s.all_placements)
            assert all(len(g) == r.gpus_per_node for _, g in s.all_placements)


@PROPERTY
@given(snapshots())
def test_hard_caps_hold(snap):
    d = POLICY.decide(snap)
    queued = {r.run_id: r for r in snap.queued}
    by_group, by_user = {}, {}
    for a in snap.running:
        by_group[a.group] = by_group.get(a.group, 0) + len(a.gpus)
        by_user[a.owner] = by_user.get(a.owner, 0) + len(a.gpus)
    before_g, before_u = dict(by_group), dict(by_user)
    for s in d.starts:
        r = queued[s.run_id]
        by_group[r.group] = by_group.get(r.group, 0) + r.gpus
        by_user[r.owner] = by_user.get(r.owner, 0) + r.gpus
    for g, used in by_group.items():
        cap = snap.quotas.group(g).max_gpus
        if cap is not None and used > before_g.get(g, 0):
            assert used <= cap, f"group {g} at {used} GPUs, cap {cap}"
    for u, used in by_user.items():
        cap = snap.quotas.user(u).max_gpus
        if cap is not None and used > before_u.get(u, 0):
            assert used <= cap, f"user {u} at {used} GPUs, cap {cap}"


@PROPERTY
@given(snapshots())
def test_every_queued_run_starts_or_waits_with_a_reason_and_an_estimate_not_in_the_past(snap):
    d = POLICY.decide(snap)
    started = {s.run_id for s in d.starts}
    waiting = {e.run_id: e for e in d.waiting}
    assert started.isdisjoint(waiting)
    assert started | set(waiting) == {r.run_id for r in snap.queued}
    assert sorted(e.position for e in d.waiting) == list(range(1, len(d.waiting) + 1))
    for e in d.waiting:
        assert e.reason and e.reason[0].isupper(), e
        assert e.estimated_start is None or e.estimated_start >= snap.now
    assert d.next_pass_at is None or d.next_pass_at > snap.now


@PROPERTY
@given(snapshots())
def test_only_preemptible_runs_that_ran_long_enough_are_preempted_and_never_notebooks(snap):
    d = POLICY.decide(snap)
    held = {a.run_id: a for a in snap.running}
    for p in d.preemptions:
        a = held[p.run_id]
        assert a.preemptible and not a.is_notebook and not a.stopping
        assert snap.now - a.started_at >= CONFIG.min_run_seconds or snap.quotas.group(a.group).guaranteed_gpus \
            is not None
    assert len({p.run_id for p in d.preemptions}) == len(d.preemptions)


@PROPERTY
@given(snapshots())
def test_with_nothing_preemptible_nothing_is_preempted(snap):
    snap = replace(snap, running=tuple(replace(a, preemptible=False) for a in snap.running))
    assert POLICY.decide(snap).preemptions == ()


@PROPERTY
@given(snapshots())
def test_the_pass_is_deterministic(snap):
    assert POLICY.decide(snap) == ServiceFairPolicy(CONFIG).decide(snap)


def _held_reservation(snap: ClusterSnapshot, d: Decisions) -> QueueEntry | None:
    return next((e for e in d.waiting if e.reserved_nodes and "held" in e.reason), None)


@PROPERTY
@given(snapshots(), st.integers(0, 3))
def test_an_overdue_runs_reservation_holds_nothing_that_could_delay_it_lands_there(snap, which):
    # Make one queued run overdue (submitted long ago), so it must get the strict reservation.
    if not snap.queued:
        return
    runs = [replace(r, submitted_at=NOW - 60) for r in snap.queued]
    i = which % len(runs)
    runs[i] = replace(runs[i], submitted_at=NOW - CONFIG.overdue_seconds - 10, priority=1, attained_gpu_seconds=0.0)
    snap = replace(snap, queued=tuple(runs), quotas=Quotas())
    d = POLICY.decide(snap)
    held = _held_reservation(snap, d)
    if held is None:
        return
    assert held.run_id == runs[i].run_id  # the overdue run, not another, holds it
    queued = {r.run_id: r for r in snap.queued}
    # GPUs on the held nodes that are free after this pass's starts or held by runs already stopping:
    # when they cover the held run, what else lands there cannot delay it.
    taken = {(n, g) for a in snap.running if not a.stopping for g in a.gpus for n in [a.node]}
    taken |= {(n, g) for _, n, gpus in placed(d) for g in gpus}
    spare = sum(1 for nd in snap.nodes if nd.name in held.reserved_nodes for g in nd.gpus if (nd.name, g) not in taken)
    for run_id, node_name, _ in placed(d):
        r = queued[run_id]
        if node_name in held.reserved_nodes and spare < queued[held.run_id].gpus and (r.gpus or r.cpus or r.memory_bytes):
            # Only what should be gone in time: a limit ending before the start, preemptible, or (without a
            # limit) ``held_backfill_factor`` times its expected run time ending before the start.
            factor = CONFIG.held_backfill_factor
            assert r.preemptible or (r.max_seconds is not None and snap.now + r.max_seconds <= held.estimated_start) \
                or (r.max_seconds is None and factor > 0
                    and snap.now + factor * POLICY.run_seconds(r, snap.group_usage) <= held.estimated_start)
    # The reservation stays on the same nodes when the pass's starts have happened and time moves on.
    started = {s.run_id: s for s in d.starts}
    running = list(snap.running) + [Allocation(rid, queued[rid].owner, n, g, group=queued[rid].group,
                                               preemptible=queued[rid].preemptible, started_at=snap.now)
                                    for rid, s in started.items() for n, g in s.all_placements]
    later = replace(snap, running=tuple(running), queued=tuple(r for r in snap.queued if r.run_id not in started),
                    now=snap.now + 60)
    again = _held_reservation(later, POLICY.decide(later))
    # It stays put unless a run admitted by its estimate took GPUs there (due to leave before the start).
    estimated_in = any(node_name in held.reserved_nodes and queued[run_id].max_seconds is None
                       and not queued[run_id].preemptible for run_id, node_name, _ in placed(d))
    if again is not None and again.run_id == held.run_id and not estimated_in:
        assert again.reserved_nodes == held.reserved_nodes


def test_waited_so_far_leaves_out_the_time_a_run_ran():
    r = PendingRun(1, "ada", 2, submitted_at=NOW - 1000, attained_gpu_seconds=800.0)
    assert waited_so_far(r, NOW) == 600


# --------------------------------------------------------------------------- scenarios
def test_a_fresh_run_preempts_a_preemptible_run_that_has_had_more_service():
    running = [Allocation(1, "bob", "n0", (0, 1, 2, 3), group="nlp", preemptible=True, started_at=NOW - 7200)]
    d = decide([node("n0", 4)], running, [PendingRun(2, "ada", 2, group="vision", submitted_at=NOW - 5)])
    assert [p.run_id for p in d.preemptions] == [1]
    assert "8.0 GPU-hours" in d.preemptions[0].reason and "checkpoint" in d.preemptions[0].reason
    assert entry(d, 2).reason.startswith("Preempting: waiting for run 1 to stop")


def test_a_run_that_did_not_declare_checkpoints_is_never_preempted_for_service():
    running = [Allocation(1, "bob", "n0", (0, 1, 2, 3), group="nlp", preemptible=False, started_at=NOW - 7200)]
    d = decide([node("n0", 4)], running, [PendingRun(2, "ada", 2, group="vision", submitted_at=NOW - 5)])
    assert d.preemptions == ()
    assert "Reserved" in entry(d, 2).reason


def test_a_run_is_not_preempted_before_its_minimum_run_time():
    running = [Allocation(1, "bob", "n0", (0, 1, 2, 3), group="nlp", preemptible=True, started_at=NOW - 300,
                          attained_gpu_seconds=50000.0)]
    d = decide([node("n0", 4)], running, [PendingRun(2, "ada", 2, group="vision", submitted_at=NOW - 5)])
    assert d.preemptions == ()
    assert d.next_pass_at is not None and NOW < d.next_pass_at <= NOW - 300 + CONFIG.min_run_seconds + 300


def test_runs_of_the_same_service_class_do_not_preempt_each_other():
    running = [Allocation(1, "bob", "n0", (0, 1, 2, 3), group="nlp", preemptible=True, started_at=NOW - 700)]
    d = decide([node("n0", 4), node("n1", 4)],
               running + [Allocation(3, "cy", "n1", (0, 1, 2, 3), group="nlp", started_at=NOW - 10)],
               [PendingRun(2, "ada", 1, group="vision", submitted_at=NOW - 5)])
    assert d.preemptions == ()  # run 1 has had 0.8 GPU-hours: still class 0, like run 2


def test_the_reserved_run_says_which_run_it_waits_for_and_when():
    end = NOW + 3 * 3600
    running = [Allocation(9, "bob", "n0", (0, 1, 2, 3), group="nlp", started_at=NOW - 60, expected_end=end)]
    d = decide([node("n0", 4)], running, [PendingRun(2, "ada", 4, group="vision", submitted_at=NOW - 5),
                                          PendingRun(3, "ada", 1, group="vision", submitted_at=NOW - 1)])
    head = entry(d, 2)
    assert head.reason.startswith(f"Reserved: starts when run 9 ends, about {clock(end)}")
    assert head.estimated_start == end and head.reserved_nodes == ("n0",)
    assert "behind run 2" in entry(d, 3).reason


def test_a_reservation_on_a_run_without_a_limit_says_its_end_is_a_guess():
    running = [Allocation(9, "bob", "n0", (0, 1, 2, 3), group="nlp", started_at=NOW - 60,
                          estimated_end=NOW + 600)]
    d = decide([node("n0", 4)], running, [PendingRun(2, "ada", 4, group="vision", submitted_at=NOW - 5)])
    assert "no time limit" in entry(d, 2).reason and "guess" in entry(d, 2).reason


def test_when_the_holders_have_no_end_the_reason_says_the_estimate_is_unknown():
    running = [Allocation(-1, "bob", "n0", (0, 1, 2, 3), group="nlp", is_notebook=True, started_at=NOW - 60)]
    d = decide([node("n0", 4)], running, [PendingRun(2, "ada", 2, group="vision", submitted_at=NOW - 5)])
    assert "estimate unknown" in entry(d, 2).reason
    assert entry(d, 2).estimated_start is None


def test_an_overdue_wide_run_goes_ahead_and_its_node_takes_only_runs_due_to_leave_in_time():
    old = NOW - CONFIG.overdue_seconds - 60
    running = [Allocation(1, "bob", "n0", (0, 1, 2, 3, 4, 5), group="nlp", started_at=NOW - 60,
                          estimated_end=NOW + 600),
               Allocation(2, "bob", "n1", (0, 1, 2, 3, 4, 5, 6, 7), group="nlp", started_at=NOW - 60,
                          estimated_end=NOW + 300)]

    def queued(estimate: float) -> list[PendingRun]:
        return [PendingRun(10, "ada", 8, group="vision", submitted_at=old),
                PendingRun(11, "cy", 1, group="speech", submitted_at=NOW - 5, estimated_seconds=estimate),
                PendingRun(12, "cy", 1, group="speech", submitted_at=NOW - 5, max_seconds=60)]

    nodes = [node("n0"), node("n1")]
    strict = decide(nodes, running, queued(60), config=replace(CONFIG, held_backfill_factor=0.0))
    head = entry(strict, 10)
    assert head.position == 1 and head.reserved_nodes == ("n0",)  # the node with the most GPUs free
    assert "held" in head.reason and head.estimated_start == NOW + 600
    assert "waited too long" in entry(strict, 11).reason  # strict: an estimate is not enough any more
    assert [s.run_id for s in strict.starts] == [12]  # a time limit that ends in time is
    # With a margin, a run whose estimate doubled still ends before the reserved start may use the node.
    margin = replace(CONFIG, held_backfill_factor=2.0)
    assert [s.run_id for s in decide(nodes, running, queued(200), config=margin).starts] == [11, 12]
    late = decide(nodes, running, queued(400), config=margin)
    assert [s.run_id for s in late.starts] == [12]
    assert "2 times its expected 7 min would run past that" in entry(late, 11).reason
    assert entry(late, 10).reserved_nodes == ("n0",)


def test_the_service_default_is_what_the_service_runs():
    policy = make_policy("fair-share", Quotas(), 7 * 86400, 4 * 3600)
    assert isinstance(policy, ServiceFairPolicy)
    assert type(make_policy("fair-share-classic", Quotas(), 7 * 86400, 4 * 3600)).__name__ == "FairSharePolicy"
