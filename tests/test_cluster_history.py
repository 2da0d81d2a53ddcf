"""The cluster's history (``cluster_history``): the sampler on a real dispatcher, pruning, downsampling, the API.

The sampler runs against a dispatcher with real processes and a real database: what it stores
is what holds GPUs (runs and notebooks) and what waits.  Downsampling is checked on SQLite and
PostgreSQL, whose integer division and averages (``Decimal``) differ.  The API is checked through
the session's hub, whose scheduler samples every second (``SCHEDULER_TEST_ARGS``).
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import delete, insert, select

from nothing.scheduler.cluster_history import (
    MAX_POINTS, ClusterHistory, ClusterRow, NodeRow, Sample, bucket_seconds, read_history, store_sample, take_sample,
)
from nothing.scheduler.db import Database
from nothing.scheduler.orm import ClusterSample, NodeSample
from nothing.scheduler.states import RunState

from .conftest import running_dispatcher
from .helpers import wait_for, wait_for_sync
from .test_dispatcher import HOLD, has_seen, release, submit


class FakeUtilization:
    """Stands in for NVML (no GPU here): fixed percentages per GPU index, and the indices it was asked for."""

    def __init__(self, percent: dict[int, int]):
        self.percent = percent
        self.asked: list[list[int]] = []

    async def sample(self, indices: list[int]) -> dict[int, int] | None:
        self.asked.append(indices)
        return {i: self.percent[i] for i in indices}


def rows(session, model) -> list:
    return list(session.scalars(select(model).order_by(model.id)))


async def test_every_interval_stores_a_row_per_node_and_one_for_the_queue(dispatcher):
    """A run holds 2 GPUs and a notebook 1; two runs wait behind them (strict FIFO): 3 of 4 held, 2 waiting."""
    holder = await submit(dispatcher, HOLD, gpus=2)
    await wait_for(lambda: has_seen(holder), message="the first run to start")
    await dispatcher.hold_notebook_gpus("bob", "", "", 1)
    waiting = [await submit(dispatcher, HOLD, gpus=2), await submit(dispatcher, HOLD, gpus=1)]
    await wait_for(lambda: all(r.state == RunState.QUEUED and r.position for r in waiting),
                   message="two runs to wait")
    times: list[float] = []

    def clock() -> float:
        times.append(time.time())
        return times[-1]

    source = FakeUtilization({0: 10, 1: 30, 2: 50, 3: 70})
    history = ClusterHistory(dispatcher, source, "node-a", clock=clock, interval=0.2)
    history.start()
    try:
        await wait_for(lambda: history.samples >= 4, timeout=10, message="four samples")
    finally:
        await history.stop()
    n = history.samples
    assert all(0.15 < b - a < 1.0 for a, b in zip(times, times[1:])), times  # one sample per interval

    nodes = await dispatcher.db.run(rows, NodeSample)
    cluster = await dispatcher.db.run(rows, ClusterSample)
    assert len(nodes) == len(cluster) == n  # one node here: one row of each per sample
    assert {(r.node, r.gpus_total, r.gpus_allocated, r.utilization) for r in nodes} == {("node-a", 4, 3, 40.0)}
    assert source.asked[0] == [0, 1, 2, 3]
    assert {(r.queue_length, r.running_runs) for r in cluster} == {(2, 1)}
    assert all(0 <= r.wait_p50_seconds <= r.wait_p95_seconds for r in cluster)
    assert [r.at for r in nodes] == [r.at for r in cluster] == sorted(r.at for r in cluster)

    # The first run ends: both waiting runs start (2 + 1 GPUs, and the notebook's 1), nothing waits.
    release(holder)
    await wait_for(lambda: all(has_seen(r) for r in waiting), message="the waiting runs to start")
    sample = await history.sample_once()
    assert [(r.gpus_total, r.gpus_allocated, r.utilization) for r in sample.nodes] == [(4, 4, 40.0)]
    assert sample.cluster == ClusterRow(0, None, None, 2)
    for run in waiting:
        release(run)


async def test_nothing_waiting_and_no_utilisation_source_store_nulls(dispatcher):
    sample = take_sample(dispatcher, time.time(), {})
    assert [(r.node, r.gpus_total, r.gpus_allocated, r.utilization) for r in sample.nodes] == [("node-a", 4, 0, None)]
    assert (sample.cluster.queue_length, sample.cluster.wait_p50_seconds, sample.cluster.wait_p95_seconds,
            sample.cluster.running_runs) == (0, None, None, 0)
    history = ClusterHistory(dispatcher, None, "node-a")
    stored = await history.sample_once()
    assert stored.nodes[0].utilization is None


async def test_samples_past_the_retention_are_dropped_as_new_ones_are_written(dispatcher):
    day = 86400
    now = int(time.time())
    at = {"t": 0.0}
    history = ClusterHistory(dispatcher, None, "node-a", clock=lambda: at["t"], retention_days=1)

    async def sample_at(t: float) -> list[int]:
        at["t"] = t
        await history.sample_once()
        kept = [r.at for r in await dispatcher.db.run(rows, ClusterSample)]
        assert [r.at for r in await dispatcher.db.run(rows, NodeSample)] == kept
        return kept

    assert await sample_at(now - 3 * day) == [now - 3 * day]
    assert await sample_at(now - 1.6 * day) == [int(now - 1.6 * day)]  # the first was more than a day older
    assert await sample_at(now - 0.4 * day) == [int(now - 0.4 * day)]
    assert await sample_at(now) == [int(now - 0.4 * day), now]


async def test_the_history_outlives_a_restart_of_the_service(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        await ClusterHistory(d, None, "node-a").sample_once()
    async with running_dispatcher(tmp_path) as d:
        await ClusterHistory(d, None, "node-a").sample_once()
        assert len(await d.db.run(rows, ClusterSample)) == len(await d.db.run(rows, NodeSample)) == 2
        now = int(time.time())
        nodes, cluster = await d.db.run(read_history, now - 3600, now, bucket_seconds(1))
        assert list(nodes) == ["node-a"] and len(cluster) >= 1


def test_every_window_has_at_most_300_points_per_series():
    for hours in (1, 2, 6, 24, 48, 168, 719, 720):
        width = bucket_seconds(hours)
        # Epoch-aligned buckets: a window touches at most one more than it spans.
        assert hours * 3600 // width + 1 <= MAX_POINTS, hours
    assert bucket_seconds(1) < 30  # an hour of 30 s samples is shown sample by sample


def fill(session, start: int, count: int, step: int) -> None:
    """``count`` samples ``step`` s apart from ``start``: node-a holds 1 GPU the first half, 3 the second, at 50 %;
    node-b (unmeasured) always 2 of 8; 4 runs wait for 60 s (median) and 600 s (p95) the first half, none after."""
    half = start + count // 2 * step
    node_rows, cluster_rows = [], []
    for i in range(count):
        t = start + i * step
        first = t < half
        node_rows += [dict(at=t, node="node-a", gpus_total=4, gpus_allocated=1 if first else 3, utilization=50.0),
                      dict(at=t, node="node-b", gpus_total=8, gpus_allocated=2, utilization=None)]
        cluster_rows.append(dict(at=t, queue_length=4 if first else 0, wait_p50_seconds=60.0 if first else None,
                                 wait_p95_seconds=600.0 if first else None, running_runs=2))
    session.execute(delete(NodeSample))
    session.execute(delete(ClusterSample))
    if count:
        session.execute(insert(NodeSample), node_rows)
        session.execute(insert(ClusterSample), cluster_rows)


def check_downsampling(db: Database) -> None:
    until = 1_800_000_000
    step = 60
    count = 48 * 3600 // step  # two days of a sample a minute: 2,880 per series, about 10 per bucket
    db.run_sync(fill, until - count * step + step, count, step)

    width = bucket_seconds(48)
    nodes, cluster = db.run_sync(read_history, until - 48 * 3600, until, width)
    assert sorted(nodes) == ["node-a", "node-b"]
    for series in (*nodes.values(), cluster):
        assert 290 <= len(series) <= MAX_POINTS
        times = [p["time"] for p in series]
        assert times == sorted(times) and times[-1] == until  # a point's time: its bucket's latest sample
    a, b = nodes["node-a"], nodes["node-b"]
    assert {p["allocated"] for p in a[:100]} == {1.0} and {p["allocated"] for p in a[-100:]} == {3.0}
    assert any(1.0 < p["allocated"] < 3.0 for p in a)  # the bucket that straddles the change is its mean
    assert {p["utilization"] for p in a} == {50.0} and {p["utilization"] for p in b} == {None}
    assert {(p["allocated"], p["total"]) for p in b} == {(2.0, 8)}
    assert {p["queue_length"] for p in cluster[:100]} == {4.0} and {p["queue_length"] for p in cluster[-100:]} == {0}
    assert {(p["wait_p50_seconds"], p["wait_p95_seconds"]) for p in cluster[:100]} == {(60.0, 600.0)}
    assert {(p["wait_p50_seconds"], p["wait_p95_seconds"]) for p in cluster[-100:]} == {(None, None)}
    assert all(isinstance(p["running_runs"], float) and p["running_runs"] == 2 for p in cluster)

    # The last hour, in buckets narrower than the samples: each point is one sample, as stored.
    nodes, cluster = db.run_sync(read_history, until - 3600, until, bucket_seconds(1))
    assert len(cluster) == 3600 // step + 1 and [p["time"] for p in cluster][-2:] == [until - step, until]
    assert {p["allocated"] for p in nodes["node-a"]} == {3.0}


def test_history_is_averaged_into_at_most_300_points_per_series_on_sqlite(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'h.sqlite'}")
    db.upgrade()
    try:
        check_downsampling(db)
    finally:
        db.close()


@pytest.mark.postgres
def test_history_is_averaged_into_at_most_300_points_per_series_on_postgresql(postgres_url):
    db = Database(postgres_url)
    db.upgrade()
    try:
        check_downsampling(db)
        db.run_sync(fill, 0, 0, 1)  # leave the shared database's tables empty
    finally:
        db.close()


def test_store_sample_writes_both_tables_in_one_call(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 's.sqlite'}")
    db.upgrade()
    try:
        sample = Sample(1000, (NodeRow("a", 4, 1, None), NodeRow("b", 2, 2, 90.0)), ClusterRow(1, 5.0, 5.0, 3))
        db.run_sync(store_sample, sample, 0)
        assert [(r.node, r.at) for r in db.run_sync(rows, NodeSample)] == [("a", 1000), ("b", 1000)]
        assert [(r.queue_length, r.running_runs) for r in db.run_sync(rows, ClusterSample)] == [(1, 3)]
    finally:
        db.close()


@pytest.mark.hub
def test_the_history_api_is_for_admins_bounds_hours_and_says_how_it_averaged(hub, make_user):
    _, plain = make_user("hist-plain")
    _, admin = make_user("hist-admin", admin=True)
    r = plain("GET", "/cluster/history")
    assert r.status_code == 403 and "admins" in r.json()["message"]
    for bad in ("0", "721", "abc", "1.5", ""):
        r = admin("GET", "/cluster/history", params={"hours": bad})
        assert r.status_code == 400 and "1 to 720" in r.json()["message"], (bad, r.text)

    # The session's scheduler samples every second: a point within seconds.
    h = wait_for_sync(lambda: (lambda d: d if d["cluster"] and d["nodes"] else None)(
        admin("GET", "/cluster/history", params={"hours": 1}).json()), timeout=30, message="a sample")
    assert h["hours"] == 1 and h["interval_seconds"] == 1 and h["bucket_seconds"] == bucket_seconds(1)
    assert h["until"] - h["since"] == 3600 and h["max_points"] == MAX_POINTS
    [node] = h["nodes"]
    assert set(node["points"][-1]) == {"time", "allocated", "total", "utilization"}
    assert node["points"][-1]["total"] == 4 and node["points"][-1]["utilization"] is None
    assert h["utilization_note"].startswith("n/a")
    assert set(h["cluster"][-1]) == {"time", "queue_length", "wait_p50_seconds", "wait_p95_seconds", "running_runs"}
    assert all(h["since"] <= p["time"] <= h["until"] for p in h["cluster"])

    whole = admin("GET", "/cluster/history").json()
    assert whole["hours"] == 24 and whole["bucket_seconds"] == bucket_seconds(24)
    month = admin("GET", "/cluster/history", params={"hours": 720}).json()
    assert month["bucket_seconds"] == bucket_seconds(720) and len(month["cluster"]) <= MAX_POINTS
