"""Zombie GPUs: runs whose GPUs stay idle are flagged, warned in their log, and optionally stopped.

Utilisation comes from a scripted source standing in for NVML, which needs a GPU
(the NVML path, ``gpus.nvml_utilization``, is what runs on real hardware).
"""

from __future__ import annotations

from nothing.scheduler import store
from nothing.scheduler.states import RunState
from nothing.scheduler.zombies import ZombieMonitor, ZombieTracker

from .helpers import make_archive, wait_for

LONG = "import time\nopen('ready', 'w').close()\ntime.sleep(120)"


class ScriptedUtilization:
    """Fake NVML: every GPU reports ``level`` percent."""

    def __init__(self, level: int = 0):
        self.level = level

    async def sample(self, indices):
        return {i: self.level for i in indices}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_tracker_needs_a_full_idle_window_and_resets_on_activity():
    t = ZombieTracker(window_seconds=3600)
    assert t.observe(1, {0: 0, 1: 0}, 0).zombie_since is None
    assert t.observe(1, {0: 0, 1: 0}, 3599).zombie_since is None
    assert t.observe(1, {0: 0, 1: 0}, 3600).zombie_since == 3600
    assert t.observe(1, {0: 0, 1: 3}, 3700) is None          # one busy GPU is enough
    assert t.observe(1, {0: 0, 1: 0}, 3800).idle_since == 3800


async def start_long_run(dispatcher):
    run = await dispatcher.submit(
        dict(owner="z", name="", experiment="default", entry_point="t.py", args=[], hyperparameters={}, gpus=2,
             cpus=1, memory_bytes=0, priority=0, max_seconds=None, snapshot_bytes=0),
        make_archive({"t.py": LONG}))
    await wait_for(lambda: (run.paths.source / "ready").exists())
    return run


async def test_idle_run_is_marked_zombie_and_warned_but_not_stopped_by_default(dispatcher):
    run = await start_long_run(dispatcher)
    source, clock = ScriptedUtilization(0), Clock()
    monitor = ZombieMonitor(dispatcher, source, clock=clock, window_seconds=3600)
    await monitor.sample_once()
    assert run.zombie.zombie_since is None and run.live_fields()["zombie"]["idle_since"] == 1000.0
    clock.now += 3600
    await monitor.sample_once()
    assert run.live_fields()["zombie"] == {"idle_since": 1000.0, "zombie_since": 4600.0}
    log = open(run.paths.log).read()
    assert "GPUs 0,1 of this run have been idle (0% utilisation) for 1h00m; the run is marked zombie" in log
    clock.now += 10_000
    await monitor.sample_once()
    assert run.state == RunState.RUNNING and log.count("marked zombie") == 1
    source.level = 40
    await monitor.sample_once()
    assert run.zombie is None
    await dispatcher.cancel(run.id, by="z")


async def test_zombie_is_stopped_after_the_configured_grace(dispatcher):
    run = await start_long_run(dispatcher)
    clock = Clock()
    monitor = ZombieMonitor(dispatcher, ScriptedUtilization(0), clock=clock, window_seconds=60,
                            stop_after_seconds=300)
    await monitor.sample_once()
    clock.now += 60
    await monitor.sample_once()
    assert run.state == RunState.RUNNING
    assert "will be stopped in 5m00s unless they get busy" in open(run.paths.log).read()
    clock.now += 300
    await monitor.sample_once()
    await wait_for(lambda: run.id not in dispatcher.active, 15)
    row = await dispatcher.db.run(store.get_run, run.id)
    assert row.state == RunState.STOPPED
    assert row.reason.startswith("stopped as a zombie: its GPUs were idle for 6m00s")
