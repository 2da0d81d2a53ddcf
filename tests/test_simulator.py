"""The trace simulator: small traces whose outcome can be worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from nothing.scheduler.estimates import RuntimeEstimator
from nothing.scheduler.fairshare import FairSharePolicy
from nothing.scheduler.policy import ClusterSnapshot, PendingRun, PriorityFifoPolicy
from nothing.scheduler.quotas import Quota, Quotas
from nothing.scheduler.reference import SrtfOracle, Tiresias2DLAS
from nothing.scheduler.servicefair import ServiceFairPolicy
from nothing.scheduler.simulator import (
    FREE_PREEMPTION,
    Job,
    PreemptionCost,
    jain_index,
    load_philly,
    percentile,
    simulate,
    uniform_nodes,
)

PHILLY = Path(__file__).resolve().parents[2] / "shared" / "traces" / "philly" / "philly.csv"


def outcome(report, job_id):
    return next(o for o in report.outcomes if o.job.job_id == job_id)


def test_three_jobs_on_two_gpus_under_fifo():
    # Two 1-GPU jobs run 0-100 s; the 2-GPU job waits for both, runs 100-150 s.
    jobs = [Job(0, 0, 100, 1, "a"), Job(1, 0, 100, 1, "a"), Job(2, 0, 50, 2, "a")]
    r = simulate(jobs, uniform_nodes(1, 2), PriorityFifoPolicy())
    assert [outcome(r, i).jct for i in range(3)] == [100, 100, 150]
    assert r.avg_jct == pytest.approx(350 / 3)
    assert r.avg_queued == pytest.approx(100 / 3)
    assert r.p99_queued == 100
    assert r.makespan == 150
    assert (r.idle_gpu_hours_while_waiting, r.waiting_while_full) == (0, 1)
    assert r.completed == 3


def test_fifo_blocks_behind_the_head_and_backfill_does_not():
    # Job 1 needs both GPUs and must wait for job 0 (ends at 100).  Job 2 is short
    # (its 50 s limit ends before 100): backfill starts it at once, FIFO holds it.
    jobs = [Job(0, 0, 100, 1, "a", max_seconds=100), Job(1, 1, 100, 2, "a", max_seconds=100),
            Job(2, 2, 40, 1, "a", max_seconds=50)]
    fifo = simulate(jobs, uniform_nodes(1, 2), PriorityFifoPolicy())
    fair = simulate(jobs, uniform_nodes(1, 2), FairSharePolicy())
    assert [outcome(fifo, i).first_start for i in range(3)] == [0, 100, 200]
    assert [outcome(fair, i).first_start for i in range(3)] == [0, 100, 2]
    assert outcome(fair, 1).end == 200  # the head was not delayed
    # FIFO left one GPU idle from 1 to 100 while jobs waited; 100 of its 297 waiting job-seconds had no GPU free.
    assert fifo.idle_gpu_hours_while_waiting == pytest.approx(99 / 3600)
    assert fifo.waiting_while_full == pytest.approx(100 / 297)


def test_a_run_killed_at_its_time_limit_ends_there():
    r = simulate([Job(0, 0, 500, 1, "a", max_seconds=60)], uniform_nodes(1, 1), FairSharePolicy())
    assert outcome(r, 0).end == 60


def test_utilisation_counts_busy_gpu_time_in_the_window():
    jobs = [Job(0, 0, 100, 2, "a"), Job(1, 100, 1, 1, "a")]
    r = simulate(jobs, uniform_nodes(1, 4), PriorityFifoPolicy())
    assert r.utilisation == pytest.approx(0.5)  # 2 of 4 GPUs busy from 0 to 100


def test_a_borrowing_job_is_preempted_and_resumes_when_the_owner_is_done():
    # "b" has no guarantee and borrows both GPUs; "a" is owed 2 and takes them back at t=10.
    quotas = Quotas(groups={"a": Quota(guaranteed_gpus=2), "b": Quota(guaranteed_gpus=0)})
    jobs = [Job(0, 0, 100, 2, "b", preemptible=True), Job(1, 10, 30, 2, "a")]
    r = simulate(jobs, uniform_nodes(1, 2), FairSharePolicy(), quotas=quotas, preemption_cost=FREE_PREEMPTION)
    assert r.preemptions == 1
    assert (outcome(r, 1).first_start, outcome(r, 1).end) == (10, 40)
    b = outcome(r, 0)
    assert (b.preemptions, b.end, b.running_seconds) == (1, 130, 100)  # 10 s, then the other 90 s from 40
    assert b.queued == 30
    assert r.lost_gpu_hours == 0


def test_a_preempted_job_loses_the_work_since_its_checkpoint_and_pays_the_restart():
    # Checkpoints every 4 s: preempted at 10 s it keeps 8 s, loses 2 s (on 2 GPUs) and restarts for 5 s.
    quotas = Quotas(groups={"a": Quota(guaranteed_gpus=2), "b": Quota(guaranteed_gpus=0)})
    jobs = [Job(0, 0, 100, 2, "b", preemptible=True), Job(1, 10, 30, 2, "a")]
    r = simulate(jobs, uniform_nodes(1, 2), FairSharePolicy(), quotas=quotas, preemption_cost=PreemptionCost(4, 5))
    b = outcome(r, 0)
    assert (b.end, b.running_seconds) == (40 + 92 + 5, 10 + 97)
    assert r.lost_gpu_hours == pytest.approx(2 * 2 / 3600)
    assert r.max_queued == 30


def test_a_preempted_job_that_cannot_resume_starts_over():
    quotas = Quotas(groups={"a": Quota(guaranteed_gpus=2), "b": Quota(guaranteed_gpus=0)})
    jobs = [Job(0, 0, 100, 2, "b", preemptible=True), Job(1, 10, 30, 2, "a")]
    r = simulate(jobs, uniform_nodes(1, 2), FairSharePolicy(), quotas=quotas, resume_after_preempt=False,
                 preemption_cost=FREE_PREEMPTION)
    assert outcome(r, 0).end == 140


def test_a_stream_of_small_jobs_does_not_starve_a_big_one():
    # A 4-GPU job waits while 1-GPU jobs keep arriving; the reservation lets it start
    # as soon as the jobs running when it arrived have ended.
    jobs = [Job(i, i * 10, 100, 1, "small", max_seconds=100) for i in range(4)]
    jobs.append(Job(99, 35, 100, 4, "big", max_seconds=100))
    jobs += [Job(10 + i, 40 + i * 10, 100, 1, "small", max_seconds=100) for i in range(40)]
    r = simulate(jobs, uniform_nodes(1, 4), FairSharePolicy())
    assert outcome(r, 99).first_start == 130
    assert r.completed == len(jobs)


def test_metrics_helpers():
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([5], 99) == 5
    assert percentile([], 95) == 0
    assert jain_index([1, 1, 1]) == pytest.approx(1.0)
    assert jain_index([1, 0]) == pytest.approx(0.5)


def test_the_philly_week_has_the_published_job_count():
    assert PHILLY.exists(), f"the Philly trace is missing: {PHILLY} (shared/ must sit beside the checkout)"
    jobs = load_philly(PHILLY, "2017-10-16", "2017-10-23")
    assert len(jobs) == 13408
    assert all(j.duration >= 60 and j.duration * j.gpus < 1000 * 3600 for j in jobs)
    assert [j.submit for j in jobs] == sorted(j.submit for j in jobs)


def test_rounds_act_on_events_at_the_next_multiple_for_every_policy():
    # Job 1 arrives at 5 s and job 0 ends at 100 s: with 60-s rounds they start at 60 and 120.
    jobs = [Job(0, 0, 100, 1, "a"), Job(1, 5, 10, 1, "a"), Job(2, 70, 10, 1, "a")]
    r = simulate(jobs, uniform_nodes(1, 1), PriorityFifoPolicy(), round_seconds=60)
    assert [outcome(r, i).first_start for i in range(3)] == [0, 120, 180]
    assert outcome(r, 0).end == 100  # ends are exact; only decisions wait for the round


def test_tiresias_lets_a_new_job_overtake_one_that_has_had_more_service():
    # Job 0 (1 GPU, long) passes the 1 GPU-hour threshold; job 1 arrives later and preempts it.
    jobs = [Job(0, 0, 10_000, 1, "a", preemptible=True), Job(1, 4000, 100, 1, "b", preemptible=True)]
    r = simulate(jobs, uniform_nodes(1, 1), Tiresias2DLAS(), preemption_cost=PreemptionCost(600, 60))
    assert outcome(r, 1).first_start == 4000 and outcome(r, 1).end == 4100
    a = outcome(r, 0)
    # 4,000 s ran, 3,600 kept at the last checkpoint, 60 s restart: 10,000 - 3,600 + 60 more from 4,100.
    assert (a.preemptions, a.end) == (1, 4100 + 10_000 - 3600 + 60)


def test_tiresias_does_not_preempt_within_a_queue_or_runs_that_are_not_preemptible():
    jobs = [Job(0, 0, 10_000, 1, "a"), Job(1, 4000, 100, 1, "b", preemptible=True)]
    r = simulate(jobs, uniform_nodes(1, 1), Tiresias2DLAS())
    assert r.preemptions == 0 and outcome(r, 1).first_start == 10_000
    jobs = [Job(0, 0, 3000, 1, "a", preemptible=True), Job(1, 100, 100, 1, "b", preemptible=True)]
    r = simulate(jobs, uniform_nodes(1, 1), Tiresias2DLAS())
    assert r.preemptions == 0 and outcome(r, 1).first_start == 3000  # both stayed in the first queue


def test_the_srtf_oracle_runs_the_shortest_remaining_job_first_and_needs_the_simulator():
    jobs = [Job(0, 0, 1000, 1, "a", preemptible=True), Job(1, 10, 100, 1, "b", preemptible=True)]
    r = simulate(jobs, uniform_nodes(1, 1), SrtfOracle(), preemption_cost=FREE_PREEMPTION)
    assert (outcome(r, 1).first_start, outcome(r, 1).end, outcome(r, 0).end) == (10, 110, 1100)
    with pytest.raises(RuntimeError, match="true durations"):
        SrtfOracle().decide(ClusterSnapshot(uniform_nodes(1, 1), queued=(PendingRun(1, "u", 1),)))


def test_the_default_policy_finishes_a_short_job_before_a_long_preemptible_one():
    jobs = [Job(0, 0, 20_000, 1, "a", preemptible=True), Job(1, 5000, 300, 1, "b", preemptible=True)]
    r = simulate(jobs, uniform_nodes(1, 1), ServiceFairPolicy(), preemption_cost=PreemptionCost(600, 60))
    assert r.preemptions == 1 and outcome(r, 1).end <= 5000 + 300 + 300  # within one round of 5 min
    assert r.completed == 2


def test_estimates_learn_per_key_bound_by_the_limit_and_score_themselves():
    est = RuntimeEstimator(min_samples=2)
    assert est.estimate("ada", "vision").source == "default"
    for s in (100, 200, 300):
        est.learn("ada", "vision", s, experiment="mnist", entry_point="train.py")
    e = est.estimate("ada", "vision", "mnist", "train.py")
    assert (e.seconds, e.source, e.samples) == (200, "entry point", 3)
    assert est.estimate("bob", "vision").source == "group"
    assert est.estimate("ada", "vision", "mnist", "train.py", elapsed=250).seconds == 300  # outlived the median
    assert est.estimate("ada", "vision", "mnist", "train.py", max_seconds=50).source == "limit"
    est.learn("ada", "vision", 400, estimated=100)
    est.learn("ada", "vision", 100, estimated=100)
    err = est.error()
    assert (err.runs, err.over_2x, err.median_factor) == (2, 0.5, 1.0)
