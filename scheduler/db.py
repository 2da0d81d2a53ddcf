"""Database access that never blocks the event loop.

All SQLAlchemy work runs on one dedicated worker thread (``Database.run``), so
coroutines await it like any other I/O and SQLite sees a single writer.  At start
the schema is brought to the newest Alembic revision.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

T = TypeVar("T")
log = logging.getLogger(__name__)

ALEMBIC_DIR = Path(__file__).parent / "alembic"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def make_engine(url: str) -> Engine:
    """An engine with SQLite tuned for one writer and many readers (WAL)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade_to_head(engine: Engine) -> str:
    """Bring the schema to the head revision; returns it."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current != head:
            log.info("Upgrading scheduler database from revision %s to %s", current, head)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class Database:
    """Runs session-scoped callables on a single worker thread."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nothing-db")

    def upgrade(self) -> str:
        return upgrade_to_head(self.engine)

    def _in_session(self, fn: Callable[..., T], args) -> T:
        with self.sessions() as session:
            with session.begin():
                return fn(session, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Await ``fn(session, *args)`` inside one transaction on the DB thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._in_session, fn, args)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self._in_session(fn, args)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.engine.dispose()
