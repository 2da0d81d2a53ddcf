"""Killing the scheduler service with SIGKILL loses nothing: the hub restarts it and it picks up where it was."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .helpers import wait_for_sync

pytestmark = pytest.mark.hub

HOLD = """
import os, time
open(os.path.join(os.environ["EM_MODEL_DIR"], "started"), "w").close()
print("holding", flush=True)
while not os.path.exists(os.path.join(os.environ["EM_SOURCE_DIR"], "release")):
    time.sleep(0.05)
print("released", flush=True)
"""


def test_sigkilled_service_is_restarted_and_reattaches_runs(hub, make_user):
    _, api = make_user("survivor")
    running = api.submit({"train.py": HOLD}, entry_point="train.py", gpus=4).json()
    api.wait_state(running["id"], "RUNNING")
    queued = api.submit({"train.py": "print('second run')"}, entry_point="train.py", gpus=4).json()
    assert api.wait_state(queued["id"], "QUEUED")["queue_position"] == 1
    run_dir = hub.root / "var" / "scheduler" / "runs" / str(running["id"])
    wait_for_sync(lambda: (run_dir / "model" / "started").exists(), message="the run to start")
    run_pid = int((run_dir / "pid").read_text().split()[0])

    old = hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)
    time.sleep(0.5)
    assert os.path.exists(f"/proc/{run_pid}"), "the run's process must outlive the service"

    # JupyterHub notices the dead managed service on its next poll and starts it again.
    new = wait_for_sync(lambda: (lambda p: p if p != old else None)(_pid_or_none(hub)), timeout=90,
                        interval=0.5, message="the hub to restart the scheduler")
    assert new != old
    wait_for_sync(lambda: _ok(api, running["id"]), timeout=30, message="the API to answer again")
    assert api.run(running["id"])["state"] == "RUNNING"
    after = api.run(queued["id"])
    assert after["state"] == "QUEUED"
    wait_for_sync(lambda: api.run(queued["id"])["queue_position"] == 1, timeout=10)

    (run_dir / "src" / "release").touch()
    done = api.wait_state(running["id"], "COMPLETE", timeout=30)
    assert done["exit_code"] == 0
    log = api("GET", f"/runs/{running['id']}/logs").text
    assert "holding" in log and "released" in log
    second = api.wait_state(queued["id"], "COMPLETE", timeout=30)
    assert "second run" in api("GET", f"/runs/{second['id']}/logs").text


def _pid_or_none(hub):
    try:
        return hub.scheduler_pid()
    except RuntimeError:
        return None


def _ok(api, run_id):
    try:
        return api("GET", f"/runs/{run_id}", timeout=5).status_code == 200
    except Exception:
        return False
