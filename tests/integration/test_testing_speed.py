"""What makes dagrelay.testing fast, held: the migrations run once per server (a template kept
under a name of the migrations, built once even by sessions racing for it), a session's tests
share one database emptied between them, and a batch reuses its connections."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from dagrelay.handlers.registry import HandlerContext
from dagrelay.pipelines.api import Map, Pipeline
from dagrelay.testing import PipelineRunner, databases
from tests.dbtools import ADMIN_URL

pytestmark = pytest.mark.integration


def mapped(items: int) -> Pipeline:
    p = Pipeline("tst_speed")
    src = p.noop("src", output={"items": list(range(items))})

    @p.task("each", parents=[src], map=Map(over="src.items"))
    def each(ctx: HandlerContext) -> dict[str, Any]:
        return {"item": ctx.item}

    p.noop("join", parents=[each])
    return p


def test_a_batch_reuses_its_connections(dagrelay_runner: PipelineRunner) -> None:
    opened: list[object] = []
    event.listen(dagrelay_runner.db, "connect", lambda conn, _: opened.append(conn))
    result = dagrelay_runner.run(mapped(30), "b", duplicate=True, shuffle=True, seed=3)

    assert result.status == "SUCCESS"
    assert result.deliveries == 64
    assert len(opened) <= 2, f"{len(opened)} connections opened for one batch"


def _databases(prefix: str) -> list[tuple[str, bool]]:
    admin = create_engine(ADMIN_URL, poolclass=NullPool)
    try:
        with admin.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT datname, datallowconn FROM pg_database "
                    "WHERE starts_with(datname, :p) ORDER BY 1"
                ),
                {"p": prefix},
            )
            return [(r[0], r[1]) for r in rows]
    finally:
        admin.dispose()


def test_parallel_sessions_build_the_template_once(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"{databases.TEMPLATE_PREFIX}race_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(databases, "template_name", lambda: name)
    built: list[str] = []
    real_build = databases._build_template

    def build(*a: Any) -> Any:
        built.append(a[2])
        return real_build(*a)

    monkeypatch.setattr(databases, "_build_template", build)
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(databases.template_database(ADMIN_URL)))
        for _ in range(3)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert got == [name, name, name]
        assert built == [name], "one session built it, the others found it"
        assert _databases(name) == [(name, False)], "kept, and closed to connections"
        assert _databases(databases.BUILD_PREFIX) == [], "no scratch database left"
        with databases.temporary_database(ADMIN_URL, template=name) as url:
            engine = create_engine(url, poolclass=NullPool)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM tasks")).scalar() == 0
            engine.dispose()
    finally:
        databases._admin(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}"')


def test_the_template_is_named_after_the_migrations_head() -> None:
    from dagrelay.store import migrate  # noqa: PLC0415 - Alembic, for the expected head

    assert databases.template_name().startswith(f"{databases.TEMPLATE_PREFIX}{migrate.head()}_")


SESSION = """
from sqlalchemy import text

from dagrelay.pipelines.api import Map, Pipeline

SEEN = []


def pipeline():
    p = Pipeline("p")
    p.noop("a", output={"n": 1})
    return p


def count(runner, table):
    with runner.db.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()


def test_one(dagrelay_runner):
    assert dagrelay_runner.run(pipeline(), "b").status == "SUCCESS"
    SEEN.append(dagrelay_runner.db.url.database)


def test_two(dagrelay_runner):
    assert [count(dagrelay_runner, t) for t in ("tasks", "batches", "task_log")] == [0, 0, 0]
    assert count(dagrelay_runner, "alembic_version") == 1
    assert dagrelay_runner.run(pipeline(), "b").status == "SUCCESS"
    with dagrelay_runner.db.connect() as conn:
        assert conn.execute(text("SELECT min(task_id) FROM tasks")).scalar() == 1
    assert SEEN == [dagrelay_runner.db.url.database], "one database for the session"
"""


def test_a_session_shares_one_database_emptied_before_each_test(tmp_path: Path) -> None:
    (tmp_path / "test_session.py").write_text(textwrap.dedent(SESSION))
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:bqemulator\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env | {"DAGRELAY_TEST_ADMIN_URL": ADMIN_URL},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
