"""The database side of endpoints: rows of endpoints, stages and stage resources, their replicas and statistics.

Plain functions of a session (``Database.run`` calls them in its thread), as ``store.py``
is for runs; the controller (``endpoints.py``) and the API decide, these only read and write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, selectinload

from .orm import Endpoint, EndpointStage, EndpointStats, Model, Run, StageResource
from .serving_states import KIND_BATCH, KIND_SERVING


def _loaded():
    return select(Endpoint).options(selectinload(Endpoint.stages).selectinload(EndpointStage.resources))


def get_endpoint(session: Session, endpoint_id: int) -> Endpoint | None:
    return session.execute(_loaded().where(Endpoint.id == endpoint_id)).scalar_one_or_none()


def endpoint_named(session: Session, name: str) -> Endpoint | None:
    return session.execute(_loaded().where(Endpoint.name == name)).scalar_one_or_none()


def list_endpoints(session: Session) -> list[Endpoint]:
    return list(session.execute(_loaded().order_by(Endpoint.id)).scalars())


def insert_endpoint(session: Session, values: dict[str, Any], stage: dict[str, Any],
                    resources: list[dict[str, Any]], at: datetime) -> int:
    """The endpoint, its default stage and that stage's resources, in one transaction."""
    endpoint = Endpoint(**values, created_at=at, updated_at=at)
    session.add(endpoint)
    session.flush()
    stage_id = insert_stage(session, endpoint.id, stage, resources, at)
    endpoint.default_stage_id = stage_id
    return endpoint.id


def insert_stage(session: Session, endpoint_id: int, stage: dict[str, Any], resources: list[dict[str, Any]],
                 at: datetime) -> int:
    row = EndpointStage(endpoint_id=endpoint_id, **stage, created_at=at, updated_at=at)
    session.add(row)
    session.flush()
    for values in resources:
        insert_resource(session, row.id, values, at)
    return row.id


def insert_resource(session: Session, stage_id: int, values: dict[str, Any], at: datetime) -> int:
    row = StageResource(stage_id=stage_id, **values, created_at=at, updated_at=at)
    session.add(row)
    session.flush()
    return row.id


def set_state(session: Session, table, row_id: int, state: str, reason: str, at: datetime, **fields) -> bool:
    """Change one row's state (and other fields); whether anything changed."""
    current = session.execute(select(table.state, table.reason).where(table.id == row_id)).first()
    if current is None:
        return False
    if tuple(current) == (state, reason) and not fields:
        return False
    session.execute(update(table).where(table.id == row_id).values(state=state, reason=reason, updated_at=at,
                                                                    **fields))
    return True


def set_default_stage(session: Session, endpoint_id: int, stage_id: int, at: datetime) -> None:
    session.execute(update(Endpoint).where(Endpoint.id == endpoint_id)
                    .values(default_stage_id=stage_id, updated_at=at))


def delete_row(session: Session, table, row_id: int) -> None:
    session.execute(delete(table).where(table.id == row_id))


def delete_stage(session: Session, stage_id: int) -> None:
    session.execute(delete(EndpointStats).where(EndpointStats.stage_id == stage_id))
    session.execute(delete(StageResource).where(StageResource.stage_id == stage_id))
    session.execute(delete(EndpointStage).where(EndpointStage.id == stage_id))


def delete_endpoint(session: Session, endpoint_id: int) -> None:
    stage_ids = list(session.execute(select(EndpointStage.id).where(EndpointStage.endpoint_id == endpoint_id))
                     .scalars())
    for stage_id in stage_ids:
        delete_stage(session, stage_id)
    session.execute(delete(EndpointStats).where(EndpointStats.stage_id.in_(stage_ids)))
    session.execute(delete(Endpoint).where(Endpoint.id == endpoint_id))


def models_by_id(session: Session, ids: list[int]) -> dict[int, Model]:
    if not ids:
        return {}
    return {m.id: m for m in session.execute(select(Model).where(Model.id.in_(ids))).scalars()}


def replica_runs(session: Session, resource_ids: list[int], ended_since: datetime
                 ) -> tuple[dict[int, list[Run]], dict[int, int]]:
    """Each stage resource's serving runs that have not ended or ended since ``ended_since`` (oldest first), and
    how many it ever had (the next replica's key counts them), in one pass over the index."""
    found: dict[int, list[Run]] = {rid: [] for rid in resource_ids}
    if not resource_ids:
        return found, {}
    rows = session.execute(select(Run).where(Run.kind == KIND_SERVING, Run.parent_id.in_(resource_ids),
                                             (Run.ended_at.is_(None)) | (Run.ended_at >= ended_since))
                           .order_by(Run.id)).scalars()
    for run in rows:
        found.setdefault(run.parent_id, []).append(run)
    counts = dict(session.execute(select(Run.parent_id, func.count()).where(
        Run.kind == KIND_SERVING, Run.parent_id.in_(resource_ids)).group_by(Run.parent_id)).all())
    return found, counts


def add_stats(session: Session, stage_id: int, minute: datetime, requests: int, errors: int,
              buckets: list[int]) -> None:
    """Add one flush of counts to the stage's row for ``minute`` (made when it is the minute's first)."""
    row = session.execute(select(EndpointStats).where(EndpointStats.stage_id == stage_id,
                                                      EndpointStats.minute == minute)).scalar_one_or_none()
    if row is None:
        session.add(EndpointStats(stage_id=stage_id, minute=minute, requests=requests, errors=errors,
                                  latency_buckets=list(buckets)))
        return
    merged = list(row.latency_buckets or [])
    merged += [0] * (len(buckets) - len(merged))
    row.latency_buckets = [a + b for a, b in zip(merged, buckets + [0] * (len(merged) - len(buckets)))]
    row.requests += requests
    row.errors += errors


def stats_since(session: Session, stage_ids: list[int], since: datetime) -> list[EndpointStats]:
    if not stage_ids:
        return []
    return list(session.execute(select(EndpointStats).where(EndpointStats.stage_id.in_(stage_ids),
                                                            EndpointStats.minute >= since)
                                .order_by(EndpointStats.minute)).scalars())


def runtime_run_users(session: Session, run_id: int) -> list[str]:
    """A run deletion rule (``tracking_store.RUN_DELETION_RULES``): a model server replica of a stage resource
    that still exists, or the job of a batch inference that still exists, goes with its owner object."""
    from .orm import BatchInference

    run = session.get(Run, run_id)
    if run is None or run.parent_id is None:
        return []
    if run.kind == KIND_SERVING:
        found = session.execute(select(Endpoint.name, EndpointStage.name).join(
            EndpointStage, EndpointStage.endpoint_id == Endpoint.id).join(
            StageResource, StageResource.stage_id == EndpointStage.id).where(StageResource.id == run.parent_id)).first()
        if found is not None:
            return [f"it is a model server of endpoint {found[0]}, stage {found[1]}: delete the stage resource "
                    "(or the stage, or the endpoint) instead"]
    elif run.kind == KIND_BATCH and session.get(BatchInference, run.parent_id) is not None:
        return [f"it is the job of batch inference {run.parent_id}: delete the batch inference instead"]
    return []
