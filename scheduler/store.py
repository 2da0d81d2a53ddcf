"""Reading and writing runs: the only module that builds SQL for the dispatcher and the API.

Every function takes a session as its first argument and runs on the database
thread (``Database.run``); none of them touches the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .orm import IdHighWater, NotebookGpus, Run, RunEvent
from .states import ACTIVE, RunState
from .tracking_store import ensure_experiment


@dataclass
class Transition:
    run_id: int
    from_state: RunState | None
    to_state: RunState
    reason: str
    at: datetime
    fields: dict[str, Any] = field(default_factory=dict)


class DuplicateSubmission(Exception):
    """A submission repeated an earlier one's client key (a client's retry): ``run`` is the run it made."""

    def __init__(self, run: Run):
        super().__init__(f"run {run.id} was submitted with this key already")
        self.run = run


def is_integrity_error(error: BaseException) -> bool:
    """Whether a write failed on a constraint (such as the unique client key of a racing duplicate)."""
    return isinstance(error, IntegrityError)


_INSERT_RUN = insert(Run)
_INSERT_EVENT = insert(RunEvent)


def max_run_id(session: Session) -> int | None:
    """The largest run id ever given: of the runs there are, or of a deleted one (``id_high_water``)."""
    there = session.execute(select(func.max(Run.id))).scalar()
    deleted = session.execute(select(IdHighWater.value).where(IdHighWater.name == "runs")).scalar()
    return max((i for i in (there, deleted) if i is not None), default=None)


def _column_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The Python-side defaults of ``runs``: plain values (None where there is none), and factories (lists, dicts)."""
    values, factories = {}, {}
    for column in Run.__table__.columns:
        default = column.default
        if default is not None and default.is_callable:
            factories[column.key] = default.arg
        else:
            values[column.key] = default.arg if default is not None else None
    return values, factories


_RUN_DEFAULTS, _RUN_DEFAULT_FACTORIES = _column_defaults()


def insert_run(session: Session, run_id: int, values: dict[str, Any], run_dir: str, log_path: str,
               at: datetime) -> SimpleNamespace:
    """Insert a run that goes straight from CREATE REQUESTED to QUEUED (its snapshot is already stored).

    Pre-built Core statements rather than the ORM's unit of work, and a plain
    record with the attributes of a ``Run`` in return: this is the submit hot path.
    ``values["client_key"]``, when given, must be new for the owner: a second run
    with the same owner and key fails on the unique index (``is_integrity_error``).
    """
    row = dict(_RUN_DEFAULTS, **{key: make(None) for key, make in _RUN_DEFAULT_FACTORIES.items()})
    row.update(values, id=run_id, state=RunState.QUEUED, reason="waiting to be scheduled", submitted_at=at,
               run_dir=run_dir, log_path=log_path, assigned_gpus=[])
    conn = session.connection()
    conn.execute(_INSERT_RUN, row)
    conn.execute(_INSERT_EVENT, [
        dict(run_id=run_id, at=at, from_state=None, to_state=RunState.CREATE_REQUESTED, reason="submitted"),
        dict(run_id=run_id, at=at, from_state=RunState.CREATE_REQUESTED, to_state=RunState.QUEUED,
             reason="snapshot checked and stored; waiting to be scheduled"),
    ])
    ensure_experiment(session, row["owner"], row["experiment"], row["group"], at)  # every run belongs to one
    return SimpleNamespace(**row)


def apply_transitions(session: Session, transitions: list[Transition]) -> None:
    """Write state changes (grouped by the set of fields they touch) and their events."""
    if not transitions:
        return
    groups: dict[tuple[str, ...], list[dict]] = {}
    for t in transitions:
        params = dict(t.fields, state=t.to_state, reason=t.reason)
        groups.setdefault(tuple(sorted(params)), []).append(dict(params, run_id=t.run_id))
    conn = session.connection()
    for keys, rows in groups.items():
        conn.execute(_update_statement(keys), [{f"p_{k}": v for k, v in row.items()} for row in rows])
    conn.execute(_INSERT_EVENT, [
        dict(run_id=t.run_id, at=t.at, from_state=t.from_state, to_state=t.to_state, reason=t.reason)
        for t in transitions
    ])


@lru_cache(maxsize=64)
def _update_statement(keys: tuple[str, ...]):
    return update(Run).where(Run.id == bindparam("p_run_id")).values({k: bindparam(f"p_{k}") for k in keys})


def active_runs(session: Session) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.state.in_(list(ACTIVE))).order_by(Run.id)))


def get_run(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def run_by_client_key(session: Session, owner: str, client_key: str) -> Run | None:
    """The owner's run submitted with ``client_key`` (one lookup in the unique index), if any."""
    return session.scalars(select(Run).where(Run.owner == owner, Run.client_key == client_key)).first()


def _run_filters(owner: str | None, states: list[RunState] | None, experiment: str | None,
                 since: datetime | None, kind: str | None = "train") -> list:
    conditions = [] if kind is None else [Run.kind == kind]
    if owner is not None:
        conditions.append(Run.owner == owner)
    if states:
        conditions.append(Run.state.in_(states))
    if experiment is not None:
        conditions.append(Run.experiment == experiment)
    if since is not None:
        conditions.append(Run.submitted_at >= since)
    return conditions


def list_runs(session: Session, owner: str | None, states: list[RunState] | None, limit: int, offset: int,
              experiment: str | None = None, since: datetime | None = None, kind: str | None = "train") -> list[Run]:
    """One page of runs, newest first: ``experiment`` matches exactly, ``since`` keeps runs submitted at or
    after it (naive UTC), ``kind`` is training runs by default (None: every kind)."""
    query = select(Run).where(*_run_filters(owner, states, experiment, since, kind))
    return list(session.scalars(query.order_by(Run.id.desc()).limit(limit).offset(offset)))


def count_runs(session: Session, owner: str | None, states: list[RunState] | None, experiment: str | None = None,
               since: datetime | None = None, kind: str | None = "train") -> int:
    """How many runs ``list_runs`` with the same filters has over all its pages."""
    return session.scalar(select(func.count()).select_from(Run).where(
        *_run_filters(owner, states, experiment, since, kind)))


def usage_history(session: Session, since: datetime) -> list[tuple]:
    """``(owner, group, gpus, started_at, ended_at, finished)`` of runs that ended since ``since``."""
    query = select(Run.owner, Run.group, Run.gpus, Run.started_at, Run.ended_at, Run.state).where(
        Run.ended_at >= since, Run.started_at.is_not(None), Run.gpus > 0)
    return [(o, g, n, s, e, state == RunState.COMPLETE) for o, g, n, s, e, state in session.execute(query)]


def run_events(session: Session, run_id: int) -> list[RunEvent]:
    return list(session.scalars(select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id)))


def notebook_holds(session: Session) -> list[NotebookGpus]:
    return list(session.scalars(select(NotebookGpus).order_by(NotebookGpus.id)))


def add_notebook_hold(session: Session, values: dict[str, Any]) -> NotebookGpus:
    hold = NotebookGpus(**values)
    session.add(hold)
    session.flush()
    return hold


def remove_notebook_hold(session: Session, owner: str, server: str) -> None:
    session.execute(delete(NotebookGpus).where(NotebookGpus.owner == owner, NotebookGpus.server == server))
