"""Database access that never blocks the event loop.

All SQLAlchemy work runs on one dedicated thread (``Database.run``), so
coroutines await it like any other I/O and SQLite sees a single writer.  Work
that arrives while a transaction is being written joins the next one (group
commit): under a burst of submissions the cost of a commit is shared.  At start
the schema is brought to the newest Alembic revision, kept in a version table of
our own name (``nothing_alembic_version``): Optuna's studies live in the same
database (``tuning_studies.py``), and Optuna's schema keeps its revision in
Alembic's default table, ``alembic_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

T = TypeVar("T")
log = logging.getLogger(__name__)

ALEMBIC_DIR = Path(__file__).parent / "alembic"
VERSION_TABLE = "nothing_alembic_version"
# Where releases up to revision 0011 kept it; Optuna's RDB storage keeps its own revision there.
SHARED_VERSION_TABLE = "alembic_version"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def make_engine(url: str, busy_timeout: float = 30.0) -> Engine:
    """An engine with SQLite tuned for one writer and many readers (WAL)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migration_context(conn: Connection) -> MigrationContext:
    """Alembic's view of our revision, in our version table (``alembic/env.py`` migrates with the same)."""
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})


def upgrade_to_head(engine: Engine) -> str:
    """Bring the schema to the head revision; returns it."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    with engine.connect() as conn, _foreign_keys_off(conn):
        with conn.begin():
            move_revision_out_of_shared_table(conn, script)
            current = migration_context(conn).get_current_revision()
            if current != head:
                log.info("Upgrading scheduler database from revision %s to %s", current, head)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
    return head


@contextlib.contextmanager
def _foreign_keys_off(conn: Connection):
    """SQLite rebuilds a table to change it (batch mode), and dropping the old copy with foreign keys on
    deletes every row that references it (``ON DELETE CASCADE``): revision 0011 so lost every tuning's
    trials.  Off for the migration (SQLite reads the pragma only outside a transaction), checked after."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    conn.commit()
    try:
        yield
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        conn.commit()
        if broken:
            raise RuntimeError(f"the migration left rows whose references are gone: {broken[:5]}")
    finally:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()


def move_revision_out_of_shared_table(conn: Connection, script: ScriptDirectory) -> None:
    """Move our revision from ``alembic_version`` (releases up to 0011 kept it there) into our version table.

    Only a row holding one of our revisions moves; a row of Optuna's stays. The table is dropped once
    it is empty (it was Alembic's for us), so that Optuna's storage makes and stamps its own.
    """
    if not inspect(conn).has_table(SHARED_VERSION_TABLE):
        return
    ours = {r.revision for r in script.walk_revisions()}
    rows = [r for (r,) in conn.execute(text(f"SELECT version_num FROM {SHARED_VERSION_TABLE}"))]
    mine = [r for r in rows if r in ours]
    if not mine:
        return
    context = migration_context(conn)
    if context.get_current_revision() is None:
        assert len(mine) == 1, f"several of our revisions in {SHARED_VERSION_TABLE}: {mine}"
        log.info("Moving the scheduler database's revision %s from %s to %s", mine[0], SHARED_VERSION_TABLE,
                 VERSION_TABLE)
        context.stamp(script, mine[0])
    for revision in mine:  # with our table already stamped, a leftover: ours is the one in our table
        conn.execute(text(f"DELETE FROM {SHARED_VERSION_TABLE} WHERE version_num = :r"), {"r": revision})
    if len(mine) == len(rows):
        conn.execute(text(f"DROP TABLE {SHARED_VERSION_TABLE}"))


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return migration_context(conn).get_current_revision()


class Database:
    """Runs session-scoped callables on a single thread, several to a transaction.

    A callable given to ``run`` must only touch the database: if another one in
    its transaction fails, the transaction is rolled back and each is run again
    in a transaction of its own.
    """

    max_batch = 64

    def __init__(self, url: str, busy_timeout: float = 30.0):
        self.url = url
        self.engine = make_engine(url, busy_timeout)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="nothing-db", daemon=True)
        self._thread.start()

    def upgrade(self) -> str:
        revision = upgrade_to_head(self.engine)
        self._restrict_files()
        return revision

    def _restrict_files(self) -> None:
        """An SQLite database (and its WAL) is the scheduler's alone: users' runs must not read it."""
        path = self.engine.url.database if self.engine.url.get_backend_name() == "sqlite" else None
        if not path or path == ":memory:":
            return
        for name in (path, path + "-wal", path + "-shm"):
            try:
                os.chmod(name, 0o600)
            except FileNotFoundError:
                pass

    def _in_session(self, fn: Callable[..., T], args) -> T:
        with self.sessions() as session:
            with session.begin():
                return fn(session, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Await ``fn(session, *args)`` inside a transaction on the database thread."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, args, loop, future))
        return await future

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self._in_session(fn, args)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.engine.dispose()

    # ------------------------------------------------------------------ the database thread
    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            while batch[-1] is not None and len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is None
            work = [item for item in batch if item is not None]
            if work:
                self._deliver(work, self._run_batch(work))
            if done:
                return

    def _run_batch(self, work: list) -> list[tuple[bool, Any]]:
        if len(work) > 1:
            try:
                with self.sessions() as session:
                    with session.begin():
                        return [(True, fn(session, *args)) for fn, args, _, _ in work]
            except Exception:
                pass  # rolled back: find the one that failed by running each alone
        outcomes = []
        for fn, args, _, _ in work:
            try:
                outcomes.append((True, self._in_session(fn, args)))
            except Exception as e:  # noqa: BLE001 - handed to the awaiting coroutine
                outcomes.append((False, e))
        return outcomes

    @staticmethod
    def _deliver(work: list, outcomes: list[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (_, _, loop, future), outcome in zip(work, outcomes):
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, results)
            except RuntimeError:
                pass  # that loop has closed; nobody is waiting any more


def _resolve(results: list) -> None:
    for future, (ok, value) in results:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
