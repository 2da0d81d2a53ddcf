"""The views every open sidebar polls (``/api/summary``, ``/api/queue``), answered from versioned state.

The dispatcher bumps ``Dispatcher.view_version`` on every change a view shows (a
submission, a transition, a run leaving ``active``, a pass that moved the queue,
notebook GPUs, a priority).  The answers here are keyed on that version:

- every answer carries an ``ETag`` built from the version, the query and the viewer,
  and a request whose ``If-None-Match`` names it gets ``304`` before anything is
  computed;
- the queue is sorted once per version, and each page's JSON is serialized once per
  version and viewer class (admin, or the configured ``others_visibility``); only a
  page that holds one of the viewer's own runs (which show more to their owner) is
  cached for that viewer alone, so the visibility rules hold and nothing is shared
  between users that differs between them.

Only the current version's answers are kept; the first request after a change builds
them again.  ETags start with a token drawn when the service starts, so a version
number reused after a restart never matches an answer from before it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any, Callable

from tornado import web

BOOT = secrets.token_hex(4)

# How long a summary's GPU-hours may lag when nothing else changes (they grow while runs hold GPUs).
SUMMARY_USAGE_SECONDS = 30.0


def viewer_key(user: str) -> str:
    """A short stable token for a user in an ETag (names may hold characters an ETag may not)."""
    return hashlib.blake2s(user.encode(), digest_size=6).hexdigest()


def etag(*parts: Any) -> str:
    return '"' + "-".join(str(p) for p in (BOOT, *parts)) + '"'


def not_modified(handler: web.RequestHandler, tag: str) -> bool:
    """Set ``ETag: tag``; answer ``304`` (and return True) when the request's ``If-None-Match`` names it."""
    handler.set_header("ETag", tag)
    wanted = handler.request.headers.get("If-None-Match", "")
    names = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    if tag in names or "*" in names:
        handler.set_status(304)
        handler.finish()
        return True
    return False


def summary_etag(version: int, user: str, admin: bool, groups: list[str] | None, now: float | None = None,
                 with_active: bool = True) -> str:
    """The summary's ETag: the view version, who asks (their groups decide the quota), a usage period and
    whether ``my_active`` is in it."""
    bucket = int((time.time() if now is None else now) // SUMMARY_USAGE_SECONDS)
    who = viewer_key(user + "\0" + ",".join(sorted(groups or ())))
    return etag("s", version, who, int(admin), int(with_active), bucket)


def page_bounds(limit: str | None, offset: str | None) -> tuple[int | None, int]:
    """``limit`` (1..10000, None: all) and ``offset`` (>= 0) from the query, or 400."""
    try:
        lim = None if limit in (None, "") else int(limit)
        off = 0 if offset in (None, "") else int(offset)
    except ValueError:
        raise web.HTTPError(400, "limit and offset must be whole numbers") from None
    if lim is not None and not 1 <= lim <= 10000:
        raise web.HTTPError(400, "limit must be from 1 to 10000")
    if off < 0:
        raise web.HTTPError(400, "offset must be 0 or more")
    return lim, off


class _Version:
    """What one view version shares between requests: the sorted queue, runs by owner, serialized pages and
    values every caller shares (``memo``)."""

    def __init__(self, version: int, order: list):
        self.version = version
        self.order = order
        self.by_owner: dict[str, list] | None = None
        self.pages: dict[tuple, str] = {}
        self._memo: dict[Any, Any] = {}

    def runs(self, owner: str | None) -> list:
        """The queue in view order; with ``owner``, only that owner's runs (indexed once per version)."""
        if owner is None:
            return self.order
        if self.by_owner is None:
            self.by_owner = {}
            for run in self.order:
                self.by_owner.setdefault(run.owner, []).append(run)
        return self.by_owner.get(owner, [])

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per version (a value that depends only on the dispatcher's state)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


class QueueViews:
    """The queue view's answers for the current ``Dispatcher.view_version`` (one per service)."""

    def __init__(self, sort: Callable[[Any], list]):
        self._sort = sort
        self._current: _Version | None = None
        self.names: dict[int, str] = {}  # run names (they never change), fetched for the pages shown
        self.builds = 0  # pages serialized, for tests and benchmarks

    def current(self, dispatcher: Any) -> _Version:
        state = self._current
        if state is None or state.version != dispatcher.view_version:
            state = self._current = _Version(dispatcher.view_version, self._sort(dispatcher.active.values()))
            if len(self.names) > 2 * len(dispatcher.active) + 1000:
                self.names = {i: n for i, n in self.names.items() if i in dispatcher.active}
        return state

    def tag(self, version: int, viewer: str, view_class: str, only_mine: bool, limit: int | None,
            offset: int) -> str:
        return etag("q", version, view_class, viewer_key(viewer), int(only_mine), limit or "all", offset)

    async def page(self, state: _Version, viewer: str, view_class: str, only_mine: bool, limit: int | None,
                   offset: int, build: Callable[[list, dict[int, str]], dict], fetch_names) -> str:
        """The serialized page; ``build(runs, names)`` makes its document, ``fetch_names(ids)`` reads names."""
        runs = state.runs(viewer if only_mine else None)
        shown = runs[offset:offset + limit] if limit is not None else runs[offset:]
        personal = only_mine or any(r.owner == viewer for r in shown)
        key = (view_class, only_mine, limit, offset, viewer if personal else None)
        body = state.pages.get(key)
        if body is None:
            missing = [r.id for r in shown if r.id not in self.names]
            if missing:
                self.names.update(await fetch_names(missing))
            document = build(shown, self.names)
            document.update(total=len(runs), offset=offset, limit=limit)
            body = state.pages[key] = json.dumps(document, default=str)
            self.builds += 1
        return body


def queue_views(settings: dict, sort: Callable[[Any], list]) -> QueueViews:
    views = settings.get("nothing_queue_views")
    if views is None:
        views = settings["nothing_queue_views"] = QueueViews(sort)
    return views
