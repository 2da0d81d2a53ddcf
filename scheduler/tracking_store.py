"""Reading and writing experiments, metric points and storage figures: the SQL of what runs leave behind.

Like ``store`` (which keeps the runs' life cycle), every function takes a session
first and runs on the database thread (``Database.run``).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .endpoint_store import runtime_run_users
from .models import models_made_from_run
from .orm import Experiment, IdHighWater, MetricPoint, Run, RunEvent
from .states import ACTIVE

_INSERT_POINT = insert(MetricPoint)
_INSERT_SQLITE = "INSERT INTO metric_points (run_id, name, step, at, value) VALUES (?, ?, ?, ?, ?)"
# Points per insert statement: bounds the parameters one statement holds in memory.
POINT_CHUNK = 500


class ExperimentHasRuns(Exception):
    def __init__(self, count: int):
        super().__init__(f"{count} runs")
        self.count = count


class ExperimentExists(Exception):
    pass


# ------------------------------------------------------------------ experiments
def ensure_experiment(session: Session, owner: str, name: str, group: str, at: datetime) -> None:
    """The experiment ``name`` of ``owner``, made if new (a run names it with ``--experiment``)."""
    dialect = session.get_bind().dialect.name
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = maker(Experiment).values(owner=owner, name=name, description="", group=group, created_at=at,
                                    updated_at=at).on_conflict_do_nothing(index_elements=["owner", "name"])
    session.execute(stmt)


def create_experiment(session: Session, owner: str, name: str, description: str, group: str,
                      at: datetime, metric_rules: list | None = None) -> Experiment:
    if get_experiment(session, owner, name) is not None:
        raise ExperimentExists(name)
    row = Experiment(owner=owner, name=name, description=description, group=group, created_at=at, updated_at=at,
                     metric_rules=metric_rules)
    session.add(row)
    session.flush()
    return row


def get_experiment(session: Session, owner: str, name: str) -> Experiment | None:
    return session.execute(select(Experiment).where(Experiment.owner == owner, Experiment.name == name)).scalar()


def list_experiments(session: Session, owner: str | None) -> list[Experiment]:
    q = select(Experiment).order_by(Experiment.owner, Experiment.name)
    if owner is not None:
        q = q.where(Experiment.owner == owner)
    return list(session.execute(q).scalars())


def experiment_runs(session: Session, owner: str | None, names: list[str] | None = None) -> list[Any]:
    """``(owner, experiment, state, submitted_at, ended_at, metric_summary, metric_rules)`` of the runs."""
    q = select(Run.owner, Run.experiment, Run.state, Run.submitted_at, Run.ended_at, Run.metric_summary,
               Run.metric_rules)
    if owner is not None:
        q = q.where(Run.owner == owner)
    if names is not None:
        q = q.where(Run.experiment.in_(names))
    return list(session.execute(q))


UNCHANGED: Any = object()


def update_experiment(session: Session, owner: str, name: str, new_name: str | None, description: str | None,
                      at: datetime, metric_rules: Any = UNCHANGED) -> Experiment | None:
    """Rename and/or describe; a rename moves the runs along.  None when it does not exist."""
    row = get_experiment(session, owner, name)
    if row is None:
        return None
    if new_name is not None and new_name != name:
        if get_experiment(session, owner, new_name) is not None:
            raise ExperimentExists(new_name)
        session.execute(update(Run).where(Run.owner == owner, Run.experiment == name).values(experiment=new_name))
        row.name = new_name
    if description is not None:
        row.description = description
    if metric_rules is not UNCHANGED:
        row.metric_rules = metric_rules
    row.updated_at = at
    session.flush()
    return row


def delete_experiment(session: Session, owner: str, name: str) -> bool:
    """Deleted (True), absent (False); ``ExperimentHasRuns`` while runs remain (as in the seed)."""
    row = get_experiment(session, owner, name)
    if row is None:
        return False
    left = session.execute(select(func.count()).select_from(Run).where(
        Run.owner == owner, Run.experiment == name)).scalar()
    if left:
        raise ExperimentHasRuns(left)
    session.delete(row)
    return True


# ------------------------------------------------------------------ metrics
def run_tracking(session: Session, run_id: int) -> Any:
    """What the collector resumes from: offsets, rules, summary, points stored, disk bytes (None: no run).

    A run that names no metric rules reads its experiment's (``experiment_rules``).
    """
    return session.execute(select(
        Run.id, Run.owner, Run.group, Run.run_dir, Run.log_path, Run.metric_rules, Run.metric_summary,
        Run.metric_points, Run.log_read_offset, Run.report_read_offset, Run.disk_bytes, Run.state,
        Run.started_at, Run.checkpoint_steps, Experiment.metric_rules.label("experiment_rules"))
        .outerjoin(Experiment, (Experiment.owner == Run.owner) & (Experiment.name == Run.experiment))
        .where(Run.id == run_id)).first()


def recently_ended(session: Session, since: datetime) -> list[int]:
    return list(session.execute(select(Run.id).where(Run.ended_at >= since)).scalars())


def _db_value(value: float) -> float | None:
    """NaN is stored as NULL (SQLite cannot store it); infinities are stored as they are."""
    return None if math.isnan(value) else value


class StaleProgress(Exception):
    """The run's stored read offsets are not the ones a store started from: another store came first (a call
    sent again after its answer was lost), or the run was deleted.  Nothing of this store is kept."""


def store_points(session: Session, run_id: int, points: list, summary: dict, stored: int, log_offset: int,
                 report_offset: int, checkpoint_steps: dict | None = None,
                 expected: tuple[int, int, int] | None = None) -> None:
    """The points, the new summary and how far the files were read, in one transaction: a crash
    between reading and writing reads the same bytes again, and never stores a point twice.

    With ``expected`` (the log offset, report offset and point count the read started from) the
    store happens only if the run still has them, else ``StaleProgress`` rolls it all back: a read
    done twice is stored once.  The run's row is written first, so a stale store inserts nothing.
    """
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite:  # the driver's own statements: the tracker stores a hundred runs a second, each in a transaction
        sets = "metric_summary = ?, metric_points = ?, log_read_offset = ?, report_read_offset = ?"
        params: list = [json.dumps(summary), stored, log_offset, report_offset]
        if checkpoint_steps is not None:
            sets += ", checkpoint_steps = ?"
            params.append(json.dumps(checkpoint_steps))
        where = "id = ?"
        params.append(run_id)
        if expected is not None:
            where += " AND log_read_offset = ? AND report_read_offset = ? AND metric_points = ?"
            params.extend(expected)
        changed = session.connection().exec_driver_sql(f"UPDATE runs SET {sets} WHERE {where}", tuple(params))
    else:
        values = dict(metric_summary=summary, metric_points=stored, log_read_offset=log_offset,
                      report_read_offset=report_offset)
        if checkpoint_steps is not None:
            values["checkpoint_steps"] = checkpoint_steps
        q = update(Run).where(Run.id == run_id)
        if expected is not None:
            q = q.where(Run.log_read_offset == expected[0], Run.report_read_offset == expected[1],
                        Run.metric_points == expected[2])
        changed = session.execute(q.values(**values))
    if changed.rowcount != 1:
        raise StaleProgress(f"run {run_id}")
    for i in range(0, len(points), POINT_CHUNK):
        chunk = points[i:i + POINT_CHUNK]
        if sqlite:  # the driver's executemany of tuples: several times cheaper per row than the Core insert
            session.connection().exec_driver_sql(
                _INSERT_SQLITE, [(run_id, p.name, p.step, p.at, None if p.value != p.value else p.value)
                                 for p in chunk])
        else:
            session.execute(_INSERT_POINT, [
                {"run_id": run_id, "name": p.name, "step": p.step, "at": p.at, "value": _db_value(p.value)}
                for p in chunk])


def metric_series(session: Session, run_id: int, names: list[str] | None, limit: int) -> list[Any]:
    """``(name, step, at, value)`` by name then step; at most ``limit`` points."""
    q = select(MetricPoint.name, MetricPoint.step, MetricPoint.at, MetricPoint.value).where(
        MetricPoint.run_id == run_id)
    if names:
        q = q.where(MetricPoint.name.in_(names))
    return list(session.execute(q.order_by(MetricPoint.name, MetricPoint.step, MetricPoint.id).limit(limit)))


def metrics_at_steps(session: Session, run_id: int, steps: list[int]) -> dict[int, dict[str, float | None]]:
    """The values reported at each of ``steps`` (the last one of a name at a step wins)."""
    out: dict[int, dict[str, float | None]] = {}
    if not steps:
        return out
    q = select(MetricPoint.step, MetricPoint.name, MetricPoint.value).where(
        MetricPoint.run_id == run_id, MetricPoint.step.in_(sorted(set(steps))[:1000])).order_by(MetricPoint.id)
    for step, name, value in session.execute(q):
        out.setdefault(step, {})[name] = value
    return out


# ------------------------------------------------------------------ storage and deletion
def set_disk_bytes(session: Session, sizes: dict[int, int]) -> None:
    for run_id, size in sizes.items():
        session.execute(update(Run).where(Run.id == run_id).values(disk_bytes=size))


def storage_by_owner_and_group(session: Session) -> tuple[dict[str, int], dict[str, int]]:
    users = dict(session.execute(select(Run.owner, func.sum(Run.disk_bytes)).group_by(Run.owner)).all())
    groups = dict(session.execute(select(Run.group, func.sum(Run.disk_bytes)).where(Run.group != "")
                                  .group_by(Run.group)).all())
    return {k: int(v or 0) for k, v in users.items()}, {k: int(v or 0) for k, v in groups.items()}


def _checkpoint_users(session: Session, run_id: int) -> list[str]:
    q = select(Run.id, Run.state).where(Run.checkpoint_run == run_id, Run.state.in_(list(ACTIVE)))
    return [f"run {i} ({s.value}) starts from its checkpoints" for i, s in session.execute(q)]


# What keeps a run from being deleted: each rule returns sentences naming what is in the way.
RUN_DELETION_RULES: list = [_checkpoint_users, models_made_from_run, runtime_run_users]


def run_deletion_blockers(session: Session, run_id: int, by_owner_object: bool = False) -> list[str]:
    """``by_owner_object``: the run goes with the object it belongs to (a batch inference's job), which allows it."""
    return [reason for rule in RUN_DELETION_RULES if not (by_owner_object and rule is runtime_run_users)
            for reason in rule(session, run_id)]


def note_deleted_run_id(session: Session, run_id: int) -> None:
    """Keep ``run_id`` as the high-water mark if it is the largest yet: its number is never given again."""
    row = session.get(IdHighWater, "runs")
    if row is None:
        session.add(IdHighWater(name="runs", value=run_id))
    elif row.value < run_id:
        row.value = run_id


def delete_run(session: Session, run_id: int, by_owner_object: bool = False) -> bool:
    """The run's rows: the run, its events and its metric points; False when a rule now forbids it."""
    if run_deletion_blockers(session, run_id, by_owner_object):
        return False
    session.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id))
    session.execute(delete(RunEvent).where(RunEvent.run_id == run_id))
    session.execute(delete(Run).where(Run.id == run_id))
    note_deleted_run_id(session, run_id)
    return True
