"""The Slurm executor, live on a real Slurm (3 nodes x 4 GPUs on loopback): our policy places, Slurm launches."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

from nothing.scheduler import store
from nothing.scheduler.db import Database
from nothing.scheduler.dispatcher import Dispatcher
from nothing.scheduler.executors.slurm import SlurmExecutor
from nothing.scheduler.policy import PriorityFifoPolicy
from nothing.scheduler.snapshot import SnapshotLimits
from nothing.scheduler.states import RunState

from .helpers import make_archive, wait_for
from .test_dispatcher import values

pytestmark = pytest.mark.slurm

# Says where it ran and with which GPUs, then holds until released (or exits with EM_HP_CODE).
WHERE = """
import json, os, sys, time
json.dump({"node": os.environ.get("SLURMD_NODENAME"), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "job": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid(), "hp": os.environ.get("EM_HP_LR")},
          open(os.path.join(os.environ["EM_MODEL_DIR"], "where.json"), "w"))
while os.environ.get("EM_HP_HOLD") and not os.path.exists(os.path.join(os.environ["EM_SOURCE_DIR"], "release")):
    time.sleep(0.05)
sys.exit(int(os.environ.get("EM_HP_CODE", "0")))
"""


@contextlib.asynccontextmanager
async def slurm_dispatcher(data_dir: Path, slurm, kill_grace: float = 1.0, policy=None):
    """A dispatcher whose runs are Slurm jobs of ``slurm``; the nodes come from Slurm's inventory."""
    db = Database(f"sqlite:///{data_dir / 'scheduler.sqlite'}")
    db.upgrade()
    executor = SlurmExecutor(on_exit=None, slurm_conf=str(slurm.conf), poll_interval=0.2)
    d = Dispatcher(db, executor, policy or PriorityFifoPolicy(), [], data_dir / "runs", sys.executable,
                   SnapshotLimits(64 * 1024**2), kill_grace_seconds=kill_grace)
    d.inventory_interval = 0.3
    await d.start()
    try:
        yield d
    finally:
        await d.stop()
        db.close()


async def ended(d, run, timeout=60):
    await wait_for(lambda: run.id not in d.active, timeout, message=f"run {run.id} to end")
    return await d.db.run(store.get_run, run.id)


def where(run) -> dict:
    return json.loads((run.paths.model / "where.json").read_text())


def written(run) -> bool:
    """Whether the run has written its whole where.json (it exists, empty, for a moment before that)."""
    try:
        where(run)
        return True
    except (FileNotFoundError, ValueError):
        return False


async def started(run, timeout=30):
    await wait_for(lambda: written(run), timeout, message=f"run {run.id} to start")
    return where(run)


async def test_the_nodes_the_policy_sees_are_slurms(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        assert sorted((n.name, len(n.gpus), n.cpus) for n in d.nodes) == [
            ("node1", 4, 4), ("node2", 4, 4), ("node3", 4, 4)]
        assert all(i.state == "up" and i.gpu_model == "testgpu" for i in d.node_infos)


async def test_each_run_lands_on_the_node_the_policy_chose_with_its_gpus(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        runs = [await d.submit(values(gpus=4, hyperparameters={"HOLD": "1", "LR": "0.1"}),
                               make_archive({"train.py": WHERE})) for _ in range(3)]
        seen = [await started(r) for r in runs]
        assert sorted(s["node"] for s in seen) == ["node1", "node2", "node3"]
        for run, s in zip(runs, seen):
            assert s["node"] == run.node, "Slurm ran the job elsewhere than the policy placed it"
            assert len(s["gpus"].split(",")) == 4 and s["hp"] == "0.1"
            assert d.executor.ref_text(run.process) == s["job"]
        for run in runs:
            (run.paths.source / "release").touch()
        assert [(await ended(d, r)).state for r in runs] == [RunState.COMPLETE] * 3


async def test_a_failing_run_ends_fail_train_with_its_exit_code(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=1, hyperparameters={"CODE": "3"}), make_archive({"train.py": WHERE}))
        row = await ended(d, run)
    assert row.state == RunState.FAIL_TRAIN and row.reason == "exited with code 3" and row.exit_code == 3


async def test_cancel_ends_the_slurm_job_and_its_processes(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=1, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
        pid = (await started(run))["pid"]
        await d.cancel(run.id, by="alice")
        row = await ended(d, run)
    assert row.state == RunState.STOPPED and "cancelled by alice" in row.reason
    assert not os.path.exists(f"/proc/{pid}")


async def test_max_time_stops_the_slurm_job(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=1, max_seconds=2, hyperparameters={"HOLD": "1"}),
                             make_archive({"train.py": WHERE}))
        await started(run)
        row = await ended(d, run)
    assert row.state == RunState.FAIL_TRAIN and "exceeded its maximum run time of 2s" in row.reason


async def test_a_drained_node_gets_no_new_runs(tmp_path, slurm):
    slurm.run("scontrol", "update", "NodeName=node1", "State=DRAIN", "Reason=maintenance")
    try:
        async with slurm_dispatcher(tmp_path, slurm) as d:
            await wait_for(lambda: "node1" not in {n.name for n in d.nodes}, message="node1 to leave the pool")
            assert next(i for i in d.node_infos if i.name == "node1").state == "drained"
            runs = [await d.submit(values(gpus=4, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
                    for _ in range(3)]
            await wait_for(lambda: sum(r.state == RunState.RUNNING for r in runs) == 2)
            waiting = next(r for r in runs if r.state == RunState.QUEUED)
            assert {r.node for r in runs if r.state == RunState.RUNNING} == {"node2", "node3"}
            await wait_for(lambda: waiting.reason, message="a reason for the waiting run")
            slurm.run("scontrol", "update", "NodeName=node1", "State=RESUME")
            await started(waiting)
            assert waiting.node == "node1"
            for run in runs:
                (run.paths.source / "release").touch()
            for run in runs:
                assert (await ended(d, run)).state == RunState.COMPLETE
    finally:
        slurm.run("scontrol", "update", "NodeName=node1", "State=RESUME", check=False)


async def test_a_restarted_scheduler_reattaches_to_its_slurm_jobs_by_job_id(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=2, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
        job = (await started(run))["job"]
    async with slurm_dispatcher(tmp_path, slurm) as d:
        again = d.active[run.id]
        assert again.state == RunState.RUNNING and d.executor.ref_text(again.process) == job
        (again.paths.source / "release").touch()
        row = await ended(d, again)
    assert row.state == RunState.COMPLETE
    assert len(list((tmp_path / "runs" / str(run.id) / "model").glob("where.json"))) == 1


async def test_a_job_whose_id_was_never_stored_is_found_by_its_name(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=1, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
        job = (await started(run))["job"]
        ref = await d.executor.recover(run.id, run.paths)
        assert ref is not None and ref.job_id == job
        (run.paths.source / "release").touch()
        await ended(d, run)
        assert await d.executor.recover(run.id, run.paths) is None
