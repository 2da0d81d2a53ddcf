"""Multi-node runs on a real Slurm (3 nodes x 4 GPUs on loopback): the policy places the gang, srun starts the
ranks, the ranks find each other through the environment alone and agree on a collective over TCP."""

from __future__ import annotations

import json
import os
import time

import pytest

from nothing.scheduler import store
from nothing.scheduler.states import RunState

from .helpers import make_archive, wait_for
from .test_dispatcher import values
from .test_slurm_executor import WHERE, ended, slurm_dispatcher, started

pytestmark = pytest.mark.slurm

# Every rank sends rank + 1 to rank 0 (listening on MASTER_ADDR:MASTER_PORT), which sends the sum back to all:
# each rank writes what it saw and the agreed sum. EM_HP_FAIL_RANK exits that rank with EM_HP_FAIL_CODE before
# the collective, once every rank has started (and the file EM_HP_WAIT_FOR exists; the others wait in it); EM_HP_HOLD keeps every rank alive afterwards until released.
COLLECTIVE = r"""
import json, os, socket, sys, time
env = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
                                      "LOCAL_WORLD_SIZE", "NODE_RANK", "TF_CONFIG", "SLURMD_NODENAME",
                                      "SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
print(f"hello from rank {rank} of {world} on {env['SLURMD_NODENAME']}", flush=True)
out = os.path.join(os.environ["EM_MODEL_DIR"], f"rank-{rank}.json")
open(os.path.join(os.environ["EM_MODEL_DIR"], f"pid-{rank}"), "w").write(str(os.getpid()))
if rank == int(os.environ.get("EM_HP_FAIL_RANK", "-1")):
    while not all(os.path.exists(os.path.join(os.environ["EM_MODEL_DIR"], f"pid-{r}")) for r in range(world)):
        time.sleep(0.02)  # every rank has started: the others are in the collective when this one fails
    while os.environ.get("EM_HP_WAIT_FOR") and not os.path.exists(
            os.path.join(os.environ["EM_SOURCE_DIR"], os.environ["EM_HP_WAIT_FOR"])):
        time.sleep(0.02)
    print(f"rank {rank} fails on purpose", flush=True)
    sys.exit(int(os.environ["EM_HP_FAIL_CODE"]))
addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
if rank == 0:
    server = socket.create_server((addr, port))
    server.settimeout(120)
    peers, total = [], 1
    for _ in range(world - 1):
        conn, _ = server.accept()
        total += int(conn.recv(64))
        peers.append(conn)
    for conn in peers:
        conn.sendall(str(total).encode())
        conn.close()
    agreed = total
else:
    deadline = time.time() + 120
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    conn.sendall(str(rank + 1).encode())
    agreed = int(conn.recv(64))
json.dump(dict(env, agreed=agreed, pid=os.getpid()), open(out, "w"))
print(f"rank {rank} agreed on {agreed}", flush=True)
while os.environ.get("EM_HP_HOLD") and not os.path.exists(os.path.join(os.environ["EM_SOURCE_DIR"], "release")):
    time.sleep(0.05)
"""


def ranks_seen(run, world: int) -> list[dict]:
    return [json.loads((run.paths.model / f"rank-{r}.json").read_text()) for r in range(world)]


async def all_ranks_agreed(run, world: int, timeout: float = 60) -> list[dict]:
    await wait_for(lambda: all((run.paths.model / f"rank-{r}.json").exists() for r in range(world)), timeout,
                   message=f"all {world} ranks of run {run.id} to agree")
    return ranks_seen(run, world)


async def test_a_two_node_run_whose_ranks_find_each_other_and_agree_on_a_sum(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=4, nodes=2, gpus_per_node=2, procs_per_node=2),
                             make_archive({"train.py": COLLECTIVE}))
        row = await ended(d, run)
        assert row.state == RunState.COMPLETE, row.reason
        seen = ranks_seen(run, 4)
    nodes = [node for node, _ in row.placement]
    assert len(nodes) == 2 and row.node == nodes[0] and all(len(g) == 2 for _, g in row.placement)
    first = sorted(nodes, key=lambda n: int(n.removeprefix("node")))
    port = seen[0]["MASTER_PORT"]
    workers = [f"127.0.0.1:{int(port) + 1 + r}" for r in range(4)]
    assert [{k: s[k] for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                               "SLURMD_NODENAME", "agreed")} for s in seen] == [
        {"RANK": str(r), "LOCAL_RANK": str(r % 2), "NODE_RANK": str(r // 2), "WORLD_SIZE": "4",
         "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "SLURMD_NODENAME": first[r // 2], "agreed": 10}
        for r in range(4)]
    assert [json.loads(s["TF_CONFIG"]) for s in seen] == [
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": r}} for r in range(4)]
    assert len({s["SLURM_JOB_ID"] for s in seen}) == 1
    log = run.paths.log.read_text()
    for r in range(4):
        assert f"[rank {r}] hello from rank {r} of 4 on {first[r // 2]}" in log
        assert f"[rank {r}] rank {r} agreed on 10" in log
        per_rank = (run.paths.root / "ranks" / f"rank-{r}.log").read_text()
        assert per_rank == f"hello from rank {r} of 4 on {first[r // 2]}\nrank {r} agreed on 10\n"


def pids(run, world: int) -> list[int]:
    return [int((run.paths.model / f"pid-{r}").read_text()) for r in range(world)]


async def started_ranks(run, world: int, timeout: float = 60) -> list[int]:
    await wait_for(lambda: all((run.paths.model / f"pid-{r}").exists() for r in range(world)), timeout,
                   message=f"all {world} ranks of run {run.id} to start")
    return pids(run, world)


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


async def test_a_failing_rank_fails_the_run_with_its_exit_code_and_the_other_ranks_are_stopped(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=2, nodes=2, gpus_per_node=1, hyperparameters={"FAIL_RANK": "1",
                                                                                      "FAIL_CODE": "3"}),
                             make_archive({"train.py": COLLECTIVE}))
        survivor = (await started_ranks(run, 2))[0]
        began = time.monotonic()
        row = await ended(d, run)
    second = sorted((n for n, _ in row.placement), key=lambda n: int(n.removeprefix("node")))[1]
    assert (row.state, row.exit_code, row.reason) == (RunState.FAIL_TRAIN, 3, f"rank 1 on {second}: exited with code 3")
    # Rank 0 was waiting in the collective for rank 1 (up to 120 s): srun stopped it at once.
    assert time.monotonic() - began < 30 and gone(survivor)
    assert not (run.paths.model / "rank-0.json").exists()
    assert "[rank 1] rank 1 fails on purpose" in run.paths.log.read_text()


async def test_cancel_stops_every_rank_on_every_node(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=4, nodes=2, gpus_per_node=2, procs_per_node=2,
                                    hyperparameters={"HOLD": "1"}), make_archive({"train.py": COLLECTIVE}))
        await all_ranks_agreed(run, 4)
        ranks = pids(run, 4)
        await d.cancel(run.id, by="alice")
        row = await ended(d, run)
    # SIGTERM reached every rank itself (a chance to save a checkpoint), not a SIGKILL from srun.
    assert (row.state, row.reason) == (RunState.STOPPED, "cancelled by alice; every rank was stopped: killed by SIGTERM")
    await wait_for(lambda: all(gone(p) for p in ranks), 10, message="every rank to be gone")
    assert len(row.placement) == 2


async def test_max_time_stops_every_rank_on_every_node(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        run = await d.submit(values(gpus=2, nodes=2, gpus_per_node=1, max_seconds=3, hyperparameters={"HOLD": "1"}),
                             make_archive({"train.py": COLLECTIVE}))
        await all_ranks_agreed(run, 2)
        ranks = pids(run, 2)
        row = await ended(d, run)
    assert (row.state, row.reason) == (RunState.FAIL_TRAIN, "exceeded its maximum run time of 3s; every rank was "
                                                            "stopped: killed by SIGTERM")
    await wait_for(lambda: all(gone(p) for p in ranks), 10, message="every rank to be gone")


async def test_single_gpu_runs_land_on_the_nodes_the_policy_chose_beside_a_two_node_run(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        gang = await d.submit(values(gpus=6, nodes=2, gpus_per_node=3, hyperparameters={"HOLD": "1"}),
                              make_archive({"train.py": COLLECTIVE}))
        await all_ranks_agreed(gang, 2)
        held = sorted(n for n, _ in gang.placement)
        singles = [await d.submit(values(gpus=1, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
                   for _ in range(2)]
        seen = [await started(r) for r in singles]
        # Best fit: the one free GPU left on each of the gang's nodes, not the idle node.
        assert sorted(s["node"] for s in seen) == held == sorted(r.node for r in singles)
        for run, s in zip(singles, seen):
            assert s["node"] == run.node and len(s["gpus"].split(",")) == 1
        for run in [gang, *singles]:
            (run.paths.source / "release").touch()
        assert [(await ended(d, r)).state for r in [gang, *singles]] == [RunState.COMPLETE] * 3


async def test_nodes_drained_while_a_two_node_run_waits_show_why_and_it_runs_on_the_ones_left(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        blocker = await d.submit(values(gpus=4, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
        await started(blocker)
        busy = blocker.node
        idle = sorted({"node1", "node2", "node3"} - {busy})
        try:
            # The blocker's node is drained (its run goes on) and so is one idle node: one node is left.
            slurm.run("scontrol", "update", f"NodeName={busy}", "State=DRAIN", "Reason=disk replacement")
            slurm.run("scontrol", "update", f"NodeName={idle[0]}", "State=DRAIN", "Reason=firmware update")
            await wait_for(lambda: {n.name for n in d.nodes} == {idle[1]}, message="two nodes to be drained")
            gang = await d.submit(values(gpus=4, nodes=2, gpus_per_node=2), make_archive({"train.py": COLLECTIVE}))
            await wait_for(lambda: "firmware update" in gang.reason, message="the waiting run to say why")
            assert gang.state == RunState.QUEUED
            assert gang.reason.endswith(f"not usable now: {busy} is drained (disk replacement), "
                                        f"{idle[0]} is drained (firmware update)"), gang.reason
            assert blocker.state == RunState.RUNNING
            slurm.run("scontrol", "update", f"NodeName={idle[0]}", "State=RESUME")
            row = await ended(d, gang)
            assert row.state == RunState.COMPLETE, row.reason
            assert sorted(n for n, _ in row.placement) == idle
            (blocker.paths.source / "release").touch()
            assert (await ended(d, blocker)).state == RunState.COMPLETE
        finally:
            for node in ("node1", "node2", "node3"):
                slurm.run("scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)


async def test_a_run_slurm_holds_back_on_a_node_that_is_then_drained_is_placed_again_on_the_others(tmp_path, slurm):
    async with slurm_dispatcher(tmp_path, slurm) as d:
        ours = await d.submit(values(gpus=4, hyperparameters={"HOLD": "1"}), make_archive({"train.py": WHERE}))
        await started(ours)
        free = sorted({"node1", "node2", "node3"} - {ours.node})
        # Someone else's job (outside our scheduler) takes every GPU of one free node: our policy cannot see it.
        script = tmp_path / "other.sh"
        script.write_text("#!/bin/sh\nexec sleep 300\n")
        other = slurm.run("sbatch", "--parsable", f"--nodelist={free[0]}", "--gres=gpu:4", "--output=/dev/null",
                          str(script)).stdout.strip()
        try:
            await wait_for(lambda: json.loads(slurm.run("squeue", "--json").stdout)["jobs"] and any(
                str(j["job_id"]) == other and j["job_state"] == "RUNNING"
                for j in json.loads(slurm.run("squeue", "--json").stdout)["jobs"]), message="the other job to run")
            gang = await d.submit(values(gpus=4, nodes=2, gpus_per_node=2), make_archive({"train.py": COLLECTIVE}))
            await wait_for(lambda: "the cluster has not started it yet: Resources" in gang.reason,
                           message="Slurm to hold the gang back")
            assert sorted(n for n, _ in gang.placement) == free
            slurm.run("scontrol", "update", f"NodeName={free[0]}", "State=DRAIN", "Reason=bad fan")
            began = time.monotonic()
            await wait_for(lambda: gang.state == RunState.QUEUED, message="the gang to go back to the queue")
            assert time.monotonic() - began < 10  # a job Slurm has not started is cancelled at once
            (ours.paths.source / "release").touch()
            row = await ended(d, gang)
            assert row.state == RunState.COMPLETE, row.reason
            assert sorted(n for n, _ in row.placement) == sorted([ours.node, free[1]])
            events = [e.reason for e in await d.db.run(store.run_events, gang.id)]
            assert any(f"{free[0]} is drained (bad fan): placing it again" in e for e in events), events
        finally:
            slurm.run("scancel", other, check=False)
            slurm.run("scontrol", "update", f"NodeName={free[0]}", "State=RESUME", check=False)
