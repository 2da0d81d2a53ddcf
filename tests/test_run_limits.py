"""Runs in cgroups: --memory, --cpus and a process limit hold, and stopping a run ends every process it made."""

from __future__ import annotations

import os

import pytest

from nothing.scheduler import store
from nothing.scheduler.cgroups import Cgroups
from nothing.scheduler.states import RunState

from .conftest import running_dispatcher
from .helpers import make_archive, wait_for
from .test_dispatcher import ended, values



def test_this_machine_gives_runs_cgroups():
    """The platform's own machines (and CI) have a writable hierarchy; the tests below need it."""
    assert os.geteuid() == 0
    assert Cgroups().available, Cgroups().why

# Leaves behind everything a cancel used to miss: a child that ignores SIGTERM,
# a daemon in a session of its own, and (with FORK=1) a bounded fork bomb.
STUBBORN = """
import os, signal, subprocess, sys, time
pids = []
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
daemon = subprocess.Popen(["setsid", "sleep", "600"])
pids += [child.pid, daemon.pid]
if os.environ.get("EM_HP_FORK"):
    bomb = subprocess.Popen(["/bin/sh", "-c", "f() { f & f & wait; }; f"])
    pids.append(bomb.pid)
open("pids", "w").write(" ".join(map(str, pids)))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def started_pids(run) -> list[int]:
    path = run.paths.source / "pids"
    await wait_for(lambda: path.exists() and path.read_text(), message="the run to start its children")
    return [int(p) for p in path.read_text().split()]


async def events(dispatcher, run_id) -> list[str]:
    return [e.reason for e in await dispatcher.db.run(store.run_events, run_id)]


async def test_run_over_its_memory_ends_fail_train_with_out_of_memory(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        run = await d.submit(values(memory_bytes=64 * 1024**2),
                             make_archive({"train.py": "x = bytearray(512 * 1024**2)\nprint('survived')"}))
        row = await ended(d, run)
    assert row.state == RunState.FAIL_TRAIN
    assert row.reason == "killed: out of memory (limit 64 MiB)"


async def test_run_within_its_memory_completes(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        run = await d.submit(values(memory_bytes=256 * 1024**2),
                             make_archive({"train.py": "x = bytearray(32 * 1024**2)"}))
        assert (await ended(d, run)).state == RunState.COMPLETE


@pytest.mark.parametrize("fork_bomb", [False, True], ids=["stubborn-children", "fork-bomb"])
async def test_cancel_ends_every_process_of_the_run_before_its_gpus_are_free(tmp_path, fork_bomb):
    async with running_dispatcher(tmp_path, gpus=1, kill_grace=0.5) as d:
        hps = {"FORK": "1"} if fork_bomb else {}
        run = await d.submit(values(hyperparameters=hps), make_archive({"train.py": STUBBORN}))
        pids = await started_pids(run)
        waiting = await d.submit(values(), make_archive({"train.py": "pass"}))
        await d.cancel(run.id, by="alice")
        row = await ended(d, run)
        assert row.state == RunState.STOPPED
        assert not [p for p in pids if alive(p)], "a process of the cancelled run survived"
        # The next run got the GPU only after the whole cgroup was empty.
        assert (await ended(d, waiting)).state == RunState.COMPLETE
        assert not d.executor._job(run.id).pids()


async def test_max_time_ends_every_process_of_the_run(tmp_path):
    async with running_dispatcher(tmp_path, kill_grace=0.5) as d:
        run = await d.submit(values(max_seconds=1), make_archive({"train.py": STUBBORN}))
        pids = await started_pids(run)
        row = await ended(d, run)
    assert row.state == RunState.FAIL_TRAIN and "maximum run time" in row.reason
    assert not [p for p in pids if alive(p)]


async def test_processes_left_by_a_finished_entry_point_are_killed(tmp_path):
    code = "import subprocess\nopen('pid', 'w').write(str(subprocess.Popen(['setsid', 'sleep', '600']).pid))"
    async with running_dispatcher(tmp_path) as d:
        run = await d.submit(values(), make_archive({"train.py": code}))
        row = await ended(d, run)
        daemon = int((run.paths.source / "pid").read_text())
    assert row.state == RunState.COMPLETE
    assert not alive(daemon)


async def test_fork_bomb_is_held_by_the_process_limit(tmp_path):
    code = """
import os, subprocess
ok = failed = 0
procs = []
for _ in range(200):
    try:
        procs.append(subprocess.Popen(["sleep", "30"]))
        ok += 1
    except OSError:
        failed += 1
open("counts", "w").write(f"{ok} {failed}")
"""
    async with running_dispatcher(tmp_path) as d:
        d.executor.pids_limit = 50
        run = await d.submit(values(), make_archive({"train.py": code}))
        await ended(d, run)
        ok, failed = map(int, (run.paths.source / "counts").read_text().split())
    assert ok < 50 and failed > 0


async def test_cpus_limit_is_written_to_the_run_cgroup(tmp_path):
    code = "import time\nwhile True: time.sleep(1)"
    async with running_dispatcher(tmp_path) as d:
        run = await d.submit(values(cpus=2), make_archive({"train.py": code}))
        await wait_for(lambda: run.state == RunState.RUNNING)
        cg = d.executor._job(run.id)
        if cg.version == 1:
            quota = int(open(os.path.join(cg.dirs["cpu"], "cpu.cfs_quota_us")).read())
            period = int(open(os.path.join(cg.dirs["cpu"], "cpu.cfs_period_us")).read())
        else:
            quota, period = map(int, open(os.path.join(cg.dirs["unified"], "cpu.max")).read().split())
        assert quota == 2 * period
        await wait_for(lambda: run.process.pid in cg.pids(), message="the run's shim to join its cgroup")
        await d.cancel(run.id, by="alice")
        await ended(d, run)


async def test_without_cgroups_the_run_events_say_processes_are_tracked_by_process_group(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        d.executor.use_cgroups = False
        d.executor._cgroups = None
        run = await d.submit(values(), make_archive({"train.py": "pass"}))
        await ended(d, run)
        reasons = await events(d, run.id)
    assert any("no cgroup (cgroups are turned off" in r and "process group only" in r for r in reasons)


def test_a_partly_made_cgroup_is_killed_and_removed():
    """A start killed while the controllers' folders were being made leaves some of them; they are cleaned up."""
    import subprocess

    cgroups = Cgroups()
    job = cgroups.job("test-partial-cgroup")
    partial = dict(list(job.dirs.items())[:-1])  # every controller but the last one (v1), or nothing (v2)
    for d in partial.values():
        os.makedirs(d, exist_ok=True)
    procs = os.path.join(next(iter(partial.values()), job.dirs[next(iter(job.dirs))]), "cgroup.procs")
    os.makedirs(os.path.dirname(procs), exist_ok=True)
    child = subprocess.Popen(["/bin/sh", "-c", f"echo 0 > {procs}; exec sleep 600"])
    try:
        for _ in range(100):
            if child.pid in job.pids():
                break
            import time
            time.sleep(0.02)
        assert child.pid in job.pids()
        assert job.kill()
        assert child.wait(5) == -9
        job.remove()
        assert not any(os.path.isdir(d) for d in job.dirs.values())
        # And a fresh cgroup of that name can be made again.
        cgroups.create("test-partial-cgroup", cgroups_limits()).remove()
    finally:
        child.kill()


def cgroups_limits():
    from nothing.scheduler.cgroups import Limits

    return Limits(memory_bytes=64 * 1024**2, pids=10)
