"""Quotas, borrowing and preemption in the live service, through a real hub with JupyterHub groups.

Four virtual GPUs; group ``vision`` is guaranteed 2, group ``nlp`` 2; user ``carol``
may hold at most 1 GPU.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from nothing.hub_extension.service import SERVER_TOKEN_SCOPES

from .hub import Api, Hub
from .helpers import wait_for_sync

pytestmark = pytest.mark.hub

QUOTAS = {
    "groups": {"vision": {"guaranteed_gpus": 2}, "nlp": {"guaranteed_gpus": 2}},
    "users": {"carol": {"max_gpus": 1}},
}

# Trains in steps; each step is a checkpoint. On SIGTERM it saves and exits, as a
# preemptible run should. On a restart it resumes from EM_CHECKPOINT_INPUT_DIR.
RESUMABLE = textwrap.dedent("""
    import os, signal, sys, time
    ckpt_in, ckpt_out = os.environ["EM_CHECKPOINT_INPUT_DIR"], os.environ["EM_CHECKPOINT_DIR"]
    done = sorted(os.listdir(ckpt_in))
    step = int(done[-1].split("-")[1]) if done else 0
    print(f"starting at step {step} (input checkpoints: {done})", flush=True)
    stop = False
    def on_term(*_):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    while step < 1000:
        step += 1
        open(os.path.join(ckpt_out, f"step-{step:04d}"), "w").write("weights")
        if os.path.exists(os.path.join(os.environ["EM_SOURCE_DIR"], "finish")) or stop:
            break
        time.sleep(0.05)
    print(f"stopping at step {step}", flush=True)
    sys.exit(143 if stop else 0)
""")
HOLD = "import os, time\nwhile not os.path.exists('release'):\n    time.sleep(0.05)\n"


@pytest.fixture(scope="module")
def quota_hub(tmp_path_factory):
    import shutil
    import tempfile

    # Not under pytest's folder: the users' accounts must pass through every folder above it.
    base = Path(tempfile.mkdtemp(prefix="nothing-quota-hub-"))
    root = base / "hub"
    root.mkdir()
    config = root / "scheduler_config.py"
    config.write_text(f"c.NothingScheduler.quota_config = {json.dumps(QUOTAS)}\n")
    hub = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=4",
                     "--NothingScheduler.node_cpus=16", "--NothingScheduler.kill_grace_seconds=5",
                     f"--NothingScheduler.config_file={config}"])
    hub.start()
    for name, group in (("alice", "vision"), ("bob", "nlp"), ("carol", "nlp")):
        hub.create_user(name)
        r = hub.hub_api("POST", f"/groups/{group}/users", json={"users": [name]})
        if r.status_code == 404:
            hub.hub_api("POST", f"/groups/{group}", json={"users": [name]}).raise_for_status()
        else:
            r.raise_for_status()
    yield hub
    hub.stop()
    shutil.rmtree(base, ignore_errors=True)


def api(hub, name):
    # The token a notebook server of this user has.
    return Api(hub, hub.token_for(name, scopes=SERVER_TOKEN_SCOPES))


def server_api(hub, name, server):
    """The API as the notebook server ``name/server``, started (with no GPUs of its own) so the hub lists it.

    Its token carries the scopes a server's own token has for exactly that server,
    which the scheduler asks for before it holds notebook GPUs.
    """
    assert hub.hub_api("POST", f"/users/{name}/servers/{server}").status_code in (201, 202)
    wait_for_sync(lambda: hub.hub_api("GET", f"/users/{name}").json()["servers"].get(server, {}).get("ready"),
                  timeout=60, message=f"the notebook server {name}/{server}")
    return Api(hub, hub.token_for(name, scopes=[f"access:servers!server={name}/{server}",
                                                 "access:services!service=nothing", f"read:users:groups!user={name}"]))


def stop_server(hub, name, server):
    hub.hub_api("DELETE", f"/users/{name}/servers/{server}")
    wait_for_sync(lambda: server not in hub.hub_api("GET", f"/users/{name}").json()["servers"], timeout=60,
                  message=f"the notebook server {name}/{server} to stop")


def quota_wait(client, run_id):
    """The run, once the scheduler says it waits on a quota."""
    return wait_for_sync(lambda: (lambda r: r if r["reason"].startswith("Quota") else None)(client.run(run_id)),
                         timeout=15, message=f"run {run_id} to wait on a quota")


def release(hub, run_id):
    (hub.root / "var" / "scheduler" / "runs" / str(run_id) / "src" / "release").touch()


def test_runs_are_charged_to_the_users_group(quota_hub):
    alice = api(quota_hub, "alice")
    run = alice.submit({"t.py": "pass"}, entry_point="t.py").json()
    assert run["group"] == "vision"
    r = alice.submit({"t.py": "pass"}, entry_point="t.py", group="nlp")
    assert r.status_code == 400 and "not a member of group 'nlp' (your groups: vision)" in r.json()["message"]
    alice.wait_state(run["id"], "COMPLETE")


def test_user_over_their_cap_waits_with_the_quota_reason(quota_hub):
    carol = api(quota_hub, "carol")
    first = carol.submit({"t.py": HOLD}, entry_point="t.py", gpus=1).json()["id"]
    second = carol.submit({"t.py": "pass"}, entry_point="t.py", gpus=1).json()["id"]
    try:
        carol.wait_state(first, "RUNNING")
        waiting = quota_wait(carol, second)
        assert waiting["state"] == "QUEUED"
        assert waiting["reason"] == "QuotaHardCap: user carol at the cap of 1 GPU (1 in use, this run needs 1)"
        assert carol.run(first)["state"] == "RUNNING"
        release(quota_hub, first)
        assert carol.wait_state(second, "COMPLETE")["exit_code"] == 0
    finally:
        release(quota_hub, first)


def test_borrowing_needs_a_preemptible_run(quota_hub):
    alice = api(quota_hub, "alice")
    run = alice.submit({"t.py": "pass"}, entry_point="t.py", gpus=3).json()["id"]
    try:
        waiting = quota_wait(alice, run)
        assert waiting["reason"] == ("QuotaGuarantee: group vision uses 0 of its 2 GPUs guaranteed; only "
                                     "preemptible runs may borrow idle GPUs beyond it")
    finally:
        alice("POST", f"/runs/{run}/cancel")


def test_borrowed_gpus_are_taken_back_and_the_run_resumes_from_its_checkpoint(quota_hub):
    alice, bob = api(quota_hub, "alice"), api(quota_hub, "bob")
    borrower = alice.submit({"train.py": RESUMABLE}, entry_point="train.py", gpus=4, preemptible=True).json()["id"]
    alice.wait_state(borrower, "RUNNING")
    ckpts = quota_hub.root / "var" / "scheduler" / "runs" / str(borrower) / "checkpoints"
    wait_for_sync(lambda: len(list(ckpts.iterdir())) >= 3, message="a few checkpoints")

    owner = bob.submit({"t.py": HOLD}, entry_point="t.py", gpus=2).json()["id"]
    bob.wait_state(owner, "RUNNING", timeout=30)
    requeued = alice.run(borrower)
    assert requeued["state"] in ("QUEUED", "CREATE IN PROGRESS", "RUNNING")
    events = alice("GET", f"/runs/{borrower}/events").json()["events"]
    stops = [e for e in events if e["to"] == "STOP IN PROGRESS"]
    assert stops and stops[0]["reason"].startswith("preempted: ")
    back = [e for e in events if e["from"] == "STOP IN PROGRESS"]
    assert back[0]["to"] == "QUEUED" and "requeued with its checkpoints in EM_CHECKPOINT_INPUT_DIR" in back[0]["reason"]
    assert alice.run(borrower)["state"] == "QUEUED"  # needs 4 GPUs; bob holds 2 of them

    release(quota_hub, owner)
    bob.wait_state(owner, "COMPLETE")
    alice.wait_state(borrower, "RUNNING", timeout=30)
    (quota_hub.root / "var" / "scheduler" / "runs" / str(borrower) / "src" / "finish").touch()
    done = alice.wait_state(borrower, "COMPLETE", timeout=30)
    assert done["exit_code"] == 0
    log = alice("GET", f"/runs/{borrower}/logs").text
    first_stop = int(log.split("stopping at step ")[1].split()[0])
    assert f"starting at step {first_stop} (input checkpoints: " in log, log


def test_notebook_gpus_count_against_the_users_cap(quota_hub):
    carol = server_api(quota_hub, "carol", "nb")
    try:
        r = carol("POST", "/notebooks", json={"server": "nb", "gpus": 2})
        assert r.status_code == 409
        assert r.json()["message"] == "QuotaHardCap: user carol at the cap of 1 GPUs (0 in use, the notebook needs 2)"
        assert carol("POST", "/notebooks", json={"server": "nb", "gpus": 1}).status_code == 201
        run = carol.submit({"t.py": "pass"}, entry_point="t.py", gpus=1).json()["id"]
        waiting = quota_wait(carol, run)
        assert waiting["reason"].startswith("QuotaHardCap: user carol at the cap of 1 GPU")
        assert carol("DELETE", "/notebooks", params={"server": "nb"}).status_code == 204
        assert carol.wait_state(run, "COMPLETE")["exit_code"] == 0
    finally:
        stop_server(quota_hub, "carol", "nb")


def test_kubernetes_notebook_gpus_are_counted_not_placed(quota_hub):
    carol = server_api(quota_hub, "carol", "k8s")
    try:
        r = carol("POST", "/notebooks", json={"server": "k8s", "gpus": 2, "external": True})
        assert r.status_code == 409 and r.json()["message"].startswith("QuotaHardCap: user carol at the cap of 1 GPUs")
        assert carol("POST", "/notebooks", json={"server": "k8s", "gpus": 1, "external": True}).status_code == 201
        assert carol("GET", "/gpus").json()["busy"] == 0  # Kubernetes placed it, not this node
        run = carol.submit({"t.py": "pass"}, entry_point="t.py", gpus=1).json()["id"]
        waiting = quota_wait(carol, run)
        assert waiting["reason"].startswith("QuotaHardCap: user carol at the cap of 1 GPU")
        assert carol("DELETE", "/notebooks", params={"server": "k8s"}).status_code == 204
        assert carol.wait_state(run, "COMPLETE")["exit_code"] == 0
    finally:
        stop_server(quota_hub, "carol", "k8s")


async def test_kube_spawner_holds_its_instance_types_gpus_in_the_scheduler(quota_hub, make_spawner, monkeypatch):
    """NothingKubeSpawner against the live scheduler; only the Kubernetes API calls are faked (no cluster here)."""
    from kubespawner import KubeSpawner

    from .helpers import wait_for

    calls = []

    async def fake_start(self):
        calls.append("start")
        return "http://10.0.0.1:8888"

    async def fake_stop(self, now=False):
        calls.append("stop")

    monkeypatch.setattr(KubeSpawner, "start", fake_start)
    monkeypatch.setattr(KubeSpawner, "stop", fake_stop)
    spawner = make_spawner("trainer", {"profile": "gpu-4"})
    spawner.environment = {"NOTHING_SERVICE_URL": quota_hub.service_url}
    # The live hub must list alice/trainer, and the token be that server's: a local server stands in.
    trainer = await asyncio.to_thread(server_api, quota_hub, "alice", "trainer")
    spawner.api_token = trainer.session.headers["Authorization"].split()[1]
    await spawner.load_user_options()
    assert spawner.requested_gpus() == 4
    alice = api(quota_hub, "alice")

    assert await spawner.start() == "http://10.0.0.1:8888"
    holds = alice("GET", "/notebooks").json()["notebooks"]
    assert [(h["server"], len(h["gpus"]), h["group"]) for h in holds] == [("trainer", 4, "vision")]
    assert "gpu_release_token" in spawner.get_state()
    # vision's guarantee of 2 is used up by the notebook: a non-preemptible run must wait.
    run = alice.submit({"t.py": "pass"}, entry_point="t.py", gpus=1).json()["id"]
    await wait_for(lambda: alice.run(run)["reason"].startswith("QuotaGuarantee: group vision uses 4"), 15)

    await spawner.stop()
    assert calls == ["start", "stop"]
    assert alice("GET", "/notebooks").json()["notebooks"] == []
    await wait_for(lambda: alice.run(run)["state"] == "COMPLETE", 30)
    await asyncio.to_thread(stop_server, quota_hub, "alice", "trainer")
