"""/api/usage/me: the caller's GPU-hours per day, for the sidebar's "my usage over the period" chart.

A day is a UTC calendar day. Each of the caller's runs that held GPUs counts, on every day it overlaps,
``gpus x`` the part of the day it ran: a run from 23:00 to 01:00 gives one GPU-hour to each of two days,
and a run still going counts up to now. These are the same runs and the same measure as the summary's
``usage_gpu_hours`` (``cluster.gpu_hours_by_owner``), so with the default days (the current period's) the
days add up to the period's total, which is answered beside them with the quota it is measured against.

The query and the arithmetic run on the database thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from ..orm import Run
from .base import APIHandler
from .cluster import cluster_view, period_bounds, quota_for, utcnow

#: At most this many days per answer (a year and a day).
MAX_DAYS = 366
DAY = timedelta(days=1)

# (gpus, started_at, ended_at or None while it runs)
Interval = tuple[int, datetime, datetime | None]


def _iso(value: datetime) -> str:
    return value.isoformat() + "Z"


def day_starts(now: datetime, days: int) -> list[datetime]:
    """The starts (UTC midnight) of the ``days`` days ending with today, oldest first."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [today - (days - 1 - i) * DAY for i in range(days)]


def days_of_period(now: datetime, period_start: datetime) -> int:
    """How many days, today included, the period holding ``now`` has had so far (1 to ``MAX_DAYS``)."""
    first = period_start.replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, min(MAX_DAYS, (day_starts(now, 1)[0] - first).days + 1))


def held_hours(gpus: int, started: datetime, ended: datetime | None, since: datetime, until: datetime) -> float:
    """GPU-hours of ``gpus`` held from ``started`` to ``ended`` (None: still held), within ``since``..``until``."""
    seconds = (min(ended or until, until) - max(started, since)).total_seconds()
    return gpus * seconds / 3600 if gpus > 0 and seconds > 0 else 0.0


def gpu_hours_by_day(intervals: Iterable[Interval], starts: list[datetime], now: datetime) -> list[float]:
    """GPU-hours per day (24 hours from each of ``starts``, consecutive days), each run clipped to the day and
    to ``now``: runs going on count up to ``now``, days after ``now`` get nothing."""
    hours = [0.0] * len(starts)
    if not starts:
        return hours
    for gpus, started, ended in intervals:
        end = min(ended or now, now)
        # Only the days the run overlaps: from the day it started (or the first day) until it ended.
        i = max(0, (started - starts[0]) // DAY)
        while i < len(starts) and starts[i] < end:
            hours[i] += held_hours(gpus, started, end, starts[i], starts[i] + DAY)
            i += 1
    return hours


def owner_intervals(session, owner: str, since: datetime) -> list[Interval]:
    """The GPUs and times of ``owner``'s runs that held GPUs at some point after ``since``."""
    rows = session.execute(
        select(Run.gpus, Run.started_at, Run.ended_at)
        .where(Run.owner == owner, Run.started_at.is_not(None), Run.gpus > 0,
               or_(Run.ended_at.is_(None), Run.ended_at > since))
    ).all()
    return [(gpus, started, ended) for gpus, started, ended in rows]


def usage_history(session, owner: str, starts: list[datetime], period_start: datetime,
                  now: datetime) -> tuple[list[float], float]:
    """(GPU-hours per day from ``starts``, GPU-hours since ``period_start``): one query, on the database thread."""
    intervals = owner_intervals(session, owner, min(starts[0], period_start))
    period = sum(held_hours(gpus, started, ended, period_start, now) for gpus, started, ended in intervals)
    return gpu_hours_by_day(intervals, starts, now), period


class MyUsageHandler(APIHandler):
    """``GET /api/usage/me?days=N``: the caller's GPU-hours per UTC day, the last ``N`` days up to today
    (default: the days of the current period so far), with the period, its total and the caller's quota."""

    async def get(self):
        view = cluster_view(self.settings)
        now = utcnow()
        start, end = period_bounds(now, view.period_seconds)
        days = self.query_int("days", days_of_period(now, start), 1, MAX_DAYS)
        starts = day_starts(now, days)
        per_day, period_hours = await self.dispatcher.db.run(usage_history, self.username, starts, start, now)
        quota = quota_for(self.scheduler, self.username, self.current_user.get("groups"))
        self.write_json({
            "user": self.username,
            "now": _iso(now),
            "days": [{"date": s.date().isoformat(), "start": _iso(s), "gpu_hours": round(h, 6)}
                     for s, h in zip(starts, per_day)],
            "total_gpu_hours": round(sum(per_day), 6),
            "period": {"start": _iso(start), "end": _iso(end)},
            "period_gpu_hours": round(period_hours, 6),
            "quota": {"gpu_hours_per_period": quota["gpu_hours_per_period"], "max_gpus": quota["max_gpus"],
                      "source": quota["source"]},
        })


default_handlers = [
    (r"/api/usage/me/?", MyUsageHandler),
]
