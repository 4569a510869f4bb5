"""Alembic environment: one online mode, the URL taken from dagrelay's settings.

The migrations are the one definition of the schema: there are no models to autogenerate from
(tests/integration/test_migrations.py checks what Python mirrors: the enums, the task defaults).
A caller may pass an open connection in ``config.attributes["connection"]`` (tests and the
``dagrelay db upgrade`` command do), otherwise an engine is built from the settings.
"""

from __future__ import annotations

from alembic import context

from dagrelay.store.db import create_db_engine

config = context.config


def run_migrations(connection: object) -> None:
    context.configure(connection=connection)  # type: ignore[arg-type]
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
