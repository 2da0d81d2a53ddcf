"""/api/summary, /api/queue, /api/admin/overview, /api/runs/<id>/priority and /copy: the cluster at a glance.

What the sidebar and the admin page show, computed here from the live dispatcher
and the database so the front ends only display it.

Quota fields come from ``NothingScheduler.quota_config``: where no quota is set,
``guaranteed_gpus`` is ``null`` and the UI says "no quota set"; ``borrowable_gpus``
is the idle GPUs that no group's unused guarantee holds back.  GPU-hours are measured from the runs table
(GPUs x time held, clipped to the current period).  Utilisation and zombie GPUs need
NVML; on virtual GPUs they are ``null`` with the reason in ``*_note``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import datetime, timezone
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import func, or_, select, update
from tornado import web
from traitlets import Bool, Float, Unicode, validate
from traitlets.config import Configurable

from ..orm import Run
from ..rundir import stored_code
from ..states import RunState
from .base import APIHandler, HandlerMixin, hub_api
from .gpus import holder_ids, holder_kind
from .runs import RunAccessMixin
from .tensorboard import experiment_board_url, run_board_url
from .views import StreamView, ViewStream, ViewStreams, not_modified, page_bounds, queue_views, summary_etag


class ClusterView(Configurable):
    """What users may see of each other in the queue, and the accounting period."""

    others_visibility = Unicode(
        "owner",
        help="""How much of other users' runs the everyone's-queue view shows to non-admins.

        ``anonymous``: state, GPUs and position only; ``owner``: plus the owner's name;
        ``full``: plus run and experiment names.  Admins always see everything.
        Example: ``c.ClusterView.others_visibility = "anonymous"``
        """,
    ).tag(config=True)

    @validate("others_visibility")
    def _check_visibility(self, proposal):
        if proposal.value not in ("anonymous", "owner", "full"):
            raise ValueError(f"others_visibility must be anonymous, owner or full, not {proposal.value!r}")
        return proposal.value

    period_seconds = Float(
        30 * 86400,
        help="""Length of the usage period for GPU-hours, aligned on the Unix epoch (the quota
        module's budget period should match).  Example: ``c.ClusterView.period_seconds = 7 * 86400``
        """,
    ).tag(config=True)

    cache_views = Bool(
        True,
        help="""Answer ``/api/summary`` and ``/api/queue`` from state versioned by the dispatcher: ETags,
        ``304 Not Modified`` on ``If-None-Match``, each queue page serialized once per version.  Off: every
        request rebuilds its answer (as before; only for comparing in ``bench/views.py``).
        Example: ``c.ClusterView.cache_views = False``
        """,
    ).tag(config=True)

    stream_interval = Float(
        1.0,
        help="""Seconds between two updates of an open view stream (``GET /api/views/stream``) at most: the
        changes of a burst of submissions reach the sidebars together, in one update, and a quiet queue's first
        change goes out at once.  Example: ``c.ClusterView.stream_interval = 2.0``
        """,
    ).tag(config=True)

    stream_heartbeat = Float(
        15.0,
        help="""Seconds between the comments a quiet view stream sends, so proxies keep the connection open
        and a client that is gone is noticed.  Example: ``c.ClusterView.stream_heartbeat = 30``
        """,
    ).tag(config=True)

    stream_stall_seconds = Float(
        30.0,
        help="""A view stream whose client has not read what was written for this long is closed (the browser
        reconnects), so a slow client never grows the service's memory.  Example:
        ``c.ClusterView.stream_stall_seconds = 60``
        """,
    ).tag(config=True)

    stream_max_seconds = Float(
        600.0,
        help="""A view stream is ended after this long (the browser reconnects 3 s later), so who may see what is
        checked again as on every polled request.  Example: ``c.ClusterView.stream_max_seconds = 300``
        """,
    ).tag(config=True)


def cluster_view(settings: dict) -> ClusterView:
    view = settings.get("nothing_cluster_view")
    if view is None:
        view = settings["nothing_cluster_view"] = ClusterView(parent=settings.get("scheduler"))
    return view


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def _epoch_iso(value: float | None) -> str | None:
    return datetime.fromtimestamp(value, timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def period_bounds(now: datetime, period_seconds: float) -> tuple[datetime, datetime]:
    ts = now.replace(tzinfo=timezone.utc).timestamp()
    start = math.floor(ts / period_seconds) * period_seconds
    to_naive = lambda t: datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)  # noqa: E731
    return to_naive(start), to_naive(start + period_seconds)


def gpu_hours_by_owner(session, since: datetime, now: datetime) -> dict[str, float]:
    """GPU-hours each owner's runs held since ``since`` (runs still going count up to ``now``)."""
    rows = session.execute(
        select(Run.owner, Run.gpus, Run.started_at, Run.ended_at)
        .where(Run.started_at.is_not(None), Run.gpus > 0, or_(Run.ended_at.is_(None), Run.ended_at > since))
    ).all()
    used: dict[str, float] = {}
    for owner, gpus, started, ended in rows:
        seconds = ((ended or now) - max(started, since)).total_seconds()
        if seconds > 0:
            used[owner] = used.get(owner, 0.0) + gpus * seconds / 3600
    return used


def run_counts(session) -> dict[str, int]:
    return {state.value: n for state, n in session.execute(select(Run.state, func.count()).group_by(Run.state))}


def gpu_hours(value: float) -> float:
    """GPU-hours as the pages show them: to a tenth of an hour."""
    return round(value, 1)


# Every state falls in exactly one total, so the totals add up to ``total_runs``.
TOTAL_OF_STATE = {
    RunState.CREATE_REQUESTED: "queued_runs", RunState.QUEUED: "queued_runs",
    RunState.CREATE_IN_PROGRESS: "running_runs", RunState.RUNNING: "running_runs",
    RunState.STOP_IN_PROGRESS: "running_runs", RunState.COMPLETE: "completed_runs",
    RunState.STOPPED: "stopped_runs", RunState.FAIL_TRAIN: "failed_runs", RunState.CREATE_FAILED: "failed_runs",
}


def run_totals(counts: dict[str, int]) -> dict[str, int]:
    """Runs per total (queued, running, completed, stopped, failed) from counts per state, and their sum."""
    totals = dict.fromkeys(("queued_runs", "running_runs", "completed_runs", "stopped_runs", "failed_runs"), 0)
    for state, n in counts.items():
        totals[TOTAL_OF_STATE[RunState(state)]] += n
    totals["total_runs"] = sum(counts.values())
    return totals


def _active_experiments(session, ids: list[int]) -> dict[int, tuple[str, str]]:
    if not ids:
        return {}
    return {i: (o, e) for i, o, e in session.execute(select(Run.id, Run.owner, Run.experiment).where(Run.id.in_(ids)))}


def set_priority_row(session, run_id: int, priority: int) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(priority=priority))


def quota_for(scheduler, user: str, groups: list[str] | None = None) -> dict[str, Any]:
    """The user's limits from ``NothingScheduler.quota_config``: the guarantee of the group their runs are
    charged to (their first group, as for submissions), their own cap and budget; nulls where none is set."""
    quotas = getattr(scheduler, "quotas", None)
    if quotas is None:
        return {"guaranteed_gpus": None, "max_gpus": None, "gpu_hours_per_period": None, "source": "none",
                "group": None}
    group = sorted(groups)[0] if groups else ""
    group_quota, user_quota = quotas.group(group), quotas.user(user)
    configured = group in quotas.groups or user in quotas.users or group_quota != type(group_quota)() \
        or user_quota != type(user_quota)()
    return {
        "guaranteed_gpus": group_quota.guaranteed_gpus,
        "max_gpus": user_quota.max_gpus if user_quota.max_gpus is not None else group_quota.max_gpus,
        "gpu_hours_per_period": user_quota.gpu_hours_per_period if user_quota.gpu_hours_per_period is not None
        else group_quota.gpu_hours_per_period,
        "source": "config" if configured else "none",
        "group": group,
    }


def borrowable_gpus(dispatcher, quotas, free: int, group: str, holding=None) -> int:
    """Idle GPUs that no group's unused guarantee (one's own included) is holding back; ``holding``: the runs
    that hold GPUs, when the caller has them (else every active run is looked at)."""
    if quotas is None:
        return free
    used: dict[str, int] = {}
    for run in dispatcher.active.values() if holding is None else holding:
        if run.state in HOLDS_GPUS:
            used[run.group] = used.get(run.group, 0) + run.held_gpus
    held_back = sum(max(0, (q.guaranteed_gpus or 0) - used.get(name, 0)) for name, q in quotas.groups.items())
    if group not in quotas.groups and quotas.default_group.guaranteed_gpus:
        held_back += max(0, quotas.default_group.guaranteed_gpus - used.get(group, 0))
    return max(0, free - held_back)


def gpu_holders(dispatcher, holding=None) -> dict[tuple[str, int], Any]:
    return dispatcher.gpu_holders(holding)


def queue_entry(run, viewer: str, admin: bool, visibility: str) -> dict[str, Any]:
    """One active run as the queue view shows it to ``viewer``, hiding what the policy hides."""
    mine = run.owner == viewer
    show_owner = mine or admin or visibility in ("owner", "full")
    show_names = mine or admin or visibility == "full"
    return {
        "id": run.id,
        "mine": mine,
        "owner": run.owner if show_owner else None,
        "name": getattr(run, "name", None) if show_names else None,
        "experiment": run.experiment if show_names else None,
        "state": run.state.value,
        "gpus": run.gpus,
        "node": run.node,
        "assigned_gpus": list(run.assigned_gpus),
        "placement": [[node, list(gpus)] for node, gpus in run.placements],
        "priority": run.priority,
        "queue_position": run.position,
        "reason": run.reason if (mine or admin) else _generic_reason(run),
        "estimated_start": _epoch_iso(getattr(run, "estimated_start", None)),
        "submitted_at": _iso(run.submitted_at),
        "started_at": _iso(run.started_at),
    }


def _generic_reason(run) -> str:
    return "waiting" if run.state == RunState.QUEUED else run.state.value.lower()


# The states whose runs hold GPUs (a set lookup: the views check it for every active run, per version).
HOLDS_GPUS = frozenset(s for s in RunState if s.holds_gpus)


class QueueDigest(NamedTuple):
    """What every view of one view version reads of the active runs, from one walk over them: the view order
    (holding GPUs first, oldest start first, then the queue in position order), the runs holding GPUs, the
    queue's length and each owner's ``(GPUs in use, queued, holding)``."""

    order: list
    holding: list
    queued: int
    per_owner: dict[str, tuple[int, int, int]]


_BY_START = attrgetter("started_or_submitted", "id")
_BY_POSITION = attrgetter("position")
QUEUED = RunState.QUEUED
_BY_ID = attrgetter("id")


def digest_queue(runs) -> QueueDigest:
    """One walk over ``runs`` and three sorts by attributes (no Python key function per run): at 10,000 queued
    this is what a view version costs, once, on the event loop."""
    holding: list[Any] = []
    placed: list[Any] = []
    unplaced: list[Any] = []
    owners: dict[str, list[int]] = {}
    queued = 0
    for run in runs:
        counts = owners.get(run.owner)
        if counts is None:
            counts = owners[run.owner] = [0, 0, 0]
        state = run.state
        if state is QUEUED:  # most of them: ``is`` first (an enum's hash is a Python call)
            queued += 1
            counts[1] += 1
        elif state in HOLDS_GPUS:
            holding.append(run)
            counts[0] += run.held_gpus
            counts[2] += 1
            continue
        (placed if run.position is not None else unplaced).append(run)
    holding.sort(key=_BY_START)
    placed.sort(key=_BY_POSITION)  # stable: equal positions (none, after a pass) stay in submission order
    unplaced.sort(key=_BY_ID)
    return QueueDigest(holding + placed + unplaced, holding, queued,
                       {owner: (c[0], c[1], c[2]) for owner, c in owners.items()})


def sort_queue(runs) -> list:
    """Holding GPUs first (oldest start first), then the queue in position order."""
    return digest_queue(runs).order


def gpu_totals(scheduler, dispatcher, holding=None) -> dict[str, int]:
    total = sum(len(g) for g in scheduler.inventory.values())
    busy = len(gpu_holders(dispatcher, holding))
    return {"total": total, "busy": busy, "free": total - busy}


class Viewer(NamedTuple):
    """Who looks at a view: what decides what they may see of it."""

    name: str
    admin: bool
    groups: tuple[str, ...]


def summary_document(settings: dict, viewer: Viewer, with_active: bool, used: dict[str, float],
                     period: tuple[datetime, datetime], state=None) -> dict[str, Any]:
    """The summary ``viewer`` sees (``/api/summary`` and the view stream); ``state``: the cached view version
    whose shared values it reuses (None: computed afresh)."""
    scheduler, dispatcher = settings["scheduler"], settings["dispatcher"]
    quota = quota_for(scheduler, viewer.name, list(viewer.groups))
    quotas, group = getattr(scheduler, "quotas", None), quota["group"] or ""
    if state is None:
        digest = digest_queue(dispatcher.active.values())
        mine = [r for r in digest.order if r.owner == viewer.name] if with_active else []
        gpus = gpu_totals(scheduler, dispatcher, digest.holding)
        borrowable = borrowable_gpus(dispatcher, quotas, gpus["free"], group, digest.holding)
    else:
        digest = state.digest
        mine = state.runs(viewer.name) if with_active else []
        gpus = state.memo("gpus", lambda: gpu_totals(scheduler, dispatcher, digest.holding))
        borrowable = state.memo(("borrowable", group),
                                lambda: borrowable_gpus(dispatcher, quotas, gpus["free"], group, digest.holding))
    in_use, queued, running = digest.per_owner.get(viewer.name, (0, 0, 0))
    queue_length = digest.queued
    start, end = period
    return {
        "user": viewer.name,
        "admin": viewer.admin,
        "gpus": gpus,
        "my_gpus_in_use": in_use,
        "my_runs": {"queued": queued, "running": running},
        "queue_length": queue_length,
        "guaranteed_gpus": quota["guaranteed_gpus"],
        "group": quota["group"],
        "borrowable_gpus": borrowable,
        "quota_source": quota["source"],
        "usage_gpu_hours": round(used.get(viewer.name, 0.0), 6),
        "period": {"start": _iso(start), "end": _iso(end)},
        # Live queue facts of the caller's active runs (position, reason, estimated start).
        **({"my_active": [queue_entry(r, viewer.name, viewer.admin, "full") for r in mine]}
           if with_active else {}),
    }


async def queue_page(settings: dict, viewer: Viewer, only_mine: bool, limit: int | None, offset: int,
                     state=None) -> str:
    """The JSON of one page of the queue as ``viewer`` sees it, built once per view version and viewer class
    (``views.QueueViews``); shared by ``/api/queue`` and the view stream."""
    view, dispatcher = cluster_view(settings), settings["dispatcher"]
    views = queue_views(settings, digest_queue)
    state = state or await views.current(dispatcher)
    view_class = "full" if viewer.admin else view.others_visibility

    def build(runs: list, names: dict[int, str]) -> dict:
        entries = []
        for run in runs:
            entry = queue_entry(run, viewer.name, viewer.admin, view.others_visibility)
            if entry["experiment"] is not None:
                entry["name"] = names.get(run.id, "")
            entries.append(entry)
        gpus = state.memo("gpus", lambda: gpu_totals(settings["scheduler"], dispatcher, state.digest.holding))
        return {"runs": entries, "gpus": gpus, "visibility": view_class}

    return await views.page(state, viewer.name, view_class, only_mine, limit, offset, build,
                            lambda ids: dispatcher.db.run(_names, ids))


class ClusterMixin(HandlerMixin):
    @property
    def view(self) -> ClusterView:
        return cluster_view(self.settings)

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.username, self.is_admin, tuple(sorted(self.current_user.get("groups") or ())))

    def gpu_totals(self) -> dict[str, int]:
        return gpu_totals(self.scheduler, self.dispatcher)


class SummaryHandler(ClusterMixin, APIHandler):
    """``GET /api/summary``: the caller's headroom and the cluster's GPUs, for the sidebar header.

    ``my_active=0`` leaves out ``my_active`` (the "everyone" view needs only the header).  With
    ``ClusterView.cache_views``: an ``ETag`` and ``304`` on ``If-None-Match``, and what every caller shares
    (GPU totals, the queue's length, the caller's runs by owner) computed once per view version.
    """

    async def get(self):
        with_active = self.get_argument("my_active", "1") not in ("0", "false")
        groups = self.current_user.get("groups")
        state = None
        if self.view.cache_views:
            if not_modified(self, summary_etag(self.dispatcher.view_version, self.username, self.is_admin, groups,
                                               with_active=with_active)):
                return
            state = await queue_views(self.settings, digest_queue).current(self.dispatcher)
        now = utcnow()
        period = period_bounds(now, self.view.period_seconds)
        used = await self.dispatcher.db.run(gpu_hours_by_owner, period[0], now)
        self.write_json(summary_document(self.settings, self.viewer, with_active, used, period, state))


class QueueHandler(ClusterMixin, APIHandler):
    """``GET /api/queue``: every active run (mine=1: only the caller's), names hidden as ``ClusterView`` says.

    Paged with ``limit`` (default: all) and ``offset``; ``total`` counts the runs of every page.  With
    ``ClusterView.cache_views`` the answer is versioned (``ETag``, ``304`` on ``If-None-Match``) and each page
    is built once per view version (``views.QueueViews``).
    """

    async def get(self):
        only_mine = self.query_flag("mine")
        limit, offset = page_bounds(self.get_argument("limit", None), self.get_argument("offset", None))
        if self.view.cache_views:
            await self._cached(only_mine, limit, offset)
            return
        runs = [r for r in self.dispatcher.active.values() if not only_mine or r.owner == self.username]
        names = await self.dispatcher.db.run(_names, [r.id for r in runs])
        entries = []
        for run in sort_queue(runs):
            entry = queue_entry(run, self.username, self.is_admin, self.view.others_visibility)
            if entry["experiment"] is not None:
                entry["name"] = names.get(run.id, "")
            entries.append(entry)
        total, entries = len(entries), entries[offset:offset + limit] if limit is not None else entries[offset:]
        self.write_json({"runs": entries, "gpus": self.gpu_totals(),
                         "visibility": "full" if self.is_admin else self.view.others_visibility,
                         "total": total, "offset": offset, "limit": limit})

    async def _cached(self, only_mine: bool, limit: int | None, offset: int) -> None:
        views = queue_views(self.settings, digest_queue)
        state = await views.current(self.dispatcher)
        view_class = "full" if self.is_admin else self.view.others_visibility
        if not_modified(self, views.tag(state.version, self.username, view_class, only_mine, limit, offset)):
            return
        self.finish(await queue_page(self.settings, self.viewer, only_mine, limit, offset, state))


def view_streams(settings: dict) -> ViewStreams:
    """The service's open view streams (made on first use; the dispatcher tells them of every change)."""
    streams = settings.get("nothing_view_streams")
    if streams is None:
        view, dispatcher = cluster_view(settings), settings["dispatcher"]

        async def context() -> tuple[dict[str, float], tuple[datetime, datetime], Any]:
            now = utcnow()
            period = period_bounds(now, view.period_seconds)
            used = await dispatcher.db.run(gpu_hours_by_owner, period[0], now) \
                if any(v.event == "summary" for s in made.streams for v in s.views) else {}
            return used, period, await queue_views(settings, digest_queue).current(dispatcher)

        streams = made = settings["nothing_view_streams"] = ViewStreams(
            context, interval=view.stream_interval, heartbeat=view.stream_heartbeat,
            stall_seconds=view.stream_stall_seconds, max_seconds=view.stream_max_seconds)
        dispatcher.view_changed.append(streams.changed)
    return streams


class ViewStreamHandler(ClusterMixin, APIHandler):
    """``GET /api/views/stream``: the sidebar's views pushed as server-sent events, one stream per browser tab.

    ``views`` names what the stream carries (``summary``, ``queue``, or both, comma-separated); ``my_active``
    is the summary's and ``mine``, ``limit`` and ``offset`` the queue's, as for ``/api/summary`` and
    ``/api/queue``.  Each view is sent as an event of its name whose data is that view's JSON, exactly what the
    polled request answers the same caller (the same builders, the same access rule): first at once, then each
    time it changes (at most every ``ClusterView.stream_interval`` seconds), and never while it does not.
    Comments keep the connection open while nothing changes.
    """

    async def get(self):
        names = [v for v in self.get_argument("views", "summary,queue").split(",") if v]
        if not names or set(names) - {"summary", "queue"}:
            raise web.HTTPError(400, "views must name summary, queue or both, separated by commas")
        with_active = self.get_argument("my_active", "1") not in ("0", "false")
        only_mine = self.query_flag("mine")
        limit, offset = page_bounds(self.get_argument("limit", None), self.get_argument("offset", None))
        settings, viewer = self.settings, self.viewer
        views = []
        if "summary" in names:
            async def summary(context) -> str:
                used, period, state = context
                return json.dumps(summary_document(settings, viewer, with_active, used, period, state), default=str)

            views.append(StreamView("summary", ("summary", viewer, with_active), summary))
        if "queue" in names:
            async def queue(context) -> str:
                return await queue_page(settings, viewer, only_mine, limit, offset, context[2])

            # Pages are shared by viewer class in ``QueueViews``; the key only saves the lookups.
            views.append(StreamView("queue", ("queue", viewer, only_mine, limit, offset), queue))
        streams = view_streams(self.settings)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")
        stream = self._stream = ViewStream(self, views, time.monotonic())
        streams.add(stream)
        try:
            self.write(f"retry: {RECONNECT_MS}\n\n")
            await streams.send_current(stream)
            await stream.done
        finally:
            streams.remove(stream)

    _stream: ViewStream | None = None

    def on_connection_close(self) -> None:
        if self._stream is not None:
            self._stream.end()  # ``get`` removes it


# How long a browser waits before reconnecting a view stream that ended.
RECONNECT_MS = 3000


def _names(session, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(session.execute(select(Run.id, Run.name).where(Run.id.in_(ids))).all())


def _utilization(mode: str, indices: list[int]) -> dict[int, int] | None:
    if mode != "nvml":
        return None
    from ..gpus import nvml_utilization

    try:
        return nvml_utilization(indices)
    except Exception:  # NVML errors are not worth failing the page for
        return None


class AdminOverviewHandler(ClusterMixin, APIHandler):
    """``GET /api/admin/overview``: nodes, GPUs, the whole queue, usage per user and group, totals."""

    async def get(self):
        if not self.is_admin:
            raise web.HTTPError(403, "only JupyterHub admins may see the cluster overview")
        sched, dispatcher = self.scheduler, self.dispatcher
        now = utcnow()
        start, end = period_bounds(now, self.view.period_seconds)
        used, counts = await asyncio.gather(dispatcher.db.run(gpu_hours_by_owner, start, now),
                                            dispatcher.db.run(run_counts))
        holders = gpu_holders(dispatcher)
        mode = sched.gpu_mode_in_use
        nodes, zombies = [], []
        for node, gpus in sched.inventory.items():
            util = await asyncio.to_thread(_utilization, mode, [g.index for g in gpus])
            rows = []
            for gpu in gpus:
                holder = holders.get((node, gpu.index))
                utilization = util.get(gpu.index) if util else None
                rows.append(dict(
                    gpu.to_dict(), node=node, busy=holder is not None,
                    owner=holder.owner if holder else None, holder_kind=holder_kind(holder),
                    **(holder_ids(holder) if holder else {"run_id": None, "server": None}), utilization=utilization,
                ))
                if holder is None and utilization:
                    zombies.append({"node": node, "index": gpu.index, "utilization": utilization})
            nodes.append({"name": node, "mode": mode, "gpus": rows})
        # One hub call gives both the active notebooks and group membership (the service's
        # role has list:users and read:users, which includes each user's groups and server).
        hub_users = await hub_api(self, "/users?limit=10000")
        names = await dispatcher.db.run(_names, list(dispatcher.active))
        experiments = await dispatcher.db.run(_active_experiments, list(dispatcher.active))
        prefix = self.settings["service_prefix"]
        queue = []
        for run in sort_queue(dispatcher.active.values()):
            entry = queue_entry(run, self.username, True, "full")
            entry["name"] = names.get(run.id, "")
            entry["kind"] = run.kind
            owner, experiment = experiments.get(run.id, (run.owner, None))
            trains = run.kind == "train"  # model servers and batch jobs write no TensorBoard logs
            entry["tensorboard_url"] = run_board_url(prefix, run.id) if trains else None
            entry["experiment_tensorboard_url"] = (experiment_board_url(prefix, owner, experiment)
                                                   if experiment and trains else None)
            queue.append(entry)
        in_use: dict[str, int] = {}
        for run in dispatcher.active.values():
            if run.state.holds_gpus:
                in_use[run.owner] = in_use.get(run.owner, 0) + run.held_gpus
        queued: dict[str, int] = {}
        for run in dispatcher.active.values():
            if not run.state.holds_gpus:
                queued[run.owner] = queued.get(run.owner, 0) + 1
        # Everyone with GPUs, runs waiting or usage this period (a user whose runs all wait is listed too).
        users = [
            {"name": name, "gpus_in_use": in_use.get(name, 0), "queued_runs": queued.get(name, 0),
             "usage_gpu_hours": gpu_hours(used.get(name, 0.0)),
             **{k: v for k, v in quota_for(sched, name).items() if k != "source"}}
            for name in sorted(set(used) | set(in_use) | set(queued))
        ]
        group_rows, active_notebooks = None, None
        if isinstance(hub_users, list):
            active_notebooks = sum(1 for u in hub_users if u.get("server"))
            members: dict[str, list[str]] = {}
            for u in hub_users:
                for group in u.get("groups") or ():
                    members.setdefault(group, []).append(u["name"])
            group_rows = [
                {"name": g, "members": len(m), "gpus_in_use": sum(in_use.get(n, 0) for n in m),
                 "usage_gpu_hours": gpu_hours(sum(used.get(n, 0.0) for n in m)),
                 "guaranteed_gpus": sched.quotas.group(g).guaranteed_gpus,
                 "gpu_hours_per_period": sched.quotas.group(g).gpu_hours_per_period}
                for g, m in sorted(members.items())
            ]
        self.write_json({
            "generated_at": _iso(now),
            "period": {"start": _iso(start), "end": _iso(end)},
            "gpus": self.gpu_totals(),
            "nodes": nodes,
            "utilization_note": None if mode == "nvml" else "n/a: virtual GPUs have no hardware to measure",
            "queue": queue,
            "users": users,
            "groups": group_rows,
            "zombie_runs": [
                {"run_id": r.id, "owner": r.owner, "node": r.node, "gpus": list(r.assigned_gpus), **r.zombie.to_dict()}
                for r in dispatcher.active.values() if r.zombie is not None and r.zombie.zombie_since is not None
            ],
            "zombies": zombies if mode == "nvml" else None,
            "zombies_note": None if mode == "nvml" else "n/a: zombie detection needs NVML (virtual GPUs here)",
            # One count per state from one query, so the run totals always sum to total_runs.
            "totals": {
                "active_notebooks": active_notebooks,
                **run_totals(counts),
                "gpu_hours_this_period": gpu_hours(sum(used.values())),
            },
        })


async def set_priority(dispatcher, run_id: int, priority: int) -> None:
    """Change a queued run's priority in memory and in the database, then re-run the policy.

    Raises ``LookupError`` when the run is not waiting in the queue.
    """
    run = dispatcher.active.get(run_id)
    if run is None or run.state != RunState.QUEUED:
        raise LookupError(run_id)
    await dispatcher.db.run(set_priority_row, run_id, priority)
    run.priority = priority
    dispatcher.view_version += 1
    dispatcher.wake()


class PriorityHandler(RunAccessMixin, APIHandler):
    """``POST /api/runs/<id>/priority`` with ``{"priority": n}`` (admins; -1000..1000; queued runs only)."""

    async def post(self, run_id):
        if not self.is_admin:
            raise web.HTTPError(403, "only admins may change a run's priority")
        row = await self.get_visible_run(run_id)
        value = self.json_body().get("priority")
        if not isinstance(value, int) or isinstance(value, bool) or not -1000 <= value <= 1000:
            raise web.HTTPError(400, "priority must be a whole number from -1000 to 1000")
        try:
            await set_priority(self.dispatcher, row.id, value)
        except LookupError:
            raise web.HTTPError(409, f"run {row.id} is not waiting in the queue ({row.state.value})") from None
        self.write_json(self.model(await self.get_visible_run(run_id)))


def copy_spec(row: Run) -> dict[str, Any]:
    """The submission that asks for exactly what ``row`` asked for."""
    spec: dict[str, Any] = {
        "name": row.name, "experiment": row.experiment, "entry_point": row.entry_point, "args": list(row.args or []),
        "hyperparameters": dict(row.hyperparameters or {}), "gpus": row.gpus, "cpus": row.cpus,
        "memory": row.memory_bytes, "priority": row.priority,
    }
    if row.max_seconds:
        spec["max_time"] = f"{row.max_seconds}s"
    if row.group:
        spec["group"] = row.group
    if row.preemptible:
        spec["preemptible"] = True
    if getattr(row, "metric_rules", None):
        spec["metrics"] = row.metric_rules
    if getattr(row, "checkpoint_run", None) is not None:
        spec["checkpoint"] = f"{row.checkpoint_run}" + (f":{row.checkpoint_name}" if row.checkpoint_name else "")
    if row.datasets:  # the exact versions the run read
        spec["datasets"] = {d["name"]: f"{d['dataset']}:{d['version']}" for d in row.datasets}
    return spec


class CopyHandler(RunAccessMixin, APIHandler):
    """``POST /api/runs/<id>/copy``: submit the same code with the same settings again (the owner only)."""

    async def post(self, run_id):
        row = await self.get_visible_run(run_id)
        if row.owner != self.username:
            raise web.HTTPError(403, f"only {row.owner} may copy their run {row.id}")
        account = await self.dispatcher.account(row.owner)
        archive = await self.dispatcher.helper.call(stored_code, row.run_dir, *((account.uid, account.gid)
                                                                               if account else ()))
        if archive is None:
            raise web.HTTPError(409, f"run {row.id}'s code is no longer stored, so it cannot be copied")
        try:
            run = await self.queue_submission(copy_spec(row), archive, what=f"run {row.id}'s code")
        except web.HTTPError as e:
            if e.status_code == 400:
                raise web.HTTPError(400, f"run {row.id} cannot be copied: {e.log_message}") from None
            raise
        self.write_json(self.model(run.submitted_row), status=201)


default_handlers = [
    (r"/api/runs/(\d+)/copy", CopyHandler),
    (r"/api/summary/?", SummaryHandler),
    (r"/api/queue/?", QueueHandler),
    (r"/api/views/stream/?", ViewStreamHandler),
    (r"/api/admin/overview/?", AdminOverviewHandler),
    (r"/api/runs/(\d+)/priority", PriorityHandler),
]

