"""What the tests of one migration share: a database at the revision before it, holding that
revision's rows (``database_at``), and the row counts that must survive the upgrade and the
downgrade (``row_counts``). Each test names its revisions, its rows and its tables."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text

from dagrelay.store import migrate


@contextmanager
def database_at(url: str, revision: str, statements: Iterable[str]) -> Iterator[Engine]:
    """The empty database at ``url`` migrated to ``revision``, then ``statements`` run in one
    transaction (the data an older release left)."""
    engine = create_engine(url)
    try:
        migrate.upgrade(engine, revision)
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
        yield engine
    finally:
        engine.dispose()


def row_counts(db: Engine, tables: Iterable[str]) -> dict[str, int]:
    with db.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}
