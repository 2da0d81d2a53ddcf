"""No crash loses, duplicates or wrongly fails a run: interrupted starts, a launcher killed mid-start, a database that refuses."""

from __future__ import annotations

import os
import signal
import sqlite3

from nothing.scheduler import store
from nothing.scheduler.db import Database
from nothing.scheduler.helper_process import HelperGone
from nothing.scheduler.states import RunState

from .conftest import build_dispatcher, running_dispatcher
from .helpers import make_archive, wait_for
from .test_dispatcher import HOLD, ended, release, values
from .test_run_limits import alive

# Records every start of the run, then holds its GPU until released.
COUNT_STARTS = """
import os, time
with open("starts", "a") as f:
    f.write(f"{os.getpid()}\\n")
while not os.path.exists("release"):
    time.sleep(0.02)
"""


def starts(run) -> list[int]:
    path = run.paths.source / "starts"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def reasons(d, run_id) -> list[str]:
    return [e.reason for e in await d.db.run(store.run_events, run_id)]


async def test_start_interrupted_before_the_process_started_is_requeued_not_failed(tmp_path):
    async with running_dispatcher(tmp_path, gpus=1) as d:
        # Too big to start: it stays queued while we stop the service.
        run = await d.submit(values(gpus=2), make_archive({"train.py": "pass"}))
        await wait_for(lambda: run.position is not None)
        # As if the service died right after committing CREATE IN PROGRESS.
        await d.db.run(store.apply_transitions, [store.Transition(
            run.id, RunState.QUEUED, RunState.CREATE_IN_PROGRESS, "starting on node-a, GPUs 0", run.submitted_at,
            dict(node="node-a", assigned_gpus=[0], gpus=1))])
    async with running_dispatcher(tmp_path, gpus=1) as d:
        row = await ended(d, d.active[run.id])
        assert row.state == RunState.COMPLETE
        assert any("the scheduler stopped before the run's process was started; requeued" in r
                   for r in await reasons(d, run.id))


async def test_launcher_killed_after_spawning_has_its_run_adopted(tmp_path):
    async with running_dispatcher(tmp_path, gpus=1) as d:
        real_spawn = d.launcher.spawn

        async def spawn_then_die(*args):
            await real_spawn(*args)  # the process starts and its pid file is written ...
            os.kill(d.launcher.pid, signal.SIGKILL)  # ... and the launcher dies before its answer is read
            d.launcher.spawn = real_spawn
            raise HelperGone("the helper process exited before it answered")

        d.launcher.spawn = spawn_then_die
        run = await d.submit(values(), make_archive({"train.py": COUNT_STARTS}))
        await wait_for(lambda: starts(run), message="the run to start")
        await wait_for(lambda: run.state == RunState.RUNNING)
        assert "re-attached" in run.reason
        waiting = await d.submit(values(), make_archive({"train.py": "pass"}))
        await wait_for(lambda: waiting.position == 1, message="the next run to wait for the GPU")
        await d.cancel(run.id, by="alice")  # cancel works on the adopted run
        assert (await ended(d, run)).state == RunState.STOPPED
        assert (await ended(d, waiting)).state == RunState.COMPLETE
        assert len(starts(run)) == 1 and not alive(starts(run)[0])


async def test_launcher_killed_before_the_pid_file_has_its_run_found_in_its_cgroup(tmp_path):
    async with running_dispatcher(tmp_path, gpus=1) as d:
        real_spawn = d.launcher.spawn

        async def spawn_lose_pid_and_die(argv, env, log_path, pid_file):
            await real_spawn(argv, env, log_path, pid_file)
            await wait_for(lambda: os.path.exists(os.path.join(os.path.dirname(log_path), "src", "starts")))
            os.unlink(pid_file)
            os.kill(d.launcher.pid, signal.SIGKILL)
            d.launcher.spawn = real_spawn
            raise HelperGone("the helper process exited before it answered")

        d.launcher.spawn = spawn_lose_pid_and_die
        run = await d.submit(values(), make_archive({"train.py": COUNT_STARTS}))
        await wait_for(lambda: run.state == RunState.RUNNING and "re-attached" in run.reason)
        release(run)
        assert (await ended(d, run)).state == RunState.COMPLETE
        assert len(starts(run)) == 1, "the run was started twice"


async def test_a_start_that_never_reached_a_process_is_requeued(tmp_path):
    async with running_dispatcher(tmp_path, gpus=1) as d:
        real_spawn = d.launcher.spawn

        async def die_before_spawning(*args):
            os.kill(d.launcher.pid, signal.SIGKILL)
            d.launcher.spawn = real_spawn
            raise HelperGone("the helper process exited before it answered")

        d.launcher.spawn = die_before_spawning
        run = await d.submit(values(), make_archive({"train.py": COUNT_STARTS}))
        await wait_for(lambda: len(starts(run)) == 1, message="the run to start on the second try")
        assert any("the launcher process died before the run's process was started; requeued" in r
                   for r in await reasons(d, run.id))
        release(run)
        assert (await ended(d, run)).state == RunState.COMPLETE


async def test_an_end_the_database_refuses_is_retried_and_the_gpus_follow_the_truth(tmp_path):
    d = build_dispatcher(tmp_path, gpus=1)
    d.db.close()
    d.db = Database(f"sqlite:///{tmp_path / 'scheduler.sqlite'}", busy_timeout=0.1)
    await d.start()
    try:
        run = await d.submit(values(), make_archive({"train.py": HOLD}))
        await wait_for(lambda: run.state == RunState.RUNNING)
        lock = sqlite3.connect(tmp_path / "scheduler.sqlite", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # every write now fails past the busy timeout
        try:
            release(run)
            await wait_for(lambda: run.state == RunState.COMPLETE, message="the run's end in memory")
            await wait_for(lambda: os.path.exists(run.paths.exit_file))
            assert run.id in d.active, "the run left the active set before its end was committed"
            assert not d.snapshot().running, "the ended run's GPU is still counted as held"
            assert run.live_fields()["state"] == "COMPLETE"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert (await ended(d, run)).state == RunState.COMPLETE
    finally:
        await d.stop()
        d.db.close()
    async with running_dispatcher(tmp_path) as again:
        row = await again.db.run(store.get_run, run.id)
        assert row.state == RunState.COMPLETE and not again.active


async def test_exit_record_is_whole_and_leaves_no_temporary_file(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        run = await d.submit(values(), make_archive({"train.py": "raise SystemExit(3)"}))
        row = await ended(d, run)
        assert row.state == RunState.FAIL_TRAIN and row.exit_code == 3
        assert run.paths.exit_file.read_text() == '{"phase": "entry", "exit_code": 3}\n'
        assert not os.path.exists(str(run.paths.exit_file) + ".tmp")
