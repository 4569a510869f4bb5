"""Rewrite ``schema/functions/`` from a database migrated to head.

    python -m tests.tools.dump_functions [DATABASE_URL]

Without a URL, a scratch database on the test server (``DAGRELAY_TEST_ADMIN_URL``) is created,
migrated and dropped. Run it (``make sql-functions``) after adding a migration that changes a
function, and commit the files with the migration."""

from __future__ import annotations

import sys
import uuid

from sqlalchemy import create_engine

from dagrelay.store import migrate
from tests.dbtools import create_database, drop_database
from tests.tools.sql_functions import FUNCTIONS_DIR, render, write


def dump(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            files = render(conn)
    finally:
        engine.dispose()
    write(files)
    return len(files)


def main(argv: list[str]) -> int:
    if argv:
        count = dump(argv[0])
    else:
        name = f"dagrelay_functions_{uuid.uuid4().hex[:12]}"
        url = create_database(name)
        try:
            engine = create_engine(url)
            migrate.upgrade(engine)
            engine.dispose()
            count = dump(url)
        finally:
            drop_database(name)
    sys.stdout.write(f"{count} files in {FUNCTIONS_DIR}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
