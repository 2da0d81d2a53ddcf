"""``GET /api/usage/me``: the caller's GPU-hours per UTC day, for the sidebar's "my usage over the period" chart.

The arithmetic with runs of known start and end (clipped at midnight, running runs counted up to now, days
after now empty), the query on a real database (only the caller's runs, ended ones before the window left
out), and the handler through the session's hub: the days add up to the period's total, which is the
summary's "Your GPU-hours this period", a running run's hours grow, and nobody sees another's runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import requests
from nothing.scheduler.api.usage import (MAX_DAYS, day_starts, days_of_period, gpu_hours_by_day, held_hours,
                                         usage_history)
from nothing.scheduler.db import Database
from nothing.scheduler.orm import Run
from nothing.scheduler.states import RunState

from .helpers import wait_for_sync
from .test_cluster_api import GATED, release

D = datetime(2026, 3, 10)  # a midnight
H = timedelta(hours=1)


def at(day: int, hour: float) -> datetime:
    """``hour`` o'clock (may be fractional) of day ``day`` (0: March 10th)."""
    return D + timedelta(days=day, hours=hour)


def test_day_starts_are_the_midnights_of_the_last_days_up_to_today():
    assert day_starts(at(2, 15.5), 3) == [at(0, 0), at(1, 0), at(2, 0)]
    assert day_starts(at(0, 0), 1) == [D]


def test_the_default_days_are_the_period_so_far_today_included():
    assert days_of_period(at(0, 9), at(0, 0)) == 1
    assert days_of_period(at(29, 23), at(0, 0)) == 30
    assert days_of_period(at(5, 1), at(0, 12)) == 6  # a period starting at noon: its first day counts whole
    assert days_of_period(at(5000, 1), at(0, 0)) == MAX_DAYS


def test_a_run_over_midnight_is_split_at_the_day_edge():
    starts = day_starts(at(2, 12), 3)
    # one GPU 23:00 to 01:00 over the first midnight; two GPUs 22:30 to 02:00 over the second
    hours = gpu_hours_by_day([(1, at(0, 23), at(1, 1)), (2, at(1, 22.5), at(2, 2))], starts, at(2, 12))
    assert hours == pytest.approx([1.0, 1.0 + 3.0, 4.0])


def test_a_run_longer_than_a_day_fills_the_days_between():
    starts = day_starts(at(3, 6), 4)
    hours = gpu_hours_by_day([(4, at(0, 18), at(3, 6))], starts, at(3, 6))
    assert hours == pytest.approx([4 * 6, 4 * 24, 4 * 24, 4 * 6])


def test_a_running_run_counts_up_to_now_and_days_after_now_get_nothing():
    now = at(1, 9.5)
    starts = [at(0, 0), at(1, 0), at(2, 0)]  # the day after today, asked for: nothing yet
    hours = gpu_hours_by_day([(2, at(0, 20), None), (1, at(1, 8), at(1, 23))], starts, now)
    assert hours == pytest.approx([2 * 4, 2 * 9.5 + 1.5, 0.0])


def test_runs_outside_the_days_and_runs_without_gpus_count_nothing():
    starts = day_starts(at(5, 12), 2)
    hours = gpu_hours_by_day([(3, at(0, 1), at(3, 23)),  # ended before the first day
                              (0, at(4, 1), at(4, 5)),  # no GPUs
                              (1, at(3, 22), at(4, 2)),  # only its part after midnight counts
                              (1, at(4, 5), at(4, 5))], starts, at(5, 12))  # zero length
    assert hours == pytest.approx([2.0, 0.0])
    assert gpu_hours_by_day([(1, at(0, 1), None)], [], at(0, 2)) == []


def test_held_hours_clips_to_the_window():
    assert held_hours(2, at(0, 1), at(0, 5), at(0, 2), at(0, 3)) == pytest.approx(2.0)
    assert held_hours(2, at(0, 1), None, at(0, 0), at(0, 4)) == pytest.approx(6.0)
    assert held_hours(2, at(0, 5), at(0, 6), at(0, 0), at(0, 4)) == 0.0


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'scheduler.sqlite'}")
    database.upgrade()
    yield database
    database.close()


def add_runs(db, rows: list[tuple[str, int, datetime | None, datetime | None]]) -> None:
    def insert(session):
        for owner, gpus, started, ended in rows:
            state = RunState.QUEUED if started is None else RunState.RUNNING if ended is None else RunState.COMPLETE
            session.add(Run(owner=owner, entry_point="train.py", gpus=gpus, state=state, submitted_at=D,
                            started_at=started, ended_at=ended, run_dir="/r", log_path="/r/output.log"))

    db.run_sync(insert)


def test_the_query_counts_only_the_owners_runs_and_the_period_total_beside_the_days(db):
    now = at(2, 6)
    add_runs(db, [
        ("alice", 1, at(0, 23), at(1, 1)),  # 1 h on day 0, 1 h on day 1
        ("alice", 2, at(2, 3), None),  # running since 03:00: 6 GPU-hours today
        ("alice", 4, at(-3, 0), at(-2, 0)),  # ended before the window and the period: left out
        ("alice", 8, None, None),  # queued: never held a GPU
        ("bob", 4, at(1, 0), at(1, 12)),  # someone else's
    ])
    starts = day_starts(now, 3)
    per_day, period = db.run_sync(usage_history, "alice", starts, at(1, 0), now)
    assert per_day == pytest.approx([1.0, 1.0, 6.0])
    assert period == pytest.approx(1.0 + 6.0)  # the period started on day 1
    per_day, _ = db.run_sync(usage_history, "bob", starts, at(1, 0), now)
    assert per_day == pytest.approx([0.0, 48.0, 0.0])
    assert db.run_sync(usage_history, "carol", starts, at(1, 0), now) == ([0.0, 0.0, 0.0], 0.0)


@pytest.mark.hub
def test_the_api_answers_my_days_adding_up_to_the_summary_and_nobody_elses(hub, make_user):
    me, api = make_user("usage")
    _, other = make_user("usageother")
    done = api.submit({"t.py": "import time; time.sleep(1.5)"}, entry_point="t.py", gpus=2).json()["id"]
    api.wait_state(done, "COMPLETE", timeout=60)
    held = api.submit({"hold.py": GATED}, entry_point="hold.py", gpus=1).json()["id"]
    try:
        api.wait_state(held, "RUNNING", timeout=60)
        first = api("GET", "/usage/me")
        assert first.status_code == 200, first.text
        usage = first.json()
        summary = api("GET", "/summary").json()
        assert usage["user"] == me and usage["period"] == summary["period"]
        assert usage["days"][-1]["date"] == usage["now"][:10]
        assert usage["days"][0]["date"] == usage["period"]["start"][:10]  # by default: the period's days so far
        assert usage["quota"] == {"gpu_hours_per_period": None, "max_gpus": None, "source": "none"}
        today = usage["days"][-1]["gpu_hours"]
        assert today >= 2 * 1.5 / 3600 * 0.9, usage["days"]  # the ended run's 2 GPUs x ~1.5 s, and the held one
        assert sum(d["gpu_hours"] for d in usage["days"]) == pytest.approx(usage["total_gpu_hours"], abs=1e-5)
        assert usage["total_gpu_hours"] == pytest.approx(usage["period_gpu_hours"], abs=1e-5)
        assert usage["period_gpu_hours"] == pytest.approx(summary["usage_gpu_hours"], abs=0.01)
        # The running run counts up to now: a moment later, today has more.
        wait_for_sync(lambda: api("GET", "/usage/me", params={"days": 1}).json()["days"][0]["gpu_hours"]
                      > today + 0.5 / 3600, timeout=10, message="the running run's hours to grow")
        week = api("GET", "/usage/me", params={"days": 7}).json()["days"]
        assert len(week) == 7 and [d["gpu_hours"] for d in week[:-1]] == [0.0] * 6
        theirs = other("GET", "/usage/me").json()
        assert theirs["total_gpu_hours"] == 0 and theirs["period_gpu_hours"] == 0
        for bad in ("0", "367", "x", "-1"):
            r = api("GET", "/usage/me", params={"days": bad})
            assert r.status_code == 400 and "days" in r.json()["message"], r.text
        assert requests.get(f"{hub.api_url}/usage/me", timeout=10).status_code == 403
    finally:
        release(hub, held)
        api.wait_state(held, "COMPLETE", timeout=30)
