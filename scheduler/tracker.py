"""Follows what running runs leave behind: metrics from their log and ``report()`` file, and their size on disk.

Once a second (``interval``) the tracker reads what each running run appended
to its log and its report file since the last read, turns it into metric points
(``metrics.Reader``), and stores the points together with the new read offsets in
one transaction: after a crash the same bytes are read again and no point is
stored twice.  Every ``disk_interval`` it measures the run's folder (allocated
blocks) and keeps per-user and per-group totals current, so storage quotas cost
a dictionary lookup at submit, never a tree walk per request.  When a run ends it
is read and measured a last time.

Files in a run's folder are the run's user's: they are opened without following
links, and only a regular file with one link is read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from traitlets import Bool, Float, Integer
from traitlets.config import LoggingConfigurable

from . import tracking_store as ts
from .checkpoints import disk_bytes
from .dataset_store import bytes_by_namespace
from .dispatcher import utcnow
from .metrics import Reader, rules_from_json, summarize
from .runenv import RunPaths
from .states import RunState, StopCause

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FOLLOWED = (RunState.RUNNING, RunState.STOP_IN_PROGRESS)


class StorageQuotaExceeded(Exception):
    """A submission refused because its owner or group is over a storage quota; the message says what to do."""


def read_new(path: str, offset: int, limit: int, final: bool) -> tuple[list[bytes], int]:
    """Whole lines appended to ``path`` since ``offset`` (at most ``limit`` bytes), and the offset after them.

    The last line counts only once it has its newline, unless ``final`` (the run has
    ended).  A file that shrank (the run truncated its log) is read on from its end.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
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
class Followed:
    run_id: int
    owner: str
    group: str
    paths: RunPaths
    log_path: str
    reader: Reader
    summary: dict
    stored: int
    log_offset: int
    report_offset: int
    disk: int
    measured_at: float = 0.0
    warned_full: bool = False
    warned_quota: bool = False
    checkpoints: dict = field(default_factory=dict)


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
        self._task: asyncio.Task | None = None
        self._pending_ends: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
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

    def _on_run_ended(self, run_id: int) -> None:
        self._pending_ends.add(run_id)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the tracker must outlive any one run's files
                log.exception("Metric collection pass failed; retrying at the next pass")
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        """One pass: follow new running runs, read all followed ones, finish the ended ones."""
        async with self._lock:
            for run in list(self.dispatcher.active.values()):
                if run.state in FOLLOWED and run.id not in self.followed:
                    await self._guarded(run.id, self._follow(run.id))
            for f in list(self.followed.values()):
                await self._guarded(f.run_id, self._collect(f, final=False))
            for run_id in list(self._pending_ends):
                await self._guarded(run_id, self._finish(run_id))

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
        f = self.followed.pop(run_id, None) or await self._load(run_id)
        if f is not None:
            self.followed[run_id] = f  # kept until the last read is stored
            await self._collect(f, final=True)
            self.followed.pop(run_id, None)
        self._pending_ends.discard(run_id)

    async def read_ended(self, run_id: int) -> None:
        """Read an ended run's files a last time now, if not yet done (a tuning reads its objective next)."""
        async with self._lock:
            if run_id in self._pending_ends:
                await self._finish(run_id)

    async def flush(self, run_id: int) -> None:
        """Read a run's files now (the API calls it so a query sees what was just printed)."""
        async with self._lock:
            f = self.followed.get(run_id)
            if f is not None:
                await self._collect(f, final=False, measure=False)

    async def _load(self, run_id: int) -> Followed | None:
        row = await self.db.run(ts.run_tracking, run_id)
        if row is None:
            return None
        paths = RunPaths(Path(row.run_dir))
        return Followed(row.id, row.owner, row.group or "", paths, row.log_path,
                        Reader(rules_from_json(row.metric_rules or row.experiment_rules)),
                        dict(row.metric_summary or {}),
                        row.metric_points, row.log_read_offset, row.report_read_offset, row.disk_bytes,
                        checkpoints=dict(row.checkpoint_steps or {}))

    async def _follow(self, run_id: int) -> None:
        f = await self._load(run_id)
        if f is not None:
            # Implicit steps continue where the stored points left off.
            f.reader.steps = {name: (entry.get("step") or 0) + 1 for name, entry in f.summary.items()
                              if isinstance(entry.get("step"), int)}
            f.reader.names = set(f.summary)
            self.followed[run_id] = f

    # ------------------------------------------------------------------ reading
    async def _collect(self, f: Followed, final: bool, measure: bool = True) -> None:
        while await self._collect_once(f, final) and final:
            pass  # an ended run is read to its end, read_limit bytes at a time
        now = time.monotonic()
        if final or (measure and now - f.measured_at >= self.disk_interval):
            f.measured_at = now
            size = await asyncio.to_thread(disk_bytes, str(f.paths.root))
            await self.set_size(f.run_id, f.owner, f.group, f.disk, size)
            f.disk = size
            if not final:
                await self._check_quota(f)

    async def _collect_once(self, f: Followed, final: bool) -> bool:
        """One read of the run's files and the store of what it found; whether anything was read."""
        points, log_offset, report_offset, checkpoints = await asyncio.to_thread(self._read, f, final)
        if log_offset != f.log_offset or report_offset != f.report_offset:
            room = max(self.max_points_per_run - f.stored, 0)
            kept = points[:room]
            if len(points) > room and not f.warned_full:
                f.warned_full = True
                await self._note(f, f"metrics: more than {self.max_points_per_run:,} points; later points are not "
                                    "stored (latest, min and max stay current)")
            summary = summarize(f.summary, points)
            registered = {**f.checkpoints, **checkpoints} if checkpoints else None
            await self.db.run(ts.store_points, f.run_id, kept, summary, f.stored + len(kept), log_offset,
                              report_offset, registered)
            f.summary, f.stored, f.log_offset, f.report_offset = summary, f.stored + len(kept), log_offset, report_offset
            if registered is not None:
                f.checkpoints = registered
            return True
        return False

    def _read(self, f: Followed, final: bool):
        lines, log_offset = read_new(f.log_path, f.log_offset, self.read_limit, final)
        points = f.reader.log_lines(lines, time.time()) if lines else []
        lines, report_offset = read_new(str(f.paths.report_file), f.report_offset, self.read_limit, final)
        checkpoints = {}
        if lines:
            more, registered = f.reader.report_lines(lines)
            points += more
            points.sort(key=lambda p: p.at)  # the latest value is the last one in time, whichever file said it
            checkpoints = {name: step for name, step, _ in registered}
        return points, log_offset, report_offset, checkpoints

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
