"""The live scheduler with real processes and a real SQLite database: queueing, run environment, endings."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading

import pytest

from nothing.scheduler import store
from nothing.scheduler.dispatcher import RunNotActive
from nothing.scheduler.states import RunState

from .conftest import build_dispatcher, running_dispatcher
from .helpers import make_archive, wait_for

# Writes the environment the run saw, then holds its GPUs until a file appears.
HOLD = """
import json, os, sys, time
json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
           if k.startswith(("EM_", "CUDA_", "NOTHING_"))}, "all_env": dict(os.environ)}, open("seen.json", "w"))
while not os.path.exists(os.path.join(os.environ["EM_SOURCE_DIR"], "release")):
    time.sleep(0.02)
"""


def values(**kw):
    base = dict(owner="alice", name="", experiment="default", entry_point="train.py", args=[], hyperparameters={},
                gpus=1, cpus=1, memory_bytes=0, priority=0, max_seconds=None, snapshot_bytes=0)
    base.update(kw)
    return base


async def submit(dispatcher, code: str, **kw):
    return await dispatcher.submit(values(**kw), make_archive({"train.py": code}))


async def row(dispatcher, run_id):
    return await dispatcher.db.run(store.get_run, run_id)


async def ended(dispatcher, run, timeout=20):
    await wait_for(lambda: run.id not in dispatcher.active, timeout, message=f"run {run.id} to end")
    return await row(dispatcher, run.id)


def release(run):
    (run.paths.source / "release").touch()


def seen(run):
    return json.loads((run.paths.source / "seen.json").read_text())


def has_seen(run) -> bool:
    """The run has written its whole seen.json (it may exist before its last byte is written)."""
    try:
        seen(run)
    except (FileNotFoundError, ValueError):
        return False
    return True


async def test_third_run_waits_with_position_until_gpus_free(dispatcher):
    runs = [await submit(dispatcher, HOLD, gpus=2) for _ in range(3)]
    await wait_for(lambda: all(has_seen(r) for r in runs[:2]), message="two runs running")
    first, second, third = runs
    assert first.state == second.state == RunState.RUNNING
    assert third.state == RunState.QUEUED
    assert third.position == 1
    assert "needs 2 GPUs" in third.reason and "0 free" in third.reason
    devices = [set(seen(r)["env"]["CUDA_VISIBLE_DEVICES"].split(",")) for r in (first, second)]
    assert all(len(d) == 2 for d in devices) and not devices[0] & devices[1]

    release(first)
    assert (await ended(dispatcher, first)).state == RunState.COMPLETE
    await wait_for(lambda: has_seen(third), message="third run to start")
    third_devices = set(seen(third)["env"]["CUDA_VISIBLE_DEVICES"].split(","))
    assert third_devices == devices[0] and not third_devices & devices[1]
    release(second), release(third)
    assert (await ended(dispatcher, second)).state == (await ended(dispatcher, third)).state == RunState.COMPLETE


async def test_higher_priority_starts_first_and_order_is_kept(dispatcher):
    blocker = await submit(dispatcher, HOLD, gpus=4)
    await wait_for(lambda: blocker.state == RunState.RUNNING)
    # Each needs the whole node: they start one after the other, in priority order.
    low = await submit(dispatcher, "pass", gpus=4, priority=-5)
    normal = await submit(dispatcher, "pass", gpus=4)
    await wait_for(lambda: low.position is not None and normal.position is not None)
    assert (normal.position, low.position) == (1, 2)
    assert low.reason.startswith("Priority: waiting for run")
    release(blocker)
    first, second = await ended(dispatcher, normal), await ended(dispatcher, low)
    assert first.ended_at <= second.started_at


async def test_run_environment_follows_the_seed(dispatcher, monkeypatch):
    # A secret of the scheduler's own environment (its hub token) must not reach the run.
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "the-schedulers-secret")
    monkeypatch.setenv("NOTHING_SCHEDULER_SECRET", "also-secret")
    dispatcher.executor._base_environment = None
    run = await submit(dispatcher, HOLD, gpus=1, experiment="resnet", hyperparameters={"lr": "0.01", "batch_size": "32"},
                       args=["--flag"])
    await wait_for(lambda: has_seen(run))
    info = seen(run)
    env = info["env"]
    root = run.paths.root
    assert info["argv"] == ["--flag", "--lr", "0.01", "--batch_size", "32"]
    assert env["EM_SOURCE_DIR"] == str(root / "src")
    assert env["EM_ENTRY_POINT"] == "train.py"
    assert env["EM_MODEL_DIR"] == str(root / "model")
    assert env["EM_CHECKPOINT_DIR"] == str(root / "checkpoints")
    assert env["EM_CHECKPOINT_INPUT_DIR"] == str(root / "checkpoint-input")
    assert env["EM_TENSORBOARD_LOG_DIR"] == str(root / "tensorboard")
    assert json.loads(env["EM_HPS"]) == {"lr": "0.01", "batch_size": "32"}
    assert env["EM_HP_LR"] == "0.01" and env["EM_HP_BATCH_SIZE"] == "32"
    assert env["NOTHING_EXPERIMENT"] == "resnet"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert "the-schedulers-secret" not in json.dumps(info["all_env"])
    assert "NOTHING_SCHEDULER_SECRET" not in info["all_env"] and info["all_env"]["HOME"] == str(root)
    release(run)
    await ended(dispatcher, run)


async def test_stdout_and_stderr_go_to_the_log(dispatcher):
    run = await submit(dispatcher, "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)")
    done = await ended(dispatcher, run)
    assert done.state == RunState.COMPLETE and done.exit_code == 0
    log = open(done.log_path).read()
    assert "to stdout" in log and "to stderr" in log


async def test_nonzero_exit_ends_fail_train_with_its_code(dispatcher):
    run = await submit(dispatcher, "raise SystemExit(3)")
    done = await ended(dispatcher, run)
    assert (done.state, done.exit_code, done.reason) == (RunState.FAIL_TRAIN, 3, "exited with code 3")


async def test_cancel_running_run_sends_sigterm_to_the_whole_group(dispatcher):
    code = """
import signal, subprocess, sys, time, os
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open("child.pid", "w").write(str(child.pid))
def bye(*_):
    open("got-sigterm", "w").write("yes"); sys.exit(143)
signal.signal(signal.SIGTERM, bye)
open("ready", "w").write("")
time.sleep(60)
"""
    run = await submit(dispatcher, code, gpus=1)
    await wait_for(lambda: (run.paths.source / "ready").exists())
    await dispatcher.cancel(run.id, by="alice")
    done = await ended(dispatcher, run)
    assert done.state == RunState.STOPPED
    assert done.reason.startswith("cancelled by alice")
    assert (run.paths.source / "got-sigterm").exists()
    child = int((run.paths.source / "child.pid").read_text())
    await wait_for(lambda: not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z",
                   message="the run's child process to be gone")


async def test_cancel_escalates_to_sigkill_after_grace(dispatcher):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen('ready','w').close()\ntime.sleep(60)"
    run = await submit(dispatcher, code)
    await wait_for(lambda: (run.paths.source / "ready").exists())
    await dispatcher.cancel(run.id, by="alice")
    done = await ended(dispatcher, run, timeout=10)
    assert done.state == RunState.STOPPED
    assert "SIGKILL" in done.reason


async def test_cancel_queued_run_stops_it_at_once(dispatcher):
    blocker = await submit(dispatcher, HOLD, gpus=4)
    queued = await submit(dispatcher, "pass", gpus=4)
    await wait_for(lambda: queued.position == 1)
    await dispatcher.cancel(queued.id, by="bob")
    done = await row(dispatcher, queued.id)
    assert (done.state, done.reason) == (RunState.STOPPED, "cancelled by bob while queued")
    assert done.started_at is None
    with pytest.raises(RunNotActive):
        await dispatcher.cancel(queued.id, by="bob")
    release(blocker)
    await ended(dispatcher, blocker)


async def test_max_time_stops_the_run_as_fail_train(dispatcher):
    run = await submit(dispatcher, "import time\ntime.sleep(60)", max_seconds=1)
    done = await ended(dispatcher, run, timeout=15)
    assert done.state == RunState.FAIL_TRAIN
    assert done.reason.startswith("exceeded its maximum run time of 1s")
    assert (done.ended_at - done.started_at).total_seconds() < 5


async def test_failing_requirements_install_fails_the_run(dispatcher):
    run = await dispatcher.submit(values(), make_archive({
        "train.py": "open('entry-ran', 'w').close()",
        "requirements.txt": "--no-index\nthis-package-does-not-exist-nothingai==1.0\n",
    }))
    done = await ended(dispatcher, run, timeout=60)
    assert done.state == RunState.FAIL_TRAIN
    assert done.reason.startswith("installing requirements.txt failed")
    assert not (run.paths.source / "entry-ran").exists()
    assert "requirements.txt install failed" in open(done.log_path).read()


async def test_every_transition_is_recorded_with_a_reason(dispatcher):
    run = await submit(dispatcher, "pass")
    await ended(dispatcher, run)
    events = await dispatcher.db.run(store.run_events, run.id)
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, RunState.CREATE_REQUESTED),
        (RunState.CREATE_REQUESTED, RunState.QUEUED),
        (RunState.QUEUED, RunState.CREATE_IN_PROGRESS),
        (RunState.CREATE_IN_PROGRESS, RunState.RUNNING),
        (RunState.RUNNING, RunState.COMPLETE),
    ]
    assert all(e.reason for e in events)


async def test_restart_reattaches_running_runs_and_keeps_queued_ones(tmp_path):
    first = build_dispatcher(tmp_path, gpus=2)
    await first.start()
    running = await submit(first, HOLD, gpus=2)
    queued = await submit(first, "print('second')", gpus=2)
    await wait_for(lambda: has_seen(running))
    await first.stop()  # the service goes away; the run's process does not
    first.db.close()
    assert os.path.exists(f"/proc/{running.process.pid}")

    second = build_dispatcher(tmp_path, gpus=2)
    await second.start()
    try:
        assert second.active[running.id].state == RunState.RUNNING
        assert second.active[queued.id].state == RunState.QUEUED
        await wait_for(lambda: second.active[queued.id].position == 1)
        reattached, waiting = second.active[running.id], second.active[queued.id]
        release(running)
        assert (await ended(second, reattached)).state == RunState.COMPLETE
        done = await ended(second, waiting)
        assert done.state == RunState.COMPLETE and "second" in open(done.log_path).read()
    finally:
        await second.stop()
        second.db.close()


async def test_run_whose_process_vanished_during_downtime_fails_with_a_reason(tmp_path):
    first = build_dispatcher(tmp_path)
    await first.start()
    run = await submit(first, HOLD)
    await wait_for(lambda: has_seen(run))
    await first.stop()
    first.db.close()
    os.killpg(run.process.pid, signal.SIGKILL)
    await wait_for(lambda: not os.path.exists(f"/proc/{run.process.pid}")
                   or open(f"/proc/{run.process.pid}/stat").read().split()[2] == "Z")

    async with running_dispatcher(tmp_path) as second:
        done = await ended(second, second.active[run.id])
        assert done.state == RunState.FAIL_TRAIN
        assert "scheduler was not watching" in done.reason


async def test_run_ids_continue_after_a_restart_and_a_stale_folder_is_replaced(tmp_path):
    async with running_dispatcher(tmp_path) as first_life:
        first = await submit(first_life, "pass")
        await ended(first_life, first)
    # A folder a submission left behind without committing its row, at the next id.
    stale = tmp_path / "runs" / str(first.id + 1)
    stale.mkdir()
    (stale / "someone-elses-file").write_text("x")

    async with running_dispatcher(tmp_path) as second_life:
        second = await submit(second_life, "pass")
        assert second.id == first.id + 1
        assert not (second.paths.root / "someone-elses-file").exists()
        assert (await ended(second_life, second)).state == RunState.COMPLETE


async def test_a_queued_run_keeps_its_code_packed_until_its_first_start(dispatcher):
    holder = await submit(dispatcher, HOLD, gpus=4)
    await wait_for(lambda: has_seen(holder), message="the holder running")
    waiting = await submit(dispatcher, "print('unpacked at start')", gpus=1)
    assert waiting.state == RunState.QUEUED
    assert waiting.paths.snapshot.is_file() and not waiting.paths.source.exists()
    release(holder)
    assert (await ended(dispatcher, waiting)).state == RunState.COMPLETE
    assert (waiting.paths.source / "train.py").is_file() and not waiting.paths.snapshot.exists()
    assert "unpacked at start" in waiting.paths.log.read_text()


async def test_a_runs_end_shows_whole_in_its_live_fields_before_the_commit(tmp_path):
    """Between ``_end`` and the commit the row still says RUNNING: the API must not answer COMPLETE without the
    exit code and end time the commit brings (a restart test saw exactly that: COMPLETE, exit_code None)."""
    from datetime import datetime

    from nothing.scheduler.dispatcher import ActiveRun
    from nothing.scheduler.states import RunState

    from .conftest import build_dispatcher

    run = ActiveRun(id=1, owner="u", entry_point="t.py", args=(), hyperparameters={}, experiment="default",
                    group="", preemptible=False, gpus=0, cpus=1, memory_bytes=0, priority=0, max_seconds=None,
                    submitted_at=datetime(2026, 12, 1), state=RunState.RUNNING, reason="process started",
                    run_dir="/nonexistent")
    assert run.live_fields()["state"] == "RUNNING" and "exit_code" not in run.live_fields()
    d = build_dispatcher(tmp_path)
    d._end(run, RunState.COMPLETE, "exited with code 0", datetime(2026, 12, 1, 10), exit_code=0)
    live = run.live_fields()
    assert (live["state"], live["exit_code"], live["ended_at"]) == ("COMPLETE", 0, "2026-12-01T10:00:00Z")
    d.db.close()


class HeldPolicy:
    """The dispatcher's policy, held inside its worker thread until ``go`` once it has decided a start."""

    def __init__(self, policy):
        self.policy = policy
        self.deciding, self.go = threading.Event(), threading.Event()

    def decide(self, snapshot):
        decisions = self.policy.decide(snapshot)
        if decisions.starts:
            self.deciding.set()
            self.go.wait(10)
        return decisions


async def test_a_submission_is_answered_while_a_pass_is_still_deciding(dispatcher):
    dispatcher.decide_in_thread_above = 0  # every pass asks the policy in a worker thread, as for long queues
    dispatcher.policy = held = HeldPolicy(dispatcher.policy)
    blocker = await submit(dispatcher, HOLD, gpus=4)
    await wait_for(held.deciding.is_set, message="the pass to be deciding")
    queued = await asyncio.wait_for(submit(dispatcher, "pass", gpus=1), 10)
    assert queued.state == RunState.QUEUED and blocker.state == RunState.QUEUED
    held.go.set()
    await wait_for(lambda: has_seen(blocker), message="the blocker to start")
    release(blocker)
    assert (await ended(dispatcher, blocker)).state == (await ended(dispatcher, queued)).state == RunState.COMPLETE


async def test_a_start_decided_off_the_loop_is_not_made_on_gpus_a_notebook_took_meanwhile(dispatcher):
    dispatcher.decide_in_thread_above = 0
    dispatcher.policy = held = HeldPolicy(dispatcher.policy)
    run = await submit(dispatcher, HOLD, gpus=4)
    await wait_for(held.deciding.is_set, message="the pass to be deciding")
    # The policy gave the run all four GPUs; meanwhile a notebook takes one of them.
    hold = await dispatcher.hold_notebook_gpus("bob", "", "", 1)
    held.go.set()
    await wait_for(lambda: run.position is not None, message="the run to wait for the next pass's GPUs")
    assert run.state == RunState.QUEUED and run.node is None
    assert dispatcher.gpu_holders()[("node-a", hold.gpus[0])] is hold
    assert RunState.CREATE_IN_PROGRESS not in [e.to_state for e in await dispatcher.db.run(store.run_events, run.id)]
    await dispatcher.release_notebook_gpus("bob", "")
    await wait_for(lambda: has_seen(run), message="the run to start once the notebook gave its GPU back")
    assert set(seen(run)["env"]["CUDA_VISIBLE_DEVICES"].split(",")) == {"0", "1", "2", "3"}
    release(run)
    assert (await ended(dispatcher, run)).state == RunState.COMPLETE
