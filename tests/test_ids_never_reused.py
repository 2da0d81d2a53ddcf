"""An id names one object for ever: a deleted object's id is not handed out again, not even after a restart, and
the upgrade that made it so keeps every row (SQLite rebuilds a table to change it, which must not cascade)."""

from __future__ import annotations

from datetime import datetime

from alembic import command
from sqlalchemy import text
from sqlalchemy.orm import Session

from nothing.scheduler import store
from nothing.scheduler import tracking_store as ts
from nothing.scheduler.db import Database, alembic_config, make_engine, upgrade_to_head
from nothing.scheduler.orm import Dataset, DatasetVersion, MetricPoint

from .conftest import running_dispatcher
from .test_dispatcher import ended, submit

AT = datetime(2026, 11, 1)


def _at_revision_0010_with_rows(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        config = alembic_config(url)
        config.attributes["connection"] = conn
        command.upgrade(config, "0010")
    with Session(engine) as session, session.begin():
        store.insert_run(session, 1, {"owner": "alice", "entry_point": "t.py"}, "/r/1", "/r/1/output.log", AT)
        session.add(MetricPoint(run_id=1, name="loss", step=0, at=0.0, value=0.5))
        dataset = Dataset(owner="alice", namespace="alice", name="d", created_at=AT)
        dataset.versions.append(DatasetVersion(version=1, created_at=AT, created_by="alice", files=1, bytes=1))
        session.add(dataset)
        session.execute(text(
            "INSERT INTO tunings (id, owner, \"group\", name, experiment, state, state_detail, reason, spec, "
            "trial_fields, owner_groups, archive_path, study_name, created_at) VALUES (1, 'alice', '', 't', 'e', "
            "'RUNNING', '', '', '{}', '{}', '[]', '', 'tuning-1', :at)"), {"at": AT})
        session.execute(text("INSERT INTO tuning_trials (tuning_id, number, params, state, early_stop, created_at) "
                             "VALUES (1, 0, '{}', 'RUNNING', 0, :at)"), {"at": AT})
    engine.dispose()


def test_the_upgrade_keeps_every_row_that_references_a_rebuilt_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    _at_revision_0010_with_rows(url)
    engine = make_engine(url)
    upgrade_to_head(engine)
    with engine.connect() as conn:
        count = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                 for t in ("runs", "run_events", "metric_points", "datasets", "dataset_versions", "tunings",
                           "tuning_trials")}
        assert count == {"runs": 1, "run_events": 2, "metric_points": 1, "datasets": 1, "dataset_versions": 1,
                         "tunings": 1, "tuning_trials": 1}
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1  # on again for the service's work
    engine.dispose()


async def test_a_deleted_newest_runs_id_is_not_given_again_after_a_restart(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        first = await submit(d, "pass", gpus=0)
        newest = await submit(d, "pass", gpus=0)
        await ended(d, first), await ended(d, newest)
        assert await d.db.run(ts.delete_run, newest.id)
    async with running_dispatcher(tmp_path) as d:  # the next life numbers runs from what is stored
        after = await submit(d, "pass", gpus=0)
        assert after.id == newest.id + 1
        await ended(d, after)


def test_a_deleted_newest_experiments_and_datasets_ids_are_not_given_again(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 's.sqlite'}")
    db.upgrade()
    old = db.run_sync(lambda s: ts.create_experiment(s, "alice", "old", "", "", AT).id)
    assert db.run_sync(ts.delete_experiment, "alice", "old")
    new = db.run_sync(lambda s: ts.create_experiment(s, "alice", "new", "", "", AT).id)
    assert new == old + 1

    def add_dataset(session, name):
        row = Dataset(owner="alice", namespace="alice", name=name, created_at=AT)
        session.add(row)
        session.flush()
        return row.id

    gone = db.run_sync(add_dataset, "gone")
    db.run_sync(lambda s: s.delete(s.get(Dataset, gone)))
    assert db.run_sync(add_dataset, "next") == gone + 1
    db.close()
