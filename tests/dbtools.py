"""Creating and dropping test databases on the local PostgreSQL server."""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, make_url, text

ADMIN_URL = os.environ.get(
    "DAGRELAY_TEST_ADMIN_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"
)


def admin_engine() -> Engine:
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


def url_for(database: str) -> str:
    return make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def create_database(database: str, template: str | None = None) -> str:
    admin = admin_engine()
    try:
        with admin.connect() as conn:
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(text(f'CREATE DATABASE "{database}"{suffix}'))
    finally:
        admin.dispose()
    return url_for(database)


def drop_database(database: str) -> None:
    admin = admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        admin.dispose()
