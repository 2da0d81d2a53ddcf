"""Follows what running runs leave behind: metrics from their log and ``report()`` file, and their size on disk.

Once a second (``interval``) the tracker reads what each running run appended
to its log and its report file since the last read, turns it into metric points
(``metrics.Reader``), and stores the points together with the new read offsets in
one transaction: after a crash the same bytes are read again and no point is
stored twice.  Every ``disk_interval`` it measures the run's folder (allocated
blocks) and keeps per-user and per-group totals current, so storage quotas cost
a dictionary lookup at submit, never a tree walk per request.  When a run ends it
is read and measured a last time.

The reading, parsing, inserting and measuring happen in helper processes of the
tracker's own (``collect``), each with its own connection to the database: the
service's event loop, its database thread and its GIL stay free for the API
however fast the runs write, and ingestion uses ``processes`` cores.  A pass is
one call to each helper with its share of the runs.  The service keeps each
run's progress (offsets, summary, implicit steps) and sends it with every read;
the helper answers with the new progress.  A store applies only if the run's stored offsets are still
the ones the read started from, so a read sent again (its helper died before
answering) is stored once, and a progress found stale is reloaded from the
database.

Files in a run's folder are the run's user's: they are opened without following
links, and only a regular file with one link is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from operator import attrgetter
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from traitlets import Bool, Float, Integer
from traitlets.config import LoggingConfigurable

from . import tracking_store as ts
from .checkpoints import CheckpointIndex, disk_bytes
from .dataset_store import bytes_by_namespace
from .db import make_engine
from .dispatcher import utcnow
from .helper_process import HelperProcess
from .metrics import MetricRule, Reader, rules_from_json, summarize
from .nofollow import READ_FLAGS
from .runenv import RunPaths
from .states import RunState, StopCause

log = logging.getLogger(__name__)

FOLLOWED = (RunState.RUNNING, RunState.STOP_IN_PROGRESS)


class StorageQuotaExceeded(Exception):
    """A submission refused because its owner or group is over a storage quota; the message says what to do."""


def read_new(path: str, offset: int, limit: int, final: bool) -> tuple[list[bytes], int]:
    """Whole lines appended to ``path`` since ``offset`` (at most ``limit`` bytes), and the offset after them.

    The last line counts only once it has its newline, unless ``final`` (the run has
    ended).  A file that shrank (the run truncated its log) is read on from its end.
    """
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        return [], offset
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return [], offset
        if st.st_size < offset:
            return [], st.st_size
        data = os.pread(fd, min(limit, st.st_size - offset), offset)
    finally:
        os.close(fd)
    if not data:
        return [], offset
    at_end = offset + len(data) >= st.st_size
    cut = len(data) if final and at_end else data.rfind(b"\n") + 1
    if cut == 0:
        if len(data) < limit:
            return [], offset
        cut = len(data)  # a "line" longer than a whole read: skipped as junk
    return data[:cut].split(b"\n"), offset + cut


@dataclass
class Progress:
    """How far a run's files are read, and what that reading remembers: the state a read starts from.

    Plain data, so that it crosses to the tracker's helper process and back.
    """

    log_offset: int
    report_offset: int
    stored: int  # points stored (at most max_points_per_run)
    summary: dict
    steps: dict[str, int]  # the next implicit step of each metric
    names: set[str]  # the metric names admitted so far
    checkpoints: dict  # names registered with nothing.save() and their steps
    dropped_names: int = 0


@dataclass
class ReadJob:
    """One read of one run, as the helper process does it (``collect``)."""

    run_id: int
    log_path: str
    report_path: str
    rules: list[MetricRule] | None
    progress: Progress
    final: bool  # the run has ended: read to the end, the last line even without its newline
    read_limit: int
    max_points: int
    measure: str | None = None  # the run's folder, when its size on disk is due


@dataclass
class ReadResult:
    progress: Progress | None  # None: the stored offsets were not the job's (reload them), or ``error``
    capped: bool = False  # points were left out at max_points
    disk: int | None = None  # allocated bytes of the run's folder, when measured
    error: str = ""  # why the read failed (it is tried again at the next pass)


_sessions: dict[str, sessionmaker] = {}
_store_locks: dict[str, int | None] = {}
_sessions_lock = threading.Lock()


def _sessions_for(url: str) -> sessionmaker:
    with _sessions_lock:
        found = _sessions.get(url)
        if found is None:
            found = _sessions[url] = sessionmaker(make_engine(url), expire_on_commit=False)
        return found


@contextlib.contextmanager
def _storing(url: str):
    """On SQLite, the tracker's helpers take turns to write (a lock file beside the database): one waits for
    the other's commit and goes on at once, instead of polling SQLite's busy lock with growing sleeps."""
    with _sessions_lock:
        if url not in _store_locks:
            path = make_url(url).database if url.startswith("sqlite") else None
            _store_locks[url] = (os.open(path + ".tracker-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                                 if path and path != ":memory:" else None)
        fd = _store_locks[url]
    if fd is None:
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def collect(url: str, job: ReadJob) -> ReadResult:
    """Read what the run appended since ``job.progress`` and store it; in the tracker's helper process.

    One transaction per read holds the points, the summary and the new offsets; an
    ended run is read to its end, ``read_limit`` bytes of each file at a time.  The
    store is conditional on the offsets the read started from (``ts.StaleProgress``),
    so doing a job twice stores its points once.
    """
    sessions = _sessions_for(url)
    p = job.progress
    reader = Reader(job.rules, dict(p.steps), set(p.names), p.dropped_names)
    log_offset, report_offset, stored, summary, checkpoints = (p.log_offset, p.report_offset, p.stored,
                                                               p.summary, p.checkpoints)
    capped = False
    while True:
        lines, new_log = read_new(job.log_path, log_offset, job.read_limit, job.final)
        points = reader.log_lines(lines, time.time()) if lines else []
        lines, new_report = read_new(job.report_path, report_offset, job.read_limit, job.final)
        registered = None
        if lines:
            more, found = reader.report_lines(lines)
            points += more
            points.sort(key=attrgetter("at"))  # the latest value is the last one in time, whichever file said it
            if found:
                registered = {**checkpoints, **{name: step for name, step, _ in found}}
        if new_log == log_offset and new_report == report_offset:
            break
        room = max(job.max_points - stored, 0)
        kept = points[:room]
        capped = capped or len(points) > room
        summary = summarize(summary, points)
        try:
            with _storing(url), sessions() as session, session.begin():
                ts.store_points(session, job.run_id, kept, summary, stored + len(kept), new_log, new_report,
                                registered, expected=(log_offset, report_offset, stored))
        except ts.StaleProgress:
            return ReadResult(None, capped, None)
        log_offset, report_offset, stored = new_log, new_report, stored + len(kept)
        if registered is not None:
            checkpoints = registered
        if not job.final:
            break
    disk = disk_bytes(job.measure) if job.measure else None
    return ReadResult(Progress(log_offset, report_offset, stored, summary, reader.steps, reader.names,
                               checkpoints, reader.dropped_names), capped, disk)


def collect_all(url: str, jobs: list[ReadJob]) -> list[ReadResult]:
    """``collect`` of each job in turn, a failure answered as that job's ``error``: a pass of the tracker is one
    call to its helper, however many runs it follows (a round trip per run would make a pass as slow as the
    time it takes both processes to be scheduled a hundred times on a busy machine)."""
    results = []
    for job in jobs:
        try:
            results.append(collect(url, job))
        except Exception as e:  # noqa: BLE001 - one run's failure never keeps the others from being read
            results.append(ReadResult(None, error=f"{type(e).__name__}: {e}"))
    return results


@dataclass
class Followed:
    run_id: int
    owner: str
    group: str
    paths: RunPaths
    log_path: str
    rules: list[MetricRule] | None
    progress: Progress
    disk: int
    measured_at: float = 0.0
    warned_full: bool = False
    warned_quota: bool = False


class Tracker(LoggingConfigurable):
    interval = Float(1.0, help="Seconds between reads of the running runs' logs and report files.").tag(config=True)
    disk_interval = Float(
        10.0, help="Seconds between measurements of a running run's folder on disk (for storage quotas)."
    ).tag(config=True)
    read_limit = Integer(
        4 * 1024**2, help="Bytes read from one run's log or report file per pass: a run printing without pause "
                          "cannot keep the others waiting; the rest is read at the next pass."
    ).tag(config=True)
    max_points_per_run = Integer(
        1_000_000, help="Metric points stored per run. Past it, points are no longer stored, but the latest, "
                        "minimum and maximum of each metric stay current; the run's events say so once."
    ).tag(config=True)
    processes = Integer(
        2, help="Helper processes that read, parse and store the runs' metrics, each a share of the runs at every "
                "pass: ingestion can use that many cores, and the service's own process does none of it. "
                "E.g. ``c.Tracker.processes = 4`` on a scheduler host with cores to spare."
    ).tag(config=True)
    stop_over_storage_quota = Bool(
        False, help="Stop a running run (STOPPED) when its owner or group crosses a storage quota. By default it "
                    "is only warned in its log; new runs are refused either way. Nothing written is removed."
    ).tag(config=True)

    def __init__(self, db, dispatcher, **kwargs):
        super().__init__(**kwargs)
        self.db = db
        self.dispatcher = dispatcher
        self.followed: dict[int, Followed] = {}
        self.user_bytes: dict[str, int] = {}
        self.group_bytes: dict[str, int] = {}
        # Stored dataset versions by namespace (a user's name, or "group:<name>"): counted in the same quotas.
        self.dataset_bytes: dict[str, int] = {}
        # Reading, parsing and inserting happen there, off this process's event loop and GIL.
        self.helpers = [HelperProcess(threads=1) for _ in range(max(self.processes, 1))]
        self.checkpoint_index = CheckpointIndex()
        self._task: asyncio.Task | None = None
        self._pending_ends: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        await asyncio.gather(*(h.start() for h in self.helpers))
        self.user_bytes, self.group_bytes = await self.db.run(ts.storage_by_owner_and_group)
        self.dataset_bytes = await self.db.run(bytes_by_namespace)
        self.dispatcher.run_ended.append(self._on_run_ended)
        # Runs that ended while the service was down were not read a last time.
        since = utcnow() - timedelta(days=1)
        self._pending_ends.update(await self.db.run(ts.recently_ended, since))
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(h.stop() for h in self.helpers))

    def _on_run_ended(self, run_id: int) -> None:
        self._pending_ends.add(run_id)

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the tracker must outlive any one run's files
                log.exception("Metric collection pass failed; retrying at the next pass")
            # Passes start every interval: a long pass (runs printing fast) is followed by the next at once.
            await asyncio.sleep(max(self.interval - (time.monotonic() - started), 0.0))

    async def tick(self) -> None:
        """One pass: follow new running runs, then read all followed ones and finish the ended ones, in one call
        to each helper with its share of them."""
        async with self._lock:
            for run in list(self.dispatcher.active.values()):
                if run.state in FOLLOWED and run.id not in self.followed:
                    await self._guarded(run.id, self._follow(run.id))
            batch: list[tuple[Followed, bool]] = []
            for run_id in list(self._pending_ends):
                f = self.followed.get(run_id) or await self._load(run_id)
                if f is None:
                    self._pending_ends.discard(run_id)  # deleted meanwhile
                    continue
                self.followed[run_id] = f  # kept until the last read is stored
                batch.append((f, True))
            batch += [(f, False) for f in self.followed.values() if f.run_id not in self._pending_ends]
            if not batch:
                return
            now = time.monotonic()
            shares = [batch[i::len(self.helpers)] for i in range(len(self.helpers))]
            jobs = [[self._job(f, final, now) for f, final in share] for share in shares]
            answers = await asyncio.gather(*(helper.call_idempotent(collect_all, self.db.url, share)
                                             for helper, share in zip(self.helpers, jobs) if share),
                                           return_exceptions=True)
            for share, share_jobs, results in zip([s for s in shares if s], [j for j in jobs if j], answers):
                if isinstance(results, BaseException):
                    if isinstance(results, asyncio.CancelledError):
                        raise results
                    log.error("Reading the metrics of runs %s failed (%s); retrying at the next pass",
                              ", ".join(str(f.run_id) for f, _ in share), results)
                    continue
                for (f, _), job, result in zip(share, share_jobs, results):
                    await self._guarded(f.run_id, self._settle(f, job, result, now))

    async def _guarded(self, run_id: int, work) -> None:
        """One run's reading; its failure (a run deleted meanwhile, a database refusal) is logged and retried at
        the next pass, and never keeps the other runs from being read."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Run %s: reading its metrics failed; retrying at the next pass", run_id)

    async def _finish(self, run_id: int) -> None:
        """The last read of an ended run; it stays pending until that read has succeeded."""
        f = self.followed.get(run_id) or await self._load(run_id)
        if f is None:
            self._pending_ends.discard(run_id)
            return
        self.followed[run_id] = f  # kept until the last read is stored
        await self._collect(f, final=True)

    async def read_ended(self, run_id: int) -> None:
        """Read an ended run's files a last time now, if not yet done (a tuning reads its objective next)."""
        async with self._lock:
            if run_id in self._pending_ends:
                await self._finish(run_id)

    async def flush(self, run_id: int) -> None:
        """Read a run's files now (the API calls it so a query sees what was just printed); an ended run not
        yet read a last time gets that last read, so its series is whole as soon as its end is visible."""
        async with self._lock:
            if run_id in self._pending_ends:
                await self._finish(run_id)
                return
            f = self.followed.get(run_id)
            if f is not None:
                await self._collect(f, final=False, measure=False)

    async def _load(self, run_id: int) -> Followed | None:
        """The run's progress as stored; implicit steps continue where the stored points left off."""
        row = await self.db.run(ts.run_tracking, run_id)
        if row is None:
            return None
        summary = dict(row.metric_summary or {})
        steps = {name: (entry.get("step") or 0) + 1 for name, entry in summary.items()
                 if isinstance(entry.get("step"), int)}
        progress = Progress(row.log_read_offset, row.report_read_offset, row.metric_points, summary, steps,
                            set(summary), dict(row.checkpoint_steps or {}))
        return Followed(row.id, row.owner, row.group or "", RunPaths(Path(row.run_dir)), row.log_path,
                        rules_from_json(row.metric_rules or row.experiment_rules), progress, row.disk_bytes)

    async def _follow(self, run_id: int) -> None:
        f = await self._load(run_id)
        if f is not None:
            self.followed[run_id] = f

    # ------------------------------------------------------------------ reading
    def _job(self, f: Followed, final: bool, now: float, measure: bool = True) -> ReadJob:
        due = final or (measure and now - f.measured_at >= self.disk_interval)
        return ReadJob(f.run_id, f.log_path, str(f.paths.report_file), f.rules, f.progress, final,
                       self.read_limit, self.max_points_per_run, str(f.paths.root) if due else None)

    async def _collect(self, f: Followed, final: bool, measure: bool = True) -> None:
        """Read one run's files now (an ended run: to their end); a stale progress is reloaded and read again."""
        for _ in range(3):
            now = time.monotonic()
            job = self._job(f, final, now, measure)
            helper = self.helpers[f.run_id % len(self.helpers)]
            result = (await helper.call_idempotent(collect_all, self.db.url, [job]))[0]
            if await self._settle(f, job, result, now) or self.followed.get(f.run_id) is not f:
                return
            f = self.followed[f.run_id]
        raise RuntimeError(f"run {f.run_id}: its stored read offsets kept changing during the read")

    async def _settle(self, f: Followed, job: ReadJob, result: ReadResult, now: float) -> bool:
        """Take what the helper answered for ``f``; False when its progress was stale (reloaded, not stored)."""
        if self.followed.get(f.run_id) is not f:
            return True  # forgotten meanwhile (the run was deleted)
        if result.error:
            raise RuntimeError(result.error)
        if result.progress is None:
            # Stored meanwhile (a read sent again to a new helper) or deleted: go on from what is stored.
            log.info("Run %s: its stored read offsets moved on; reading on from them", f.run_id)
            fresh = await self._load(f.run_id)
            if fresh is None:
                self.followed.pop(f.run_id, None)
                self._pending_ends.discard(f.run_id)
                return True
            fresh.disk, fresh.measured_at = f.disk, f.measured_at
            fresh.warned_full, fresh.warned_quota = f.warned_full, f.warned_quota
            self.followed[f.run_id] = fresh
            return False
        f.progress = result.progress
        if result.capped and not f.warned_full:
            f.warned_full = True
            await self._note(f, f"metrics: more than {self.max_points_per_run:,} points; later points are not "
                                "stored (latest, min and max stay current)")
        if result.disk is not None:
            f.measured_at = now
            await self.set_size(f.run_id, f.owner, f.group, f.disk, result.disk)
            f.disk = result.disk
            if not job.final:
                await self._check_quota(f)
        if job.final:
            self.followed.pop(f.run_id, None)
            self._pending_ends.discard(f.run_id)
        return True

    async def _note(self, f: Followed, text: str) -> None:
        """A line in the run's log, from the platform."""
        line = f"nothing: {text}\n".encode()

        def append():
            try:
                fd = os.open(f.log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                return
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

        await asyncio.to_thread(append)

    # ------------------------------------------------------------------ storage
    async def set_size(self, run_id: int, owner: str, group: str, old: int, new: int) -> None:
        """Record a run's new size on disk and move the owner's and group's totals by the difference."""
        if new == old:
            return
        await self.db.run(ts.set_disk_bytes, {run_id: new})
        self.user_bytes[owner] = self.user_bytes.get(owner, 0) + new - old
        if group:
            self.group_bytes[group] = self.group_bytes.get(group, 0) + new - old
        if run_id in self.followed:
            self.followed[run_id].disk = new

    def forget(self, run_id: int, owner: str, group: str, size: int) -> None:
        """A deleted run: its bytes leave the totals."""
        self.followed.pop(run_id, None)
        self._pending_ends.discard(run_id)
        self.user_bytes[owner] = max(self.user_bytes.get(owner, 0) - size, 0)
        if group:
            self.group_bytes[group] = max(self.group_bytes.get(group, 0) - size, 0)

    def add_dataset_bytes(self, namespace: str, delta: int) -> None:
        self.dataset_bytes[namespace] = max(self.dataset_bytes.get(namespace, 0) + delta, 0)

    def used(self, owner: str) -> int:
        return self.user_bytes.get(owner, 0) + self.dataset_bytes.get(owner, 0)

    def group_used(self, group: str) -> int:
        return self.group_bytes.get(group, 0) + self.dataset_bytes.get(f"group:{group}", 0)

    def usage(self, owner: str, group: str) -> dict:
        """What ``owner`` (and ``group``) use and may use, in bytes (None: no quota)."""
        quotas = self.dispatcher.quotas
        out = {"user": {"used_bytes": self.used(owner), "quota_bytes": quotas.user(owner).storage_bytes}}
        if group:
            out["group"] = {"name": group, "used_bytes": self.group_used(group),
                            "quota_bytes": quotas.group(group).storage_bytes}
        return out

    def over_quota(self, owner: str, group: str) -> str | None:
        """The sentence saying which storage quota ``owner``/``group`` is over, or None."""
        quotas = self.dispatcher.quotas
        checks = [("you use", self.used(owner), quotas.user(owner).storage_bytes, "your")]
        if group:
            checks.append((f"group {group} uses", self.group_used(group),
                           quotas.group(group).storage_bytes, "its"))
        for who, used, limit, whose in checks:
            if limit is not None and used >= limit:
                return (f"storage quota exceeded: {who} {format_bytes(used)} of {whose} {format_bytes(limit)}; "
                        "free space by deleting checkpoints (nothing model ls RUN, then nothing model rm RUN "
                        "NAME or \"*\") or whole runs (nothing rm RUN)")
        return None

    def check_submission(self, owner: str, group: str) -> None:
        reason = self.over_quota(owner, group)
        if reason is not None:
            raise StorageQuotaExceeded(reason)

    async def _check_quota(self, f: Followed) -> None:
        reason = self.over_quota(f.owner, f.group)
        if reason is None:
            f.warned_quota = False
            return
        if not f.warned_quota:
            f.warned_quota = True
            await self._note(f, reason + ("; this run is stopped" if self.stop_over_storage_quota else
                                          "; this run goes on, new runs are refused"))
        if self.stop_over_storage_quota:
            run = self.dispatcher.active.get(f.run_id)
            if run is not None and run.state == RunState.RUNNING:
                await self.dispatcher.stop_run(run, StopCause.STORAGE, reason)


def format_bytes(n: int) -> str:
    for unit, size in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
