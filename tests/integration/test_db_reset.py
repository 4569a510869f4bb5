"""The shared test database (tests/dbreset.py): a reset gives the next test exactly the migrated
template — no rows of the last test, the migrations' seeded rows back, sequences restarted — ends
sessions a test left behind, and a test that changed the schema is caught and the database
replaced."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from tests.dbreset import SchemaChanged, WorkerDatabase
from tests.dbtools import create_database, drop_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seeded_template(template_db: str) -> Iterator[str]:
    """A migrated template whose migrations (say) seeded a pool row and used a sequence."""
    name = f"dagrelay_seeded_{uuid.uuid4().hex[:8]}"
    engine = create_engine(create_database(name, template=template_db), poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO pools (name, slots, description) VALUES ('bq', 4, 'x')"))
        conn.execute(text("SELECT nextval('tasks_task_id_seq')"))
    engine.dispose()
    yield name
    drop_database(name)


@pytest.fixture(scope="module")
def worker(seeded_template: str) -> Iterator[WorkerDatabase]:
    database = WorkerDatabase(seeded_template, f"dagrelay_wt_{uuid.uuid4().hex[:8]}")
    yield database
    database.drop()


@pytest.fixture
def conn_engine(worker: WorkerDatabase) -> Iterator[Engine]:
    """The worker database, reset, on connections of the test's own."""
    worker.reset()
    engine = create_engine(worker.url, poolclass=NullPool)
    yield engine
    engine.dispose()


def pools(engine: Engine) -> list[tuple[str, int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, slots, description FROM pools ORDER BY name"))
        return [(r.name, r.slots, r.description) for r in rows]


def new_task_id(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                text(
                    "INSERT INTO tasks (name, pipeline, handler) VALUES "
                    "(:n, 'p', 'python.noop') RETURNING task_id"
                ),
                {"n": f"t{uuid.uuid4().hex[:8]}"},
            ).scalar_one()
        )


def test_a_reset_removes_rows_restores_seeded_ones_and_restarts_sequences(
    worker: WorkerDatabase, conn_engine: Engine
) -> None:
    first = new_task_id(conn_engine)
    assert first == 2  # the template's sequence had handed out 1
    with conn_engine.begin() as conn:
        conn.execute(text("DELETE FROM pools"))
        conn.execute(text("INSERT INTO pools (name, slots) VALUES ('other', 1)"))
        conn.execute(
            text("INSERT INTO task_dependencies (child_task_id, parent_task_id) VALUES (:c, :p)"),
            {"c": new_task_id(conn_engine), "p": first},
        )

    worker.reset()

    assert pools(conn_engine) == [("bq", 4, "x")]
    with conn_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM task_dependencies")).scalar_one() == 0
    assert new_task_id(conn_engine) == 2
    worker.check_schema("this test")  # rows are not schema


def test_a_reset_ends_a_session_left_holding_a_lock(
    worker: WorkerDatabase, conn_engine: Engine
) -> None:
    leftover = conn_engine.connect()
    leftover.execute(text("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE"))  # and never commits

    worker.reset()

    with conn_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 0
    leftover.invalidate()


@pytest.mark.parametrize(
    "ddl",
    [
        pytest.param("CREATE TABLE effects (a int)", id="a table"),
        pytest.param("ALTER TABLE batches ADD CONSTRAINT no_x CHECK (batch_id <> 'x')", id="check"),
        pytest.param("ALTER TABLE tasks DISABLE TRIGGER USER", id="a trigger disabled"),
        pytest.param(
            "CREATE OR REPLACE FUNCTION dagrelay_is_timezone(p_name text) RETURNS boolean "
            "LANGUAGE sql AS 'SELECT true'",
            id="a function replaced",
        ),
        pytest.param("ALTER TYPE batch_status ADD VALUE 'PAUSED'", id="an enum value"),
    ],
)
def test_a_schema_change_is_caught_and_the_database_replaced(
    worker: WorkerDatabase, conn_engine: Engine, ddl: str
) -> None:
    with conn_engine.begin() as conn:
        conn.execute(text(ddl))

    with pytest.raises(SchemaChanged, match=r"mark it @pytest\.mark\.fresh_db"):
        worker.check_schema("the test")

    worker.check_schema("the next test")  # a clean copy of the template again
    assert pools(conn_engine) == [("bq", 4, "x")]


def test_a_table_created_and_dropped_again_leaves_nothing_to_catch(
    worker: WorkerDatabase, conn_engine: Engine
) -> None:
    with conn_engine.begin() as conn:
        conn.execute(text("CREATE TABLE effects (a int)"))
        conn.execute(text("DROP TABLE effects"))
    worker.check_schema("the test")


def test_db_url_is_the_shared_database_and_fresh_db_url_a_clone(
    db_url: str, fresh_db_url: str, worker_db: WorkerDatabase
) -> None:
    assert db_url == worker_db.url
    assert make_url(fresh_db_url).database != make_url(db_url).database


@pytest.mark.fresh_db
def test_the_fresh_db_marker_gives_db_url_a_database_of_its_own(
    db_url: str, worker_db: WorkerDatabase
) -> None:
    assert make_url(db_url).database != worker_db.name
