"""Reading and writing datasets and their versions (runs on the database thread, like ``store``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session, selectinload

from .orm import Dataset, DatasetVersion, Run
from .states import ACTIVE


class DatasetExists(Exception):
    pass


def namespace_of(owner: str, group: str) -> str:
    return f"group:{group}" if group else owner


def create_dataset(session: Session, owner: str, group: str, name: str, description: str, at: datetime) -> Dataset:
    namespace = namespace_of(owner, group)
    if session.execute(select(Dataset.id).where(Dataset.namespace == namespace, Dataset.name == name)).first():
        raise DatasetExists(name)
    row = Dataset(owner=owner, group=group, namespace=namespace, name=name, description=description, created_at=at)
    session.add(row)
    session.flush()
    return get_dataset(session, row.id)


def get_dataset(session: Session, dataset_id: int) -> Dataset | None:
    return session.execute(select(Dataset).options(selectinload(Dataset.versions))
                           .where(Dataset.id == dataset_id)).scalar()


def list_datasets(session: Session, owner: str | None, groups: list[str]) -> list[Dataset]:
    """The caller's own and their groups' datasets (``owner`` None: every one)."""
    q = select(Dataset).options(selectinload(Dataset.versions)).order_by(Dataset.namespace, Dataset.name)
    if owner is not None:
        q = q.where(or_(Dataset.namespace == owner, Dataset.group.in_(groups) if groups else false()))
    return list(session.execute(q).scalars())


def find_dataset(session: Session, namespace: str, name: str) -> Dataset | None:
    return session.execute(select(Dataset).options(selectinload(Dataset.versions))
                           .where(Dataset.namespace == namespace, Dataset.name == name)).scalar()


def add_version(session: Session, dataset_id: int, version: int, by: str, files: int, size: int,
                source_path: str | None, at: datetime) -> DatasetVersion:
    row = DatasetVersion(dataset_id=dataset_id, version=version, created_at=at, created_by=by, files=files,
                         bytes=size, source_path=source_path)
    session.add(row)
    session.flush()
    return row


def next_version(session: Session, dataset_id: int) -> int:
    return (session.execute(select(func.max(DatasetVersion.version))
                            .where(DatasetVersion.dataset_id == dataset_id)).scalar() or 0) + 1


def runs_using(session: Session, dataset_id: int, version: int | None = None, active_only: bool = True) -> list[Any]:
    """``(run id, state)`` of the runs that read the dataset (or that version of it)."""
    q = select(Run.id, Run.state, Run.datasets).where(Run.datasets.is_not(None))
    if active_only:
        q = q.where(Run.state.in_(list(ACTIVE)))
    found = []
    for run_id, state, attached in session.execute(q):
        for d in attached or ():
            if d.get("dataset_id") == dataset_id and (version is None or d.get("version") == version):
                found.append((run_id, state))
                break
    return found


def delete_version(session: Session, dataset_id: int, version: int) -> list[Any] | None:
    """Delete the row; the runs in the way (nothing deleted) or None when done."""
    users = runs_using(session, dataset_id, version)
    if users:
        return users
    session.execute(DatasetVersion.__table__.delete().where(
        DatasetVersion.dataset_id == dataset_id, DatasetVersion.version == version))
    return None


def delete_dataset(session: Session, dataset_id: int) -> list[Any] | None:
    users = runs_using(session, dataset_id)
    if users:
        return users
    session.execute(DatasetVersion.__table__.delete().where(DatasetVersion.dataset_id == dataset_id))
    session.execute(Dataset.__table__.delete().where(Dataset.id == dataset_id))
    return None


def update_description(session: Session, dataset_id: int, description: str) -> None:
    row = session.get(Dataset, dataset_id)
    if row is not None:
        row.description = description


def bytes_by_namespace(session: Session) -> dict[str, int]:
    """Stored bytes of every namespace's versions (uploads: the files; registered folders count nothing)."""
    q = (select(Dataset.namespace, func.sum(DatasetVersion.bytes)).join(DatasetVersion)
         .where(DatasetVersion.source_path.is_(None)).group_by(Dataset.namespace))
    return {ns: int(n or 0) for ns, n in session.execute(q)}
