"""Alembic environment: runs migrations on the connection the scheduler hands over.

Our revision is kept in ``nothing_alembic_version`` (``db.VERSION_TABLE``): the database also holds
Optuna's tables, whose own Alembic revision is in ``alembic_version``. Autogenerate looks at our
tables only, so it never proposes to drop Optuna's.
"""

from alembic import context

from nothing.scheduler.db import VERSION_TABLE
from nothing.scheduler.orm import Base

target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave alone tables in the database that are not ours (Optuna's studies)."""
    return not (type_ == "table" and reflected and compare_to is None)


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from sqlalchemy import create_engine

        engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
        with engine.connect() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      version_table=VERSION_TABLE, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      version_table=VERSION_TABLE, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations()
