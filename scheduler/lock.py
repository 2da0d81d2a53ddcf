"""Exactly one scheduler owns a database: a lock taken at start, before the database is touched.

Two schedulers on one database would both re-attach the same runs, hand out the
same run ids and start the same queued runs twice.  So every scheduler holds

- an ``fcntl.flock`` on ``<data_dir>/scheduler.lock``, a file that also names the
  owner (one JSON line: its pid, the pid of its supervisor, host and start time);
  the kernel drops the lock when the owner dies, however it dies;
- with PostgreSQL, also ``pg_advisory_lock`` on a connection of its own, held for
  the scheduler's life: two machines may share a database but never a data dir.

A scheduler that finds the lock held either refuses to start (``LockHeld``) or
takes over: the newest scheduler wins, because it carries the hub's current token
and configuration.  Taking over the file lock SIGTERMs the owner and its supervisor
(so the supervisor does not restart what was stopped), waits for the lock, and
SIGKILLs them when the wait runs out.  Taking over the PostgreSQL lock (an owner on
another machine) queues for it: the owner sees the waiter on its next ``check`` and
stops; if it has not when the wait runs out, its lock connection is terminated and
``check`` tells it that it lost the lock.

All of it is blocking and runs before the event loop starts, or (``check``) in a
worker thread.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = "scheduler.lock"
# pg_advisory_lock(int4, int4): one key for "the NothingAI scheduler of this database".
PG_LOCK_KEY = (0x4E4F5448, 1)  # "NOTH", 1
POLL = 0.05
KILL_WAIT = 5.0

log = logging.getLogger(__name__)


class LockHeld(Exception):
    """Another scheduler owns the database; the message says which and what to do (one line)."""


@dataclass
class Owner:
    """Who holds the lock, as written in the lock file."""

    pid: int | None = None
    supervisor: int | None = None
    host: str = ""
    since: str = ""

    def describe(self) -> str:
        parts = [f"pid {self.pid}" if self.pid else "an unknown process"]
        if self.supervisor:
            parts.append(f"supervisor pid {self.supervisor}")
        if self.host and self.host != socket.gethostname():
            parts.append(f"on {self.host}")
        if self.since:
            parts.append(f"since {self.since}")
        return ", ".join(parts)


def read_owner(path: Path) -> Owner | None:
    """The owner named in the lock file; ``None`` if the file is missing or empty."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        data = json.loads(text)
        if isinstance(data, int):
            return Owner(pid=data)
        return Owner(pid=data.get("pid"), supervisor=data.get("supervisor"), host=data.get("host", ""),
                     since=data.get("since", ""))
    except (ValueError, AttributeError):
        return Owner()


def looks_like_scheduler(pid: int) -> bool:
    """Whether ``pid`` is a running scheduler or supervisor (never signal an unrelated process that reused a pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return os.path.isdir(f"/proc/{pid}")
    return b"nothing.scheduler" in cmdline or b"nothing-scheduler" in cmdline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SchedulerLock:
    """The lock of one scheduler on one data dir (and database): ``acquire`` at start, ``release`` at exit."""

    def __init__(self, data_dir: str | Path, db_url: str | None = None, supervisor: int | None = None):
        self.path = Path(data_dir) / LOCK_FILE
        self.db_url = db_url if db_url and db_url.startswith("postgresql") else None
        self.supervisor = supervisor
        self._fd: int | None = None
        self._pg_engine = None
        self._pg_conn = None

    # ------------------------------------------------------------------ taking it
    def acquire(self, takeover: bool = True, timeout: float = 10.0) -> Owner | None:
        """Take both locks; returns the owner that was stopped to take them over, if any.

        Raises ``LockHeld`` if another scheduler holds a lock and ``takeover`` is
        False, or if it could not be stopped.
        """
        previous = self._acquire_file(takeover, timeout)
        if self.db_url:
            try:
                self._acquire_pg(takeover, timeout)
            except BaseException:
                self.release()
                raise
        return previous

    def _try_flock(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _wait_flock(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self._try_flock():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)
        return True

    def _acquire_file(self, takeover: bool, timeout: float) -> Owner | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC (Python's default too): no process the scheduler starts may inherit the lock.
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        previous = None
        if not self._try_flock():
            owner = self._wait_for_owner_record()
            if not takeover:
                self._close_fd()
                raise LockHeld(f"another scheduler ({owner.describe()}) owns {self.path.parent}; not starting "
                               "(NothingScheduler.takeover is False: stop it first)")
            previous = self._take_over(owner, timeout)
        self._write_owner()
        return previous

    def _wait_for_owner_record(self) -> Owner:
        """The holder writes its record right after it takes the lock; give it a moment to."""
        deadline = time.monotonic() + 1.0
        while True:
            owner = read_owner(self.path)
            if (owner and owner.pid) or time.monotonic() >= deadline:
                return owner or Owner()
            time.sleep(POLL)

    def _targets(self, owner: Owner) -> list[int]:
        """The owner and its supervisor: the live ones that are schedulers, and never this process or its parent."""
        ours = {os.getpid(), os.getppid()}
        pids = [p for p in (owner.supervisor, owner.pid) if p]
        return [p for p in pids if p not in ours and _alive(p) and looks_like_scheduler(p)]

    def _take_over(self, owner: Owner, timeout: float) -> Owner:
        started = time.monotonic()
        if owner.host and owner.host != socket.gethostname():
            log.warning("The lock %s names a scheduler on %s; the data dir is shared between machines", self.path,
                        owner.host)
        targets = self._targets(owner)
        if targets:
            log.warning("Another scheduler (%s) owns %s: sending it SIGTERM to take over (the newest scheduler wins; "
                        "set NothingScheduler.takeover = False to refuse instead)", owner.describe(), self.path.parent)
        else:
            log.warning("%s is locked by %s, which is not a scheduler process here: waiting %.0fs for the lock",
                        self.path, owner.describe(), timeout)
        for pid in targets:
            _signal(pid, signal.SIGTERM)
        if not self._wait_flock(timeout):
            targets = self._targets(owner)
            if targets:
                log.warning("The old scheduler (%s) did not stop within %.0fs of SIGTERM: sending SIGKILL",
                            owner.describe(), timeout)
            for pid in targets:
                _signal(pid, signal.SIGKILL)
            if not targets or not self._wait_flock(KILL_WAIT):
                self._close_fd()
                raise LockHeld(f"another scheduler ({owner.describe()}) still holds {self.path} after SIGKILL; "
                               "not starting")
        log.warning("Took over %s from the old scheduler (%s) in %.1fs", self.path.parent, owner.describe(),
                    time.monotonic() - started)
        return owner

    def _write_owner(self) -> None:
        record = {"pid": os.getpid(), "supervisor": self.supervisor, "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        data = (json.dumps(record) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    # ------------------------------------------------------------------ PostgreSQL
    def _pg_connect(self):
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        if self._pg_engine is None:
            name = f"nothing-scheduler pid={os.getpid()} host={socket.gethostname()}"[:63]
            self._pg_engine = create_engine(self.db_url, poolclass=NullPool,
                                            connect_args={"application_name": name})
        return self._pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _acquire_pg(self, takeover: bool, timeout: float) -> None:
        from sqlalchemy import exc, text

        conn = self._pg_connect()
        if conn.execute(text(f"SELECT pg_try_advisory_lock({_PG_ARGS})")).scalar():
            self._pg_conn = conn
            return
        holder = _pg_holder(conn)
        if not takeover:
            conn.close()
            raise LockHeld(f"another scheduler ({holder}) holds the database lock; not starting "
                           "(NothingScheduler.takeover is False: stop it first)")
        log.warning("Another scheduler (%s) holds the database lock: waiting up to %.0fs for it to stop "
                    "(it stops when it sees this one waiting)", holder, timeout)
        for attempt in range(2):
            try:
                conn.execute(text(f"SET lock_timeout = {int(timeout * 1000)}"))
                conn.execute(text(f"SELECT pg_advisory_lock({_PG_ARGS})"))
                conn.execute(text("SET lock_timeout = 0"))
                self._pg_conn = conn
                log.warning("Took over the database lock from %s", holder)
                return
            except exc.OperationalError:
                conn.close()
                if attempt:
                    break
                conn = self._pg_connect()
                log.warning("The other scheduler (%s) did not stop within %.0fs: terminating its lock connection",
                            holder, timeout)
                conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    f"AND {_PG_MATCH}"))
                timeout = KILL_WAIT
        raise LockHeld(f"another scheduler ({holder}) still holds the database lock; not starting")

    def check(self) -> str | None:
        """``None`` while this scheduler may go on; otherwise why it must stop (blocking: call it off the loop).

        Only the PostgreSQL lock can be lost or wanted while held: a file lock is
        taken over by signalling its owner.
        """
        if self._pg_conn is None:
            return None
        from sqlalchemy import exc, text

        try:
            waiting = self._pg_conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                f"AND {_PG_MATCH}")).scalar()
        except exc.DBAPIError:
            self._close_pg_conn()
            # The connection broke: the lock went with it.  Take it back unless someone else has.
            try:
                conn = self._pg_connect()
                if conn.execute(text(f"SELECT pg_try_advisory_lock({_PG_ARGS})")).scalar():
                    self._pg_conn = conn
                    log.warning("The database lock's connection broke; the lock is taken again")
                    return None
                holder = _pg_holder(conn)
                conn.close()
                return f"another scheduler ({holder}) took over the database lock"
            except exc.DBAPIError as e:
                return f"the database lock's connection broke and cannot be made again: {str(e).splitlines()[0]}"
        if waiting:
            return "another scheduler is waiting to take over the database lock (the newest scheduler wins)"
        return None

    # ------------------------------------------------------------------ giving it back
    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _close_pg_conn(self) -> None:
        if self._pg_conn is not None:
            try:
                self._pg_conn.close()
            except Exception:  # noqa: BLE001 - the connection may be gone already, and the lock with it
                pass
            self._pg_conn = None

    def release(self) -> None:
        """Give both locks back (dying does it too: the kernel and PostgreSQL drop them with the process)."""
        self._close_pg_conn()
        if self._pg_engine is not None:
            self._pg_engine.dispose()
            self._pg_engine = None
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                self._close_fd()

    @property
    def held(self) -> bool:
        return self._fd is not None


# Constants, so SQL text rather than parameters (which psycopg might send as bigint).
_PG_ARGS = f"{PG_LOCK_KEY[0]}, {PG_LOCK_KEY[1]}"
_PG_MATCH = f"classid = {PG_LOCK_KEY[0]} AND objid = {PG_LOCK_KEY[1]} AND objsubid = 2"


def _pg_holder(conn) -> str:
    from sqlalchemy import text

    row = conn.execute(text(
        "SELECT a.application_name, a.client_addr, l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        f"WHERE l.locktype = 'advisory' AND l.granted AND {_PG_MATCH}")).first()
    if row is None:
        return "unknown"
    name, addr, backend = row
    return f"{name or 'a client'} from {addr or 'a local socket'}, backend {backend}"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
