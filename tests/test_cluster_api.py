"""/api/summary, /api/queue, /api/admin/overview, priority changes and copies, through a real hub."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from .helpers import wait_for_sync

pytestmark = pytest.mark.hub

# Holds its GPUs until a file named "go" appears in its working folder (the run's src/).
GATED = ('import os, time\nprint("started", flush=True)\n'
         'while not os.path.exists("go"):\n    time.sleep(0.1)\nprint("done")\n')


def release(hub, run_id: int) -> None:
    (hub.root / "var" / "scheduler" / "runs" / str(run_id) / "src" / "go").write_text("")


def wait_all_gpus_free(api, timeout: float = 60) -> None:
    wait_for_sync(lambda: (lambda s: s["gpus"]["free"] == s["gpus"]["total"])(api("GET", "/summary").json()),
                  timeout=timeout, message="every GPU to be free")


def test_summary_without_quotas_says_so_and_lets_idle_gpus_be_borrowed(make_user):
    _, api = make_user("sum")
    s = api("GET", "/summary").json()
    assert s["gpus"]["total"] == 4 and s["gpus"]["free"] + s["gpus"]["busy"] == 4
    assert s["guaranteed_gpus"] is None and s["quota_source"] == "none"
    assert s["borrowable_gpus"] == s["gpus"]["free"]
    assert s["usage_gpu_hours"] == 0 and s["my_gpus_in_use"] == 0 and s["my_active"] == []


def test_queue_hides_other_users_run_names_and_admin_page_data_is_for_admins(hub, make_user):
    owner, alice = make_user("qa")
    _, bob = make_user("qb")
    _, admin = make_user("qadmin", admin=True)
    wait_all_gpus_free(alice)
    big = alice.submit({"hold.py": GATED}, entry_point="hold.py", name="secret-big", gpus=4).json()["id"]
    small = alice.submit({"hold.py": GATED}, entry_point="hold.py", name="secret-small", gpus=1).json()["id"]
    try:
        alice.wait_state(big, "RUNNING")
        wait_for_sync(lambda: alice.run(small)["queue_position"] == 1, message="the small run to wait first in line")

        mine = {r["id"]: r for r in alice("GET", "/queue").json()["runs"]}
        assert mine[big]["name"] == "secret-big" and mine[small]["reason"]
        theirs = {r["id"]: r for r in bob("GET", "/queue").json()["runs"]}
        assert theirs[small]["owner"] == owner and theirs[small]["name"] is None
        assert theirs[small]["experiment"] is None and theirs[small]["reason"] == "waiting"
        assert theirs[big]["state"] == "RUNNING" and theirs[big]["mine"] is False
        assert bob("GET", "/queue", params={"mine": "1"}).json()["runs"] == []

        s = alice("GET", "/summary").json()
        assert s["my_gpus_in_use"] == 4 and s["borrowable_gpus"] == 0
        assert [e["id"] for e in s["my_active"]] == [big, small]
        assert s["my_active"][1]["queue_position"] == 1
        # No time limit on the running run: the policy estimates its end from history (or its default).
        estimated = datetime.fromisoformat(s["my_active"][1]["estimated_start"].rstrip("Z"))
        assert estimated >= datetime.utcnow() - timedelta(seconds=5)

        assert bob("GET", "/admin/overview").status_code == 403
        o = admin("GET", "/admin/overview").json()
        gpus = o["nodes"][0]["gpus"]
        assert [g["run_id"] for g in gpus] == [big] * 4 and {g["owner"] for g in gpus} == {owner}
        assert all(g["utilization"] is None for g in gpus) and o["utilization_note"].startswith("n/a")
        assert o["zombies"] is None and "NVML" in o["zombies_note"]
        assert o["zombie_runs"] == []
        queue = {r["id"]: r for r in o["queue"]}
        assert queue[small]["name"] == "secret-small" and queue[small]["queue_position"] == 1
        assert o["totals"]["running_runs"] >= 1 and o["totals"]["queued_runs"] >= 1
        assert {u["name"] for u in o["users"]} >= {owner}
        assert isinstance(o["groups"], list) and isinstance(o["totals"]["active_notebooks"], int)

        # Priority: admins only, queued runs only, kept in the database.
        assert bob("POST", f"/runs/{small}/priority", json={"priority": 5}).status_code in (403, 404)
        assert alice("POST", f"/runs/{small}/priority", json={"priority": 5}).status_code == 403
        assert admin("POST", f"/runs/{small}/priority", json={"priority": "high"}).status_code == 400
        assert admin("POST", f"/runs/{big}/priority", json={"priority": 5}).status_code == 409
        r = admin("POST", f"/runs/{small}/priority", json={"priority": 7})
        assert r.status_code == 200 and r.json()["priority"] == 7
        assert alice.run(small)["priority"] == 7
    finally:
        release(hub, big)
        alice("POST", f"/runs/{small}/cancel")
    assert alice.wait_state(big, "COMPLETE")["state"] == "COMPLETE"
    assert alice("GET", "/summary").json()["usage_gpu_hours"] > 0


def test_copy_resubmits_the_same_code_and_settings_for_the_owner_only(hub, make_user):
    _, api = make_user("copy")
    _, other = make_user("copyother")
    files = {"train.py": "import os, sys\nprint('args', sys.argv[1:], os.environ['EM_HP_LR'])\n"}
    r = api.submit(files, entry_point="train.py", name="orig", experiment="copies", args=["--x", "1"],
                   hyperparameters={"lr": "0.5"}, gpus=1, max_time="10m")
    first = r.json()["id"]
    api.wait_state(first, "COMPLETE")
    assert other("POST", f"/runs/{first}/copy").status_code == 404
    r = api("POST", f"/runs/{first}/copy")
    assert r.status_code == 201, r.text
    copy = r.json()
    assert copy["id"] != first
    same = ("name", "experiment", "entry_point", "args", "hyperparameters", "gpus", "cpus", "max_seconds", "priority")
    assert {k: copy[k] for k in same} == {k: api.run(first)[k] for k in same}
    api.wait_state(copy["id"], "COMPLETE")
    log = api("GET", f"/runs/{copy['id']}/logs").text
    assert "args ['--x', '1', '--lr', '0.5'] 0.5" in log
