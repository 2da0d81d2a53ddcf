"""The views every open sidebar shows (``/api/summary``, ``/api/queue``), answered from versioned state,
polled or pushed on a stream (``ViewStreams``, ``GET /api/views/stream``).

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

A tab with a stream open asks nothing: the dispatcher calls ``ViewStreams.changed`` on
every version, and at most once per interval each distinct answer is built once (by the
same builders, for the same viewer, as a polled request) and sent to the streams whose
tab does not have it yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from typing import Any, Awaitable, Callable, Hashable, NamedTuple

from tornado import web
from tornado.http1connection import HTTP1Connection

from ..dispatcher import paused_gc

log = logging.getLogger(__name__)

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
    """What one view version shares between requests: its digest of the active runs (made by the function
    ``QueueViews`` was given; ``digest.order`` is the queue in view order), runs by owner, serialized pages and
    values every caller shares (``memo``)."""

    def __init__(self, version: int, digest: Any):
        self.version = version
        self.digest = digest
        self.order: list = digest.order
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
            with paused_gc():
                self._memo[key] = make()
        return self._memo[key]


# A view version's digest over more active runs than this is made in a worker thread.
DIGEST_IN_THREAD_ABOVE = 500


class QueueViews:
    """The queue view's answers for the current ``Dispatcher.view_version`` (one per service)."""

    def __init__(self, digest: Callable[[Any], Any]):
        self._digest = digest
        self._current: _Version | None = None
        self._making: tuple[int, asyncio.Future] | None = None
        self.names: dict[int, str] = {}  # run names (they never change), fetched for the pages shown
        self.builds = 0  # pages serialized, for tests and benchmarks

    async def current(self, dispatcher: Any) -> _Version:
        """The state of the dispatcher's current view version, made once per version.

        Over :data:`DIGEST_IN_THREAD_ABOVE` active runs the digest is made in a worker thread, from a copy of
        the list of active runs, while the loop serves requests (at 10,000 queued it was the longest step
        the loop took while runs were submitted and sidebars open).  A run may change meanwhile, as it may
        between two requests: the change bumps the version, and the next version reads it again.
        """
        version = dispatcher.view_version
        state = self._current
        if state is not None and state.version == version:
            return state
        making = self._making
        if making is None or making[0] != version:
            runs = list(dispatcher.active.values())
            if len(runs) <= DIGEST_IN_THREAD_ABOVE:
                return self._keep(_Version(version, self._made(runs)), dispatcher)
            making = self._making = (version, asyncio.ensure_future(self._make(version, runs, dispatcher)))
        return await asyncio.shield(making[1])

    def _made(self, runs: list) -> Any:
        with paused_gc():  # one walk over 10,000 runs and their sorts
            return self._digest(runs)

    async def _make(self, version: int, runs: list, dispatcher: Any) -> _Version:
        try:
            digest = await asyncio.get_running_loop().run_in_executor(None, self._made, runs)
        finally:
            if self._making is not None and self._making[0] == version:
                self._making = None
        return self._keep(_Version(version, digest), dispatcher)

    def _keep(self, state: _Version, dispatcher: Any) -> _Version:
        """``state`` becomes the current one unless a later version's is already there."""
        if self._current is None or self._current.version < state.version:
            self._current = state
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
            with paused_gc():
                document = build(shown, self.names)
                document.update(total=len(runs), offset=offset, limit=limit)
                body = state.pages[key] = json.dumps(document, default=str)
            self.builds += 1
        return body


def queue_views(settings: dict, digest: Callable[[Any], Any]) -> QueueViews:
    views = settings.get("nothing_queue_views")
    if views is None:
        views = settings["nothing_queue_views"] = QueueViews(digest)
    return views


# ---------------------------------------------------------------------------------------------------- streams
# A flush offers the new answers to this many streams, then lets the event loop serve requests.
STREAMS_SLICE = 8


class StreamView(NamedTuple):
    """One view a stream carries: the event's name, a key shared by every stream that sees the same answer
    (so one flush builds it once), and ``make(context)``, the answer's JSON."""

    event: str
    key: Hashable
    make: Callable[[Any], Awaitable[str]]


class ViewStream:
    """One browser tab's server-sent-events stream: what it was sent last per view, and at most one write in
    flight.  An answer that changes while a write has not drained replaces the one waiting, so a client that
    reads slowly holds one answer per view here, never a growing backlog."""

    def __init__(self, handler: web.RequestHandler, views: list[StreamView], opened: float):
        self.handler, self.views, self.opened = handler, views, opened
        self.sent: dict[str, str] = {}
        self.waiting: dict[str, str] = {}
        self.writing_since: float | None = None
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def offer(self, event: str, body: str) -> None:
        """Send ``body`` as ``event`` unless it is what the tab already has."""
        if self.done.done() or self.sent.get(event) == body:
            return
        self.sent[event] = body
        self.waiting[event] = body
        if self.writing_since is None:
            self._write()

    def heartbeat(self) -> None:
        if self.writing_since is None and not self.done.done():
            self._write(b": keep-alive\n\n")

    def _write(self, extra: bytes = b"") -> None:
        chunk = b"".join(f"event: {e}\ndata: {b}\n\n".encode() for e, b in self.waiting.items()) + extra
        self.waiting = {}
        self.writing_since = time.monotonic()
        try:
            self.handler.write(chunk)
            flushed = self.handler.flush()
        except Exception:  # noqa: BLE001 - the connection is gone: the stream ends
            self.end()
            return
        flushed.add_done_callback(self._written)

    def _written(self, future: asyncio.Future) -> None:
        self.writing_since = None
        if future.cancelled() or future.exception() is not None:
            self.end()
        elif self.waiting and not self.done.done():
            self._write()

    def end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def abort(self) -> None:
        """Close the connection without finishing the answer (its client stopped reading)."""
        connection = self.handler.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.close()
        self.end()


class ViewStreams:
    """Every open view stream of the service, kept current from ``Dispatcher.view_version``.

    A change (the dispatcher calls ``changed``) schedules one flush, at most one per
    ``interval`` seconds: it builds each distinct answer once (``StreamView.key``) and
    offers it to every stream that carries it, which sends it only if it differs from
    what that tab has, so nothing is sent while nothing a tab shows changes.  One
    timer, running only while streams are open, sends heartbeats, refreshes the views
    that change with time alone (``refresh_every``: the summary's GPU-hours), and ends
    streams whose writes stall (``stall_seconds``: the client stopped reading) or that
    are older than ``max_seconds`` (the browser reconnects and is authenticated again).
    """

    def __init__(self, context: Callable[[], Awaitable[Any]], interval: float = 1.0, heartbeat: float = 15.0,
                 stall_seconds: float = 30.0, max_seconds: float = 600.0, refresh_every: float = 30.0):
        self.context = context
        self.interval, self.heartbeat_seconds = interval, heartbeat
        self.stall_seconds, self.max_seconds, self.refresh_every = stall_seconds, max_seconds, refresh_every
        self.streams: set[ViewStream] = set()
        self.flushes = 0  # flushes made, for tests and benchmarks
        self._due: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task | None = None
        self._again = False
        self._last_flush = 0.0
        self._last_refresh = 0.0
        self._ticker: asyncio.TimerHandle | None = None

    def add(self, stream: ViewStream) -> None:
        self.streams.add(stream)
        if self._ticker is None:
            self._last_refresh = time.monotonic()
            self._ticker = asyncio.get_running_loop().call_later(self.heartbeat_seconds, self._tick)

    def remove(self, stream: ViewStream) -> None:
        self.streams.discard(stream)
        stream.end()
        if not self.streams and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def send_current(self, stream: ViewStream) -> None:
        """A new stream's first answers: what its views show now."""
        context = await self.context()
        for view in stream.views:
            stream.offer(view.event, await view.make(context))

    def changed(self) -> None:
        """Something a view shows changed: flush soon (at once after a quiet spell, else ``interval`` after
        the last flush)."""
        if not self.streams:
            return
        if self._flushing is not None:
            self._again = True
            return
        if self._due is None:
            wait = max(0.0, self._last_flush + self.interval - time.monotonic())
            self._due = asyncio.get_running_loop().call_later(wait, self._start_flush)

    def _start_flush(self) -> None:
        self._due = None
        self._flushing = asyncio.ensure_future(self._flush())
        self._flushing.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task) -> None:
        self._flushing = None
        if not task.cancelled() and task.exception() is not None:
            log.error("Could not update the open view streams: %s", task.exception())
        if self._again:
            self._again = False
            self.changed()

    async def _flush(self) -> None:
        self._last_flush = time.monotonic()
        self.flushes += 1
        context = await self.context()
        built: dict[Hashable, str] = {}
        for i, stream in enumerate(list(self.streams)):
            for view in stream.views:
                body = built.get(view.key)
                if body is None:
                    body = built[view.key] = await view.make(context)
                stream.offer(view.event, body)
            if i % STREAMS_SLICE == STREAMS_SLICE - 1:
                await asyncio.sleep(0)  # many streams: let requests in between

    def _tick(self) -> None:
        now = time.monotonic()
        for stream in list(self.streams):
            if stream.writing_since is not None and now - stream.writing_since > self.stall_seconds:
                log.info("Ending a view stream whose client has not read for %.0f s", now - stream.writing_since)
                stream.abort()
                self.remove(stream)
            elif now - stream.opened > self.max_seconds:
                self.remove(stream)
            else:
                stream.heartbeat()
        if now - self._last_refresh >= self.refresh_every:
            self._last_refresh = now
            self.changed()
        self._ticker = asyncio.get_running_loop().call_later(self.heartbeat_seconds, self._tick) \
            if self.streams else None
