"""The whole service on Slurm: a real JupyterHub whose scheduler (a real process, under its supervisor) has
``c.NothingScheduler.executor = "slurm"`` on the loopback Slurm; runs go in through the REST API as the users'
Unix accounts, and the scheduler is SIGKILLed while multi-node runs go on, wait and fail."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from .conftest import SCHEDULER_TEST_ARGS
from .helpers import wait_for_sync
from .test_slurm_executor import WHERE
from .test_slurm_multinode import COLLECTIVE

pytestmark = [pytest.mark.slurm, pytest.mark.hub]


@pytest.fixture(scope="module")
def slurm_hub(slurm):
    from .hub import Hub

    root = Path(tempfile.mkdtemp(prefix="nothing-hub-"))
    hub = Hub(root / "hub", [*SCHEDULER_TEST_ARGS, "--NothingScheduler.executor=slurm",
                             f"--SlurmExecutor.slurm_conf={slurm.conf}", "--SlurmExecutor.poll_interval=0.2"])
    hub.start()
    try:
        yield hub
    finally:
        slurm.cancel_all()
        hub.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def api(slurm_hub):
    import secrets

    from .hub import Api

    name = f"slurm-{secrets.token_hex(3)}"
    slurm_hub.create_user(name)
    return Api(slurm_hub, slurm_hub.token_for(name))


def run_dir(hub, run_id: int) -> Path:
    return hub.root / "var" / "scheduler" / "runs" / str(run_id)


def kill_scheduler(hub, api) -> None:
    """SIGKILL the scheduler (its supervisor starts a new one at once) and wait until the new one answers."""
    old = hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)
    wait_for_sync(lambda: _pid(hub) not in (None, old), timeout=15, message="a new scheduler process")
    wait_for_sync(lambda: _answers(api), timeout=15, message="the new scheduler to answer")


def _answers(api) -> bool:
    import requests

    try:
        return api("GET", "/runs?limit=1", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _pid(hub):
    try:
        return hub.scheduler_pid()
    except RuntimeError:
        return None


def jobs_of(slurm, hub, run_id: int) -> list[str]:
    """Every job Slurm knows (running or ended within MinJobAge) by the name the hub's scheduler gives the run, that
    was given nodes: a job submitted ahead and withdrawn while it waited never ran anything."""
    from nothing.scheduler.executors.slurm import SlurmExecutor

    executor = SlurmExecutor(on_exit=None)
    executor.set_scope(str(hub.root / "var" / "scheduler" / "runs"))
    jobs = json.loads(slurm.run("squeue", "--json").stdout)["jobs"]
    return [str(j["job_id"]) for j in jobs if j.get("name") == executor.job_name(run_id) and j.get("nodes")]


def test_the_api_takes_the_shape_and_shows_the_placement(slurm_hub, api):
    refused = api.submit({"train.py": COLLECTIVE}, entry_point="train.py", nodes=4, gpus_per_node=1)
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("asks for 4 nodes, but this cluster has only 3 nodes")
    run = api.submit({"train.py": COLLECTIVE}, entry_point="train.py", nodes=2, gpus_per_node=2,
                     procs_per_node=2).json()
    assert (run["gpus"], run["nodes"], run["gpus_per_node"], run["procs_per_node"], run["torchrun"]) == \
        (4, 2, 2, 2, False)
    done = api.wait_state(run["id"], {"COMPLETE", "FAIL TRAIN"}, timeout=60)
    assert done["state"] == "COMPLETE", done["reason"]
    assert [len(gpus) for _, gpus in done["placement"]] == [2, 2]
    assert done["node"] == done["placement"][0][0] and done["assigned_gpus"] == done["placement"][0][1]
    log = api("GET", f"/runs/{run['id']}/logs").text
    assert all(f"[rank {r}] rank {r} agreed on 10" in log for r in range(4))


def test_a_sigkilled_scheduler_loses_no_multi_node_run_and_starts_none_twice(slurm_hub, api, slurm):
    hold = {"HOLD": "1"}
    # A holds two whole nodes; B (two nodes) waits for them; C (one GPU) goes on the third.
    a = api.submit({"train.py": COLLECTIVE}, entry_point="train.py", nodes=2, gpus_per_node=4,
                   hyperparameters=hold).json()
    api.wait_state(a["id"], "RUNNING", timeout=30)
    wait_for_sync(lambda: all((run_dir(slurm_hub, a["id"]) / "model" / f"rank-{r}.json").exists() for r in (0, 1)),
                  message="run A's ranks to agree")
    b = api.submit({"train.py": COLLECTIVE}, entry_point="train.py", nodes=2, gpus_per_node=4).json()
    assert api.wait_state(b["id"], "QUEUED")["queue_position"] == 1
    job_a = api.run(a["id"])
    kill_scheduler(slurm_hub, api)
    # C (one GPU) is submitted to the new scheduler and starts on the third node; then it is killed again.
    c = api.submit({"train.py": WHERE}, entry_point="train.py", gpus=1, hyperparameters={"HOLD": "1"}).json()
    c_dir = run_dir(slurm_hub, c["id"])
    wait_for_sync(lambda: (c_dir / "model" / "where.json").exists(), timeout=30, message="run C to start")
    kill_scheduler(slurm_hub, api)
    again = api.wait_state(a["id"], "RUNNING", timeout=30)
    assert again["placement"] == job_a["placement"] and again["started_at"] == job_a["started_at"]
    assert api.run(b["id"])["state"] == "QUEUED"
    (run_dir(slurm_hub, a["id"]) / "src" / "release").touch()
    assert api.wait_state(a["id"], {"COMPLETE", "FAIL TRAIN", "STOPPED"}, timeout=60)["state"] == "COMPLETE"
    kill_scheduler(slurm_hub, api)  # while B is being placed or started
    done_b = api.wait_state(b["id"], {"COMPLETE", "FAIL TRAIN", "STOPPED"}, timeout=90)
    assert done_b["state"] == "COMPLETE", done_b["reason"]
    (c_dir / "src" / "release").touch()
    assert api.wait_state(c["id"], {"COMPLETE", "FAIL TRAIN", "STOPPED"}, timeout=60)["state"] == "COMPLETE"
    # None started twice: one Slurm job per run, each rank's collective done once.
    for run in (a, b, c):
        assert len(jobs_of(slurm, slurm_hub, run["id"])) == 1, run["id"]
    assert len(list((run_dir(slurm_hub, b["id"]) / "ranks").glob("rank-*.exit.json"))) == 2


def test_a_rank_that_fails_while_the_scheduler_is_down_fails_the_run_with_its_code(slurm_hub, api):
    run = api.submit({"train.py": COLLECTIVE}, entry_point="train.py", nodes=2, gpus_per_node=1,
                     hyperparameters={"FAIL_RANK": "1", "FAIL_CODE": "5", "WAIT_FOR": "go"}).json()
    folder = run_dir(slurm_hub, run["id"])
    wait_for_sync(lambda: all((folder / "model" / f"pid-{r}").exists() for r in (0, 1)), timeout=30,
                  message="both ranks to start")
    old = slurm_hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)
    (folder / "src" / "go").touch()  # rank 1 fails now, with nobody watching
    wait_for_sync(lambda: (folder / "ranks" / "rank-1.exit.json").exists(), message="rank 1 to fail")
    wait_for_sync(lambda: _pid(slurm_hub) not in (None, old) and _answers(api), timeout=15,
                  message="the new scheduler to answer")
    done = api.wait_state(run["id"], {"COMPLETE", "FAIL TRAIN", "STOPPED"}, timeout=60)
    second = done["placement"][1][0] if done["placement"][1][0] > done["placement"][0][0] \
        else done["placement"][0][0]
    assert (done["state"], done["exit_code"], done["reason"]) == ("FAIL TRAIN", 5,
                                                                  f"rank 1 on {second}: exited with code 5")


def test_cancel_after_a_restart_stops_every_rank_on_every_node(slurm_hub, api):
    run = api.submit({"train.py": COLLECTIVE}, entry_point="train.py", nodes=3, gpus_per_node=1,
                     hyperparameters={"HOLD": "1"}).json()
    folder = run_dir(slurm_hub, run["id"])
    wait_for_sync(lambda: all((folder / "model" / f"rank-{r}.json").exists() for r in range(3)), timeout=60,
                  message="all three ranks to agree")
    pids = [json.loads((folder / "model" / f"rank-{r}.json").read_text())["pid"] for r in range(3)]
    kill_scheduler(slurm_hub, api)
    api.wait_state(run["id"], "RUNNING")
    assert api("POST", f"/runs/{run['id']}/cancel").status_code == 200
    done = api.wait_state(run["id"], {"STOPPED", "FAIL TRAIN", "COMPLETE"}, timeout=60)
    assert done["state"] == "STOPPED", done["reason"]
    wait_for_sync(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), timeout=15,
                  message="every rank to be gone")


def test_an_endpoint_and_a_dataset_on_slurm_read_roots_files_through_hard_links(slurm_hub, api):
    """Slurm cannot bind read-only inputs: a dataset version and a model's artifact are hard-linked into the run's
    folder on the shared data folder instead, root's files the run reads and cannot change; a model server runs as
    a Slurm job on a node and is reached at the node's address."""
    import requests

    from .test_datasets_live import push
    from .test_endpoints_live import HANDLER, TRAIN

    # A dataset read by a run on Slurm.
    push(api, "labels", {"labels.txt": b"seven\n"})
    reader = ("import os\np = os.path.join(os.environ['EM_DATASET_TRAIN'], 'labels.txt')\nprint('read', open(p).read()"
              ".strip())\ntry:\n    open(p, 'a').write('x')\nexcept OSError as e:\n    print('refused', e.errno)\n")
    r = api.submit({"read.py": reader}, entry_point="read.py", gpus=0, datasets={"train": "labels"})
    assert r.status_code == 201, r.text
    run = api.wait_state(r.json()["id"], {"COMPLETE", "FAIL TRAIN"}, timeout=90)
    log = api("GET", f"/runs/{run['id']}/logs").text
    assert run["state"] == "COMPLETE" and "read seven" in log and "refused" in log, log

    # A model served from a Slurm job.
    r = api.submit({"train.py": TRAIN.format(handler=HANDLER)}, entry_point="train.py", gpus=0,
                   hyperparameters={"w": "2"})
    trained = api.wait_state(r.json()["id"], {"COMPLETE", "FAIL TRAIN"}, timeout=90)
    assert trained["state"] == "COMPLETE", api("GET", f"/runs/{trained['id']}/logs").text
    assert api("POST", "/models", json={"name": "on-slurm", "framework": "python",
                                        "source": {"run": trained["id"]}}).status_code == 201
    assert api("POST", "/endpoints", json={"name": "slurm-ep", "model": "on-slurm", "cpus": 1}).status_code == 201
    wait_for_sync(lambda: api("GET", "/endpoints/slurm-ep").json()["state"] == "ACTIVE", timeout=120, interval=0.5,
                  message="the endpoint on Slurm")
    [replica] = [x for x in api("GET", "/runs?kind=serving").json()["runs"] if x["state"] == "RUNNING"]
    assert replica["node"], replica
    answer = requests.post(f"{slurm_hub.url}/services/nothing/serve/slurm-ep/inference",
                           json={"instances": [[1, 2]]}, headers=api.session.headers, timeout=30)
    assert answer.status_code == 200 and answer.json() == {"predictions": [[7.0]]}, answer.text
    assert api("DELETE", "/endpoints/slurm-ep").status_code == 202
    wait_for_sync(lambda: api("GET", "/endpoints/slurm-ep").status_code == 404, timeout=60, interval=0.5,
                  message="the endpoint to go")
