"""The tracker on a real dispatcher: storage kept current as runs write, the quota stop, and no point twice."""

from __future__ import annotations

from nothing.scheduler import store
from nothing.scheduler import tracking_store as ts
from nothing.scheduler.quotas import Quota, Quotas
from nothing.scheduler.states import RunState
from nothing.scheduler.tracker import Tracker

from .conftest import running_dispatcher
from .helpers import wait_for
from .test_dispatcher import ended, submit

WRITES_THEN_WAITS = """
import os, time
open(os.path.join(os.environ["EM_CHECKPOINT_DIR"], "big.pt"), "wb").write(os.urandom(2_000_000))
print("loss=1", flush=True)
while not os.path.exists("release"):
    time.sleep(0.05)
"""


async def test_a_run_over_the_storage_quota_is_stopped_when_configured_and_keeps_its_files(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        d.quotas = Quotas(users={"alice": Quota(storage_bytes=1_000_000)})
        tracker = Tracker(d.db, d, interval=0.05, disk_interval=0.05, stop_over_storage_quota=True)
        await tracker.start()
        try:
            run = await submit(d, WRITES_THEN_WAITS, gpus=0)
            row = await ended(d, run)
            assert row.state == RunState.STOPPED
            assert row.reason.startswith("storage quota exceeded: you use 2.0 MB of your 1.0 MB")
            assert (run.paths.checkpoints / "big.pt").stat().st_size == 2_000_000  # nothing removed
            assert "this run is stopped" in run.paths.log.read_text()
            assert tracker.usage("alice", "")["user"]["used_bytes"] >= 2_000_000
            assert tracker.over_quota("alice", "") is not None and tracker.over_quota("bob", "") is None
        finally:
            await tracker.stop()


async def test_a_restart_between_reading_and_storing_never_stores_a_point_twice(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        run = await submit(d, "for i in range(50):\n    print(f'step={i} loss={i}')\n", gpus=0)
        await ended(d, run)
        first = Tracker(d.db, d, interval=0.05)
        await first.start()
        await wait_for(lambda: not first._pending_ends, message="the ended run to be read")
        await first.tick()
        await first.stop()
        # The next life of the service reads the same run again from its stored offsets.
        second = Tracker(d.db, d, interval=0.05)
        await second.start()
        await second.tick()
        await second.stop()
        points = await d.db.run(ts.metric_series, run.id, ["loss"], 1000)
        assert [p.step for p in points] == list(range(50))
        row = await d.db.run(store.get_run, run.id)
        assert row.metric_points == 50 and row.log_read_offset == run.paths.log.stat().st_size
