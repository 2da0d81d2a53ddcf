"""What a run leaves behind: its metrics (JSON or CSV), its checkpoints (NSML's model ls / rm), storage use.

Every route goes through ``get_visible_run``: a run that is not the caller's is
404, for metrics and checkpoints as for the run itself.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
from datetime import timezone
from pathlib import Path

from tornado import web

from .. import tracking_store as ts
from ..checkpoints import Listing, check_patterns, disk_bytes, iso_utc, remove_checkpoints
from ..metrics import json_number
from ..runenv import RunPaths
from ..states import ACTIVE
from .base import APIHandler
from .runs import RunAccessMixin

MAX_POINTS = 1_000_000
MAX_NAMES = 100
MAX_PAGE = 1_000_000  # checkpoints in one page of the listing
MAX_OFFSET = 10**9


def _paths(row) -> RunPaths:
    return RunPaths(Path(row.run_dir))


def _value(value: float | None):
    return "NaN" if value is None else json_number(value)


class MetricsHandler(RunAccessMixin, APIHandler):
    """``GET runs/<id>/metrics[?name=loss&name=acc][&format=csv][&limit=N]``: the run's time series."""

    async def get(self, run_id):
        row = await self.get_visible_run(run_id)
        names = self.get_arguments("name")[:MAX_NAMES] or None
        limit = self.query_int("limit", 100_000, 1, MAX_POINTS)
        tracker = self.scheduler.tracker
        await tracker.flush(row.id)
        points = await self.dispatcher.db.run(ts.metric_series, row.id, names, limit)
        row = await self.get_visible_run(run_id)
        if self.get_argument("format", "json") == "csv":
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["name", "step", "time", "value"])
            for name, step, at, value in points:
                writer.writerow([name, step, iso_utc(at), "nan" if value is None else repr(float(value))])
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="run-{row.id}-metrics.csv"')
            self.finish(out.getvalue())
            return
        series: dict[str, list] = {}
        for name, step, at, value in points:
            series.setdefault(name, []).append([step, at, _value(value)])
        self.write_json({"run": row.id, "summary": row.metric_summary or {}, "points": row.metric_points,
                         "series": series, "truncated": len(points) >= limit})


def checkpoint_listing(row, listing: Listing, at_steps: dict, offset: int = 0, limit: int | None = None) -> dict:
    """NSML's ``model ls`` of the run: the checkpoints from ``offset`` (``limit`` of them, or all), newest last,
    with the number and total bytes of all of them."""
    started = row.started_at.replace(tzinfo=timezone.utc).timestamp() if row.started_at else None
    registered = row.checkpoint_steps or {}
    listed = []
    for c in _page(listing, offset, limit):
        step = _step(registered, c)
        summary = {k: _value(v) for k, v in at_steps.get(step, {}).items()} if step is not None else {}
        listed.append({
            "checkpoint": c["name"], "kind": c["kind"], "bytes": c["bytes"],
            "last_modified": c["modified_iso"],
            "elapsed_seconds": round(c["modified"] - started, 1) if started and math.isfinite(c["modified"]) else None,
            "step": step, "summary": summary,
        })
    out = {"run": row.id, "checkpoints": listed, "total_bytes": listing.total_bytes,
           "count": len(listing.entries), "offset": offset}
    if limit is not None:
        out["limit"] = limit
    return out


def _page(listing: Listing, offset: int, limit: int | None) -> list[dict]:
    return listing.entries[offset:] if limit is None else listing.entries[offset:offset + limit]


def _step(registered: dict, entry: dict) -> int | None:
    """The checkpoint's step: the one given to ``nothing.save()``, else the first number in its name."""
    step = registered.get(entry["name"], entry["name_step"])
    return step if isinstance(step, int) and step >= 0 else None


class CheckpointsHandler(RunAccessMixin, APIHandler):
    """``GET runs/<id>/checkpoints[?offset=N&limit=M]``; ``DELETE runs/<id>/checkpoints?name=PATTERN``
    (repeatable; ``*`` for all).

    Without ``limit`` the listing has every checkpoint, as ``nothing model ls`` prints them; with it, a page.
    An ended run's listing comes from the tracker's ``CheckpointIndex``, so a page of a big folder costs no walk.
    """

    async def _folder(self, row) -> Listing:
        return await asyncio.to_thread(self.scheduler.tracker.checkpoint_index.listing, str(_paths(row).checkpoints),
                                       row.state not in ACTIVE)

    async def _listing(self, row, listing: Listing | None = None, offset: int = 0, limit: int | None = None) -> dict:
        listing = listing or await self._folder(row)
        registered = row.checkpoint_steps or {}
        steps = [s for s in (_step(registered, c) for c in _page(listing, offset, limit)) if s is not None]
        at_steps = await self.dispatcher.db.run(ts.metrics_at_steps, row.id, steps) if row.metric_points else {}
        return checkpoint_listing(row, listing, at_steps, offset, limit)

    async def get(self, run_id):
        offset = self.query_int("offset", 0, 0, MAX_OFFSET)
        limit = None if self.get_argument("limit", None) is None else self.query_int("limit", 0, 1, MAX_PAGE)
        row = await self.get_visible_run(run_id)
        tracker = self.scheduler.tracker
        if row.state in ACTIVE and row.id in tracker.followed:  # the steps of checkpoints just registered
            await tracker.flush(row.id)
            row = await self.get_visible_run(run_id)
        listing = await self._folder(row)
        if offset or limit is not None or row.state in ACTIVE or row.id in tracker.followed:
            self.write_json(await self._listing(row, listing, offset, limit))
            return
        # An ended run's whole listing changes only with its folder (a new Listing) or its stored metrics and
        # registered steps: the encoded answer is kept with the listing (1.6 MB of JSON for 10,000 checkpoints).
        key = (row.id, row.started_at, row.metric_points, json.dumps(row.checkpoint_steps, sort_keys=True))
        body = listing.derived.get(key)
        if body is None:
            body = json.dumps(await self._listing(row, listing), default=str)
            listing.derived.clear()
            listing.derived[key] = body
        self.finish(body)

    async def delete(self, run_id):
        row = await self.get_visible_run(run_id)
        try:
            patterns = check_patterns(self.get_arguments("name"))
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        folder = str(_paths(row).checkpoints)
        account = await self.dispatcher.account(row.owner)
        helper = self.dispatcher.helper
        tracker = self.scheduler.tracker
        with tracker.checkpoint_index.changing(folder):
            if account is None:
                removed = await helper.call(remove_checkpoints, folder, patterns)
            else:
                removed = await helper.call_as(account.uid, account.gid, remove_checkpoints, folder, patterns)
        if not removed:
            raise web.HTTPError(404, f"run {row.id} has no checkpoint matching {', '.join(patterns)[:200]} "
                                     f"(see nothing model ls {row.id})")
        size = await asyncio.to_thread(disk_bytes, row.run_dir)
        await tracker.set_size(row.id, row.owner, row.group or "", row.disk_bytes, size)
        listing = await self._listing(await self.get_visible_run(run_id))
        listing.update(removed=[name for name, _ in removed], freed_bytes=sum(n for _, n in removed))
        self.write_json(listing)


class StorageHandler(APIHandler):
    """``GET storage``: what the caller (and their groups) use of their storage quotas; admins: ``?all=1``."""

    async def get(self):
        tracker = self.scheduler.tracker
        groups = sorted(self.current_user.get("groups") or [])
        mine = tracker.usage(self.username, "")
        model = {"user": dict(mine["user"], name=self.username),
                 "groups": [tracker.usage(self.username, g)["group"] for g in groups]}
        if self.query_flag("all"):
            if not self.is_admin:
                raise web.HTTPError(403, "only admins may see everyone's storage")
            quotas = self.dispatcher.quotas
            users = set(tracker.user_bytes) | {n for n in tracker.dataset_bytes if not n.startswith("group:")}
            groups = set(tracker.group_bytes) | {n[6:] for n in tracker.dataset_bytes if n.startswith("group:")}
            model["users"] = [{"name": u, "used_bytes": tracker.used(u), "quota_bytes": quotas.user(u).storage_bytes}
                              for u in sorted(users)]
            model["all_groups"] = [{"name": g, "used_bytes": tracker.group_used(g),
                                    "quota_bytes": quotas.group(g).storage_bytes} for g in sorted(groups)]
        self.write_json(model)


default_handlers = [
    (r"/api/runs/(\d+)/metrics/?", MetricsHandler),
    (r"/api/runs/(\d+)/checkpoints/?", CheckpointsHandler),
    (r"/api/storage/?", StorageHandler),
]
