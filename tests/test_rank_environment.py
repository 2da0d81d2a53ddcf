"""The environment and command line of every process of a distributed run, from pure builders, as whole objects."""

from __future__ import annotations

import json

import pytest

from nothing.scheduler.executors.base import ExitStatus
from nothing.scheduler.executors.slurm import first_failed_rank
from nothing.scheduler.executors.slurm_commands import srun_argv
from nothing.scheduler.states import RunState
from nothing.scheduler.runenv import RankLayout, RunLaunch, rank_environment, rank_plan, tf_config, torchrun_argv

TWO_BY_TWO = RankLayout(("10.0.0.1", "10.0.0.2"), procs_per_node=2, master_port=29564, run_id=7)
LAUNCH = RunLaunch(7, "alice", "default", "train.py", args=("--epochs", "3"), hyperparameters={"lr": "0.1"},
                   gpus=(0, 1), placement=(("gpu1", (0, 1)), ("gpu2", (2, 3))), procs_per_node=2)


def test_every_process_gets_the_torch_and_tensorflow_names_of_its_place():
    assert rank_environment(TWO_BY_TWO, 1, 0) == {
        "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29564", "WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "1", "NNODES": "2",
        "TF_CONFIG": '{"cluster":{"worker":["10.0.0.1:29565","10.0.0.1:29566","10.0.0.2:29567","10.0.0.2:29568"]},'
                     '"task":{"type":"worker","index":2}}',
    }


def test_tf_config_is_what_multiworkermirroredstrategy_reads():
    assert tf_config(RankLayout(("a", "b", "c"), master_port=100), 1) == {
        "cluster": {"worker": ["a:101", "b:102", "c:103"]}, "task": {"type": "worker", "index": 1}}


def test_a_torchrun_launcher_gets_its_node_rank_and_the_whole_rendezvous_on_its_command_line():
    layout = RankLayout(("10.0.0.1", "10.0.0.2"), procs_per_node=4, master_port=29500, torchrun=True, run_id=7)
    assert rank_environment(layout, 1, 0) == {"NODE_RANK": "1", "NNODES": "2"}
    assert torchrun_argv("/venv/bin/python", LAUNCH, layout, 1) == [
        "/venv/bin/python", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4",
        "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.1:29500", "--rdzv-id=run-7", "--node-rank=1",
        "--max-restarts=0", "train.py", "--epochs", "3", "--lr", "0.1"]


def test_torchrun_runs_an_executable_that_is_not_python_with_no_python():
    layout = RankLayout(("h",), procs_per_node=2, master_port=1, torchrun=True)
    launch = RunLaunch(1, "alice", "default", "run.sh", args=("x",))
    assert torchrun_argv("/py", launch, layout, 0) == [
        "/py", "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d",
        "--rdzv-endpoint=h:1", "--rdzv-id=run-0", "--node-rank=0", "--max-restarts=0", "--no-python", "./run.sh", "x"]


def test_the_plan_lists_every_task_node_by_node_as_srun_numbers_them():
    plan = rank_plan("/py", LAUNCH, TWO_BY_TWO, ("gpu1", "gpu2"))
    entry = ["/py", "-u", "train.py", "--epochs", "3", "--lr", "0.1"]
    assert [{k: v for k, v in task.items() if k != "env"} for task in plan] == [
        {"task": 0, "node": "gpu1", "node_rank": 0, "local_rank": 0, "argv": entry},
        {"task": 1, "node": "gpu1", "node_rank": 0, "local_rank": 1, "argv": entry},
        {"task": 2, "node": "gpu2", "node_rank": 1, "local_rank": 0, "argv": entry},
        {"task": 3, "node": "gpu2", "node_rank": 1, "local_rank": 1, "argv": entry},
    ]
    assert [task["env"] for task in plan] == [rank_environment(TWO_BY_TWO, n, k) for n in (0, 1) for k in (0, 1)]
    json.dumps(plan)  # it travels as JSON


def test_a_torchrun_plan_has_one_launcher_per_node():
    layout = RankLayout(("h1", "h2"), procs_per_node=8, master_port=5, torchrun=True, run_id=3)
    plan = rank_plan("/py", LAUNCH, layout, ("n1", "n2"))
    assert [(t["task"], t["node"], t["node_rank"], t["local_rank"], t["argv"][8]) for t in plan] == [
        (0, "n1", 0, 0, "--node-rank=0"), (1, "n2", 1, 0, "--node-rank=1")]
    assert layout.tasks_per_node == 1 and layout.world_size == 16


def test_only_runs_of_several_processes_are_distributed():
    one = RunLaunch(1, "a", "e", "t.py", gpus=(0, 1, 2, 3))
    assert not one.distributed and one.processes_per_node == 1
    assert RunLaunch(1, "a", "e", "t.py", procs_per_node=2).distributed
    assert RunLaunch(1, "a", "e", "t.py", torchrun=True).distributed
    assert RunLaunch(1, "a", "e", "t.py", placement=(("a", (0,)), ("b", (0,)))).distributed


def test_a_process_outside_the_layout_is_refused():
    with pytest.raises(ValueError):
        rank_environment(TWO_BY_TWO, 2, 0)
    with pytest.raises(ValueError):
        rank_environment(TWO_BY_TWO, 0, 2)
    with pytest.raises(ValueError):
        rank_plan("/py", LAUNCH, TWO_BY_TWO, ("gpu1",))


def test_srun_starts_the_tasks_node_by_node_and_ends_them_all_when_one_fails():
    assert srun_argv(2, 4, ["/py", "-I", "rank.py", "/runs/7/ranks"]) == [
        "srun", "--kill-on-bad-exit=1", "--nodes=2", "--ntasks-per-node=4", "--ntasks=8", "--distribution=block",
        "/py", "-I", "rank.py", "/runs/7/ranks"]
    with pytest.raises(ValueError):
        srun_argv(0, 1, ["x"])


def test_the_rank_that_failed_first_speaks_for_the_run():
    records = [
        {"rank": 0, "node": "n1", "exit_code": -15, "at": 12.0},  # stopped by srun after rank 2 failed
        {"rank": 1, "node": "n1", "exit_code": 0, "at": 10.0},
        {"rank": 2, "node": "n2", "exit_code": 3, "at": 11.0},
        {"rank": 3, "node": "n2", "exit_code": 1, "at": 11.5},
    ]
    assert first_failed_rank(records) == ExitStatus("entry", 3, detail="rank 2 on n2")
    assert first_failed_rank(records).describe() == "rank 2 on n2: exited with code 3"
    assert first_failed_rank([{"rank": 0, "node": "n1", "exit_code": 0, "at": 1.0}]) is None
    stopped = [{"rank": r, "node": "n1", "exit_code": -15, "at": float(r)} for r in range(2)]
    assert first_failed_rank(stopped).describe() == "every rank was stopped: killed by SIGTERM"
    launcher = [{"node_rank": 1, "node": "n2", "exit_code": -9, "at": 1.0}]
    assert first_failed_rank(launcher).describe() == "node 1 on n2: killed by SIGKILL"


async def test_the_local_executor_refuses_ranks_it_cannot_launch_and_runs_one_node_runs_as_before(dispatcher):
    from .test_dispatcher import ended, submit

    for shape in (dict(procs_per_node=2), dict(torchrun=True)):
        run = await submit(dispatcher, "print('ran')", gpus=0, **shape)
        done = await ended(dispatcher, run)
        assert (done.state, done.reason) == (RunState.CREATE_FAILED, (
            "could not start the run's process: the local executor starts one process per run: --procs-per-node "
            "above 1 and --torchrun need an engine that launches ranks (c.NothingScheduler.executor = \"slurm\")"))
    plain = await submit(dispatcher, "import os; print('rank', os.environ.get('RANK'))", gpus=1, procs_per_node=1)
    done = await ended(dispatcher, plain)
    assert done.state == RunState.COMPLETE and "rank None" in plain.paths.log.read_text()
