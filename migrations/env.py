"""Alembic environment: one online mode, the URL taken from dagrelay's settings.

A caller may pass an open connection in ``config.attributes["connection"]`` (tests and the
``dagrelay db upgrade`` command do), otherwise an engine is built from the settings.
"""

from __future__ import annotations

from alembic import context

from dagrelay.store.db import create_db_engine
from dagrelay.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = create_db_engine()
    with engine.connect() as conn:
        run_migrations(conn)
    engine.dispose()
