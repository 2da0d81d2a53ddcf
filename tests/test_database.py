"""The schema lives in Alembic migrations and works on SQLite and PostgreSQL alike.

Our revision is kept in ``nothing_alembic_version``: the same database holds Optuna's tables, whose revision is in
Alembic's default ``alembic_version``, where releases up to revision 0011 kept ours.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from nothing.scheduler import store
from nothing.scheduler.db import (ALEMBIC_DIR, VERSION_TABLE, Database, alembic_config, current_revision,
                                  upgrade_to_head)
from nothing.scheduler.orm import Base
from nothing.scheduler.states import RunState

from .conftest import build_dispatcher
from .helpers import make_archive, wait_for

HEAD = ScriptDirectory(str(ALEMBIC_DIR)).get_current_head()
# The last revision of the releases that kept it in ``alembic_version``.
LAST_IN_SHARED_TABLE = "0011"


def test_sqlite_database_uses_wal_and_is_created_by_migrations(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 's.sqlite'}")
    assert db.upgrade() == HEAD
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    tables = set(inspect(db.engine).get_table_names())
    assert tables >= {"runs", "run_events", VERSION_TABLE} and "alembic_version" not in tables
    db.close()


def test_migrations_match_the_models(tmp_path):
    """Upgrading to head builds the same columns the ORM declares."""
    engine = create_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    upgrade_to_head(engine)
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}


def test_a_database_at_the_first_revision_is_upgraded_without_losing_runs(tmp_path):
    """A database made by an older release (revision 0001) keeps its runs across the upgrade."""
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "insert into runs (owner, name, experiment, entry_point, args, hyperparameters, snapshot_bytes, gpus, "
            "cpus, memory_bytes, priority, state, reason, submitted_at, assigned_gpus, run_dir, log_path) values "
            "('old', '', 'default', 't.py', '[]', '{}', 0, 1, 1, 0, 0, 'COMPLETE', 'exited with code 0', "
            "'2026-01-01 00:00:00', '[]', '/x', '/x/output.log')"))
    db = Database(url)
    assert db.upgrade() == HEAD
    run = db.run_sync(store.get_run, 1)
    assert (run.owner, run.state, run.group, run.preemptible) == ("old", RunState.COMPLETE, "", False)
    db.close()


def test_downgrade_removes_the_schema_and_upgrade_restores_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    engine = create_engine(url)
    upgrade_to_head(engine)
    cfg = alembic_config(url)
    command.downgrade(cfg, "base")
    assert current_revision(engine) is None
    assert "runs" not in inspect(engine).get_table_names()
    upgrade_to_head(engine)
    assert current_revision(engine) == HEAD


@pytest.mark.postgres
async def test_scheduler_runs_on_postgresql(tmp_path, postgres_url):
    dispatcher = build_dispatcher(tmp_path, db_url=postgres_url)
    await dispatcher.start()
    try:
        run = await dispatcher.submit(
            dict(owner="pg", name="", experiment="default", entry_point="t.py", args=[], hyperparameters={"a": "1"},
                 gpus=1, cpus=1, memory_bytes=0, priority=0, max_seconds=None, snapshot_bytes=0),
            make_archive({"t.py": "print('on postgres')"}),
        )
        await wait_for(lambda: run.id not in dispatcher.active, 20)
        row = await dispatcher.db.run(store.get_run, run.id)
        assert row.state == RunState.COMPLETE and row.hyperparameters == {"a": "1"}
        events = await dispatcher.db.run(store.run_events, run.id)
        assert events[-1].to_state == RunState.COMPLETE
        with dispatcher.db.engine.connect() as conn:
            assert conn.execute(text(f"select version_num from {VERSION_TABLE}")).scalar() == HEAD
    finally:
        await dispatcher.stop()
        dispatcher.db.close()


async def test_concurrent_work_shares_transactions_but_a_failure_stays_its_own(tmp_path):
    """Group commit: a failing statement rolls back only the call that made it."""
    db = Database(f"sqlite:///{tmp_path / 'g.sqlite'}")
    try:
        await db.run(lambda s: s.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)")))

        def insert(session, k):
            session.execute(text("INSERT INTO t (k) VALUES (:k)"), {"k": k})
            return k

        from sqlalchemy import event

        commits = []
        event.listen(db.engine, "commit", lambda conn: commits.append(1))
        working = threading.Event()

        def hold(session):
            """A busy call: the database thread takes it alone, and the calls sent meanwhile wait together."""
            working.set()
            time.sleep(0.3)
        busy = asyncio.ensure_future(db.run(hold))  # the next five queue up meanwhile
        await wait_for(working.is_set, timeout=10, message="the database thread to take the busy call")
        assert await asyncio.gather(*(db.run(insert, k) for k in [10, 11, 12, 13, 14])) == [10, 11, 12, 13, 14]
        await busy
        assert len(commits) == 1, "five calls queued behind a busy one should share one transaction"
        await db.run(lambda s: s.execute(text("DELETE FROM t")))

        working.clear()
        busy = asyncio.ensure_future(db.run(hold))
        await wait_for(working.is_set, timeout=10, message="the database thread to take the busy call")
        results = await asyncio.gather(*(db.run(insert, k) for k in [1, 2, 2, 3, 4]), return_exceptions=True)
        await busy
        assert results[:2] == [1, 2] and results[3:] == [3, 4]
        assert "UNIQUE" in str(results[2])
        assert await db.run(lambda s: [k for (k,) in s.execute(text("SELECT k FROM t ORDER BY k"))]) == [1, 2, 3, 4]
    finally:
        db.close()


def test_runs_from_before_job_references_keep_their_process_as_reference(tmp_path):
    """Revision 0005 turns a local run's pid and start time into its job reference, so a restart re-attaches."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from nothing.scheduler.db import alembic_config

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(text("INSERT INTO runs (id, owner, name, experiment, entry_point, args, hyperparameters, gpus, "
                          "cpus, memory_bytes, priority, state, reason, submitted_at, assigned_gpus, run_dir, "
                          "log_path, pid, process_start, snapshot_bytes, preemptible) VALUES (1, 'alice', '', "
                          "'default', 't.py', '[]', '{}', 1, 1, 0, 0, 'RUNNING', 'x', '2026-12-01 00:00:00', '[0]', "
                          "'/r', '/r/l', 4242, '99887', 0, 0)"))
    engine.dispose()
    db = Database(url)
    assert db.upgrade() == HEAD
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT job_ref FROM runs WHERE id = 1")).scalar() == "4242 99887"
    db.close()


# ---------------------------------------------------------------------- the version table moved out of Optuna's way
def made_the_old_way(url: str, revision: str = LAST_IN_SHARED_TABLE) -> None:
    """A database as releases up to 0011 left it: the schema at ``revision``, the revision in ``alembic_version``
    (Alembic's default table, made with Alembic's own DDL for it), a run in it."""
    engine = create_engine(url)
    command.upgrade(alembic_config(url), revision)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                          "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:r)"), {"r": revision})
        conn.execute(text(
            "insert into runs (owner, name, experiment, entry_point, args, hyperparameters, snapshot_bytes, gpus, "
            "cpus, memory_bytes, priority, state, reason, submitted_at, assigned_gpus, run_dir, log_path, "
            "preemptible) values ('old', '', 'default', 't.py', '[]', '{}', 0, 1, 1, 0, 0, 'COMPLETE', "
            "'exited with code 0', '2026-01-01 00:00:00', '[]', '/x', '/x/output.log', false)"))
    engine.dispose()


def versions(engine) -> dict[str, list[str]]:
    tables = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {t: [r for (r,) in conn.execute(text(f"SELECT version_num FROM {t}"))]
                for t in (VERSION_TABLE, "alembic_version") if t in tables}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request, tmp_path):
    """A URL of an empty database of each kind (on PostgreSQL a database of its own on the session's server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.sqlite'}"
    from sqlalchemy.engine import make_url

    server = make_url(request.getfixturevalue("postgres_url"))
    name = f"old_{tmp_path.name.lower().replace('-', '_')}"[:60]
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def test_a_database_at_0011_made_the_old_way_keeps_its_revision_in_our_table_and_works(empty_database, tmp_path):
    """The revision moves from ``alembic_version`` into ours, in place; the runs stay; then Optuna's RDB storage
    makes its tables in the same database and its own revision in ``alembic_version``, and neither disturbs the
    other at the next starts."""
    import optuna

    from nothing.scheduler.tuning_studies import database_storage

    made_the_old_way(empty_database)
    db = Database(empty_database)
    try:
        assert db.upgrade() == HEAD
        assert versions(db.engine) == {VERSION_TABLE: [HEAD]}
        run = db.run_sync(store.get_run, 1)
        assert (run.owner, run.state) == ("old", RunState.COMPLETE)

        storage = database_storage(empty_database)  # as the tuning controller makes it
        study = optuna.create_study(storage=storage, study_name="tuning-1")
        study.tell(study.ask(), 1.0)
        optuna_revision = storage.get_head_version()
        assert versions(db.engine) == {VERSION_TABLE: [HEAD], "alembic_version": [optuna_revision]}
        storage.engine.dispose()

        assert db.upgrade() == HEAD  # the next start: Optuna's row is not ours and stays
        assert versions(db.engine) == {VERSION_TABLE: [HEAD], "alembic_version": [optuna_revision]}
        assert current_revision(db.engine) == HEAD
        again = optuna.storages.RDBStorage(empty_database)  # Optuna still finds its schema current
        assert [t.value for t in optuna.load_study(study_name="tuning-1", storage=again).trials] == [1.0]
        again.engine.dispose()
    finally:
        db.close()


def test_a_database_at_an_older_revision_made_the_old_way_is_upgraded_from_it(tmp_path):
    """The moved revision is where the upgrade starts: 0010's database gets 0011's change."""
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    made_the_old_way(url, "0010")
    db = Database(url)
    assert db.upgrade() == HEAD
    assert versions(db.engine) == {VERSION_TABLE: [HEAD]}
    db.close()


def test_an_alembic_version_row_of_optunas_alone_is_left_alone(tmp_path):
    """A database whose ``alembic_version`` holds another revision (Optuna's) gets our schema beside it."""
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('v3.2.0.a')"))
    assert upgrade_to_head(engine) == HEAD
    assert versions(engine) == {VERSION_TABLE: [HEAD], "alembic_version": ["v3.2.0.a"]}
