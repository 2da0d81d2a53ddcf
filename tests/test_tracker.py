"""The tracker on a real dispatcher: storage kept current as runs write, the quota stop, and no point twice,
even when its helper process is killed while it stores; the checkpoint index of ended runs."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from nothing.scheduler import store
from nothing.scheduler import tracking_store as ts
from nothing.scheduler.checkpoints import CheckpointIndex
from nothing.scheduler.quotas import Quota, Quotas
from nothing.scheduler.states import RunState
from nothing.scheduler.tracker import Progress, ReadJob, Tracker, collect

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


# The store's condition on the stored offsets is one SQL statement on SQLite and a Core update elsewhere: both run.
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def database_url(request, database: str) -> str | None:
    return request.getfixturevalue("postgres_url") if database == "postgresql" else None


@pytest.mark.parametrize("database", DATABASES)
async def test_a_read_done_twice_is_stored_once(tmp_path, request, database):
    async with running_dispatcher(tmp_path, db_url=database_url(request, database)) as d:
        run = await submit(d, "for i in range(50):\n    print(f'step={i} loss={i}')\n", gpus=0)
        await ended(d, run)
        job = ReadJob(run.id, str(run.paths.log), str(run.paths.report_file), None,
                      Progress(0, 0, 0, {}, {}, set(), {}), True, 1024**2, 10**6)
        first = await asyncio.to_thread(collect, d.db.url, job)
        again = await asyncio.to_thread(collect, d.db.url, job)  # as if the answer to the first had been lost
        assert first.progress.stored == 50 and again.progress is None
        points = await d.db.run(ts.metric_series, run.id, ["loss"], 1000)
        assert [p.step for p in points] == list(range(50))


FLOOD = """
import sys, time
for burst in range(60):
    sys.stdout.write("".join(f"step={1000 * burst + i} loss={i}\\n" for i in range(1000)))
    sys.stdout.flush()
    time.sleep(0.02)
"""


@pytest.mark.parametrize("database", DATABASES)
async def test_the_trackers_helper_killed_while_it_stores_loses_and_duplicates_no_point(tmp_path, request, database):
    async with running_dispatcher(tmp_path, db_url=database_url(request, database)) as d:
        tracker = Tracker(d.db, d, interval=0.01, read_limit=16 * 1024)  # many small reads, each one transaction
        await tracker.start()
        try:
            run = await submit(d, FLOOD, gpus=0)
            await wait_for(lambda: run.id in tracker.followed, message="the run to be followed")
            killed: set[int] = set()
            deadline = time.monotonic() + 30
            while len(killed) < 8 and time.monotonic() < deadline:
                for pid in {h.pid for h in tracker.helpers} - killed - {None}:
                    os.kill(pid, signal.SIGKILL)  # whatever it was doing: reading, parsing, inserting, committing
                    killed.add(pid)
                await asyncio.sleep(0.1)
            assert len(killed) >= 8
            await wait_for(lambda: run.id not in d.active and run.id not in tracker._pending_ends, timeout=60,
                           message="the run's last read")
            points = await d.db.run(ts.metric_series, run.id, ["loss"], 100_000)
            assert [p.step for p in points] == list(range(60_000))
            row = await d.db.run(store.get_run, run.id)
            assert row.metric_points == 60_000 and row.log_read_offset == run.paths.log.stat().st_size
        finally:
            await tracker.stop()


def test_an_ended_runs_checkpoint_listing_is_kept_until_its_folder_changes(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for i in range(3):
        (folder / f"epoch-{i}.pt").write_bytes(b"x" * (i + 1))
    old = time.time() - 7200
    os.utime(folder, (old, old))
    index = CheckpointIndex()
    index.settle_seconds = 3600  # a change made by this test is always recent, however slow the machine
    first = index.listing(str(folder), settled=True)
    assert [c["name"] for c in first.entries] == ["epoch-0.pt", "epoch-1.pt", "epoch-2.pt"] and first.total_bytes == 6
    assert index.listing(str(folder), settled=True) is first  # one stat, no walk
    assert index.listing(str(folder), settled=False) is not first  # a running run's folder is always read
    (folder / "epoch-3.pt").write_bytes(b"x" * 4)
    changed = index.listing(str(folder), settled=True)
    assert len(changed.entries) == 4 and changed.total_bytes == 10
    # Changed within settle_seconds: read again every time, since a change in the same tick would not show.
    assert index.listing(str(folder), settled=True) is not changed
    (folder / "epoch-0.pt").unlink()
    os.utime(folder, (old, old + 1))
    assert index.listing(str(folder), settled=True).total_bytes == 9
    # The service's own change: what is listed meanwhile is not kept, even if the folder's times would not show it.
    with index.changing(str(folder)):
        os.utime(folder, (old, old + 2))
        during = index.listing(str(folder), settled=True)
        (folder / "epoch-1.pt").unlink()
        os.utime(folder, (old, old + 2))
    after = index.listing(str(folder), settled=True)
    assert after is not during and after.total_bytes == 7
    assert index.listing(str(folder), settled=True) is after


def test_the_checkpoint_index_keeps_at_most_its_bound_of_entries(tmp_path):
    index = CheckpointIndex(max_entries=5)
    old = time.time() - 60
    folders = []
    for n in range(3):
        folder = tmp_path / f"run-{n}"
        folder.mkdir()
        for i in range(2):
            (folder / f"c{i}").write_bytes(b"x")
        os.utime(folder, (old, old))
        folders.append(str(folder))
    kept = [index.listing(f, settled=True) for f in folders]
    assert index.listing(folders[2], settled=True) is kept[2]
    assert index.listing(folders[0], settled=True) is not kept[0]  # the least recently listed left first
