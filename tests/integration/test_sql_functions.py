"""The SQL functions of a database migrated to head: each is the text of its file in
``schema/functions/`` (and nothing else is), and each is fenced like the named SQL (every
UPDATE of a status has a predicate on the current status, tests/unit/test_sql_fence.py)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from tests.tools.sql_fence import status_updates, unfenced_updates
from tests.tools.sql_functions import definitions, live_files, statements

pytestmark = pytest.mark.integration

# Functions allowed to write a status without a predicate on it, each with its reason.
UNFENCED: dict[str, str] = {}


@pytest.fixture
def head(db_url: str) -> Iterator[Engine]:
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


def test_every_function_has_its_file_and_every_file_its_function(head: Engine) -> None:
    with head.connect() as conn:
        names = {signature.split("(")[0] for signature in definitions(conn)}
    assert {f"{name}.sql" for name in names} == set(live_files())


def test_each_file_is_the_text_the_database_holds(head: Engine) -> None:
    """Executing every file in the migrated database changes no definition and adds no
    function: the files are exactly what the migrations installed (compared as PostgreSQL
    prints them, so a changed body, signature or attribute shows; the file's layout of the
    header does not)."""
    with head.connect() as conn:
        before = definitions(conn)
        for name, sql in live_files().items():
            for statement in statements(sql):
                try:
                    conn.exec_driver_sql(statement)
                except Exception as error:  # a file that does not even replace its function
                    pytest.fail(f"{name}: {error}")
        after = definitions(conn)
        conn.rollback()
    assert set(after) == set(before), "a file defines a function the migrations do not"
    changed = {
        signature: "".join(
            difflib.unified_diff(
                before[signature].splitlines(keepends=True),
                after[signature].splitlines(keepends=True),
                "migrated",
                "file",
            )
        )
        for signature in before
        if after[signature] != before[signature]
    }
    assert changed == {}


def test_every_status_update_of_a_function_is_fenced(head: Engine) -> None:
    with head.connect() as conn:
        functions = definitions(conn)
    unfenced = {
        signature: [str(update) for update in unfenced_updates(definition)]
        for signature, definition in functions.items()
        if signature.split("(")[0] not in UNFENCED
    }
    assert {signature: found for signature, found in unfenced.items() if found} == {}
    stale = [
        name
        for name in UNFENCED
        if not any(unfenced_updates(d) for s, d in functions.items() if s.split("(")[0] == name)
    ]
    assert stale == [], "fenced now (or gone): remove from UNFENCED"


def test_the_fence_reads_the_functions(head: Engine) -> None:
    """The function that claims a limited task writes QUEUED and PROCESSING: the checker finds
    both UPDATEs inside its plpgsql body (it is not blind to dollar-quoted code)."""
    with head.connect() as conn:
        functions = definitions(conn)
    (claim,) = (d for s, d in functions.items() if s.startswith("dagrelay_claim_limited("))
    assert [update.table for update in status_updates(claim)] == ["task_log", "task_log"]
