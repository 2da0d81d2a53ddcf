"""Notebooks with the Slurm executor: they stay on the hub's machine (``c.SlurmExecutor.notebook_node``), their GPUs
held there by the scheduler and, in Slurm, by a placeholder job, so no run's job is given the same devices."""

from __future__ import annotations

import json

import pytest

from nothing.scheduler.dispatcher import NotebookGpusUnavailable
from nothing.scheduler.executors.slurm_commands import hold_sbatch_argv, parse_gpu_indices
from nothing.scheduler.states import RunState

from .helpers import make_archive, wait_for
from .test_dispatcher import values
from .test_slurm_executor import WHERE, ended, slurm_dispatcher, started

pytestmark = pytest.mark.slurm


def slurm_jobs(slurm) -> dict[str, dict]:
    return {j["name"]: j for j in json.loads(slurm.run("squeue", "--json").stdout)["jobs"]}


def test_a_placeholder_job_is_a_sleep_holding_the_gpus_on_the_one_node():
    assert hold_sbatch_argv("nb-1", "gpu1", 2, ("--partition=main",)) == [
        "sbatch", "--parsable", "--job-name=nb-1", "--nodelist=gpu1", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
        "--gres=gpu:2", "--output=/dev/null", "--error=/dev/null", "--chdir=/", "--no-requeue", "--partition=main",
        "--wrap=exec sleep infinity"]
    line = ("JobId=5 JobName=nb-1 UserId=root(0) JobState=RUNNING   Nodes=node2 CPU_IDs=0 Mem=128 "
            "GRES=gpu:testgpu:2(IDX:0-1) MinCPUsNode=1")
    assert parse_gpu_indices(line) == {"node2": (0, 1)}
    assert parse_gpu_indices("JobId=6 Nodes=node[1-2] CPU_IDs=0 GRES=gpu:3(IDX:0,2-3) x=1") == {
        "node1": (0, 2, 3), "node2": (0, 2, 3)}


async def test_notebook_gpus_are_held_on_the_notebook_node_in_slurm_and_runs_get_other_devices(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        d.executor.notebook_node = "node2"
        hold = await d.hold_notebook_gpus("alice", "", "", 2)
        assert (hold.node, hold.gpus) == ("node2", (0, 1))
        placeholder = slurm_jobs(slurm)[d.executor.hold_name("alice/")]
        assert placeholder["job_state"] == "RUNNING" and placeholder["nodes"] == "node2"
        # Two GPUs are left on node2: a 4-GPU run goes elsewhere, a 2-GPU run fits there (best fit) and Slurm
        # gives it the two devices the notebook does not use.
        big = await d.submit(values(gpus=4, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
        small = await d.submit(values(gpus=2, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
        seen_big, seen_small = await started(big), await started(small)
        assert seen_big["node"] in ("node1", "node3")
        assert (seen_small["node"], seen_small["gpus"]) == ("node2", "2,3")
        assert await d.release_notebook_gpus("alice", "")
        await wait_for(lambda: slurm_jobs(slurm)[d.executor.hold_name("alice/")]["job_state"] == "CANCELLED",
                       message="the placeholder job to end")
        for run in (big, small):
            (run.paths.source / "release").touch()
            assert (await ended(d, run)).state == RunState.COMPLETE


async def test_without_a_notebook_node_a_notebook_asking_for_gpus_is_told_why(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        with pytest.raises(NotebookGpusUnavailable) as e:
            await d.hold_notebook_gpus("alice", "", "", 1)
        assert str(e.value).startswith("notebooks run on the hub's machine, which is not a node of the Slurm "
                                       "cluster here (c.SlurmExecutor.notebook_node is not set)")
        assert d.notebooks == {}
        d.executor.notebook_node = "node1"
        with pytest.raises(NotebookGpusUnavailable, match="asks for 5 GPUs but 4 are free on node1, the node "
                                                          "notebooks run on"):
            await d.hold_notebook_gpus("alice", "", "", 5)
