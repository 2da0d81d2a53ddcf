"""Submitting ahead on a real Slurm: the run the policy keeps nodes for is handed to Slurm before they are free, so
Slurm starts it the moment the run on them ends (as it starts its own queued jobs), and it is withdrawn, never run
twice, when the queue changes, the run is cancelled or the scheduler restarts."""

from __future__ import annotations

import pytest

from nothing.scheduler.servicefair import ServiceFairPolicy
from nothing.scheduler.states import RunState

from .helpers import make_archive, wait_for
from .test_dispatcher import values
from .test_slurm_executor import WHERE, ended, slurm_dispatcher, started

pytestmark = pytest.mark.slurm

WHOLE_CLUSTER = dict(gpus=12, nodes=3, gpus_per_node=4)


async def submit_whole_cluster(d, hold: bool):
    return await d.submit(values(**WHOLE_CLUSTER, hyperparameters={"HOLD": "1"} if hold else {}),
                          make_archive({"train.py": WHERE}))


def job_state(slurm, job_id: str) -> str:
    out = slurm.run("squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T", check=False).stdout
    return out.strip()


async def second_waits_for_the_first(d):
    """A run holding the whole cluster, a second one waiting for it, and the second's job submitted ahead."""
    first = await submit_whole_cluster(d, hold=True)
    await started(first)
    second = await submit_whole_cluster(d, hold=False)
    await wait_for(lambda: second.id in d.executor._ahead, 30, message=f"run {second.id} to be submitted ahead")
    return first, second, d.executor._ahead[second.id][0].job_id


async def test_the_run_nodes_are_kept_for_is_started_by_slurm_itself_as_the_run_before_it_ends(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm, policy=ServiceFairPolicy()) as d:
        first, second, job = await second_waits_for_the_first(d)
        assert job_state(slurm, job) == "PENDING" and d.active[second.id].state == RunState.QUEUED
        (first.paths.source / "release").touch()
        assert (await started(second))["job"] == job  # the job submitted ahead is the one that ran
        assert (await ended(d, second)).state == RunState.COMPLETE
        assert (await ended(d, first)).state == RunState.COMPLETE
        assert not d.executor._ahead and not (second.paths.control / "slurm.ahead").exists()


async def test_a_run_cancelled_while_submitted_ahead_leaves_no_job(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm, policy=ServiceFairPolicy()) as d:
        first, second, job = await second_waits_for_the_first(d)
        await d.cancel(second.id, "alice")
        assert (await ended(d, second)).state == RunState.STOPPED
        assert job_state(slurm, job) == "CANCELLED"
        (first.paths.source / "release").touch()
        assert (await ended(d, first)).state == RunState.COMPLETE
        assert not second.paths.model.joinpath("where.json").exists()  # it never ran


async def test_after_a_restart_the_job_submitted_ahead_is_withdrawn_and_the_run_runs_once(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm, policy=ServiceFairPolicy()) as d:
        first, second, job = await second_waits_for_the_first(d)
    # As if the scheduler had been killed between sbatch's answer and writing the job's id down: found by name.
    (second.paths.control / "slurm.ahead").unlink()
    async with slurm_dispatcher(tmp_path, slurm, policy=ServiceFairPolicy()) as d:
        assert job_state(slurm, job) == "CANCELLED"  # the previous life's job, before any pass of this one
        (first.paths.source / "release").touch()
        ran = await started(d.active[second.id])
        assert (await ended(d, d.active[second.id])).state == RunState.COMPLETE
        assert ran["job"] != job
        assert (await ended(d, d.active.get(first.id) or first)).state == RunState.COMPLETE


async def test_a_job_submitted_ahead_that_started_while_the_scheduler_was_down_is_taken_over(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm, policy=ServiceFairPolicy()) as d:
        first, second, job = await second_waits_for_the_first(d)
    (first.paths.source / "release").touch()  # no scheduler: Slurm starts the second run's job by itself
    assert (await started(second))["job"] == job
    async with slurm_dispatcher(tmp_path, slurm, policy=ServiceFairPolicy()) as d:
        assert (await ended(d, d.active.get(second.id) or second)).state == RunState.COMPLETE
        assert (await ended(d, d.active.get(first.id) or first)).state == RunState.COMPLETE
    assert job_state(slurm, job) == "COMPLETED"  # the run ran once, on the job submitted ahead
