"""The fence over ``schema/sql/``: every named statement that writes a ``status`` says which
status it expects (ARCHITECTURE.md, invariant 1). The functions the migrations install get the
same check in tests/integration/test_sql_functions.py."""

from __future__ import annotations

import pytest

from dagrelay.store.queries import parse_queries, query_files
from tests.tools.sql_fence import status_updates, unfenced_updates

# Named statements allowed to write a status without a predicate on it, each with its reason.
# Nothing goes here silently; an entry whose statement became fenced must go (a test says so).
UNFENCED: dict[str, str] = {}


def named_statements() -> dict[str, str]:
    return {
        f"{path.name}:{name}": sql
        for path in query_files()
        for name, sql in parse_queries(path.read_text(encoding="utf-8")).items()
    }


def test_every_status_update_in_schema_sql_is_fenced() -> None:
    unfenced = {
        key: [str(update) for update in unfenced_updates(sql)]
        for key, sql in named_statements().items()
        if key not in UNFENCED
    }
    assert {key: found for key, found in unfenced.items() if found} == {}


def test_every_listed_exception_is_still_unfenced() -> None:
    statements = named_statements()
    stale = [key for key in UNFENCED if not unfenced_updates(statements.get(key, ""))]
    assert stale == [], "fenced now (or gone): remove from UNFENCED"


def test_the_fence_sees_the_transitions() -> None:
    """The checker is not blind: the known status transitions are found as status UPDATEs."""
    writers = {key for key, sql in named_statements().items() if status_updates(sql)}
    assert {
        "tasks.sql:claim_task",
        "tasks.sql:finish_attempt",
        "batches.sql:cancel_batch",
        "batches.sql:finish_batch",
        "batches.sql:cancel_waiting_tasks",
        "batches.sql:resume_reset",
        "map.sql:decide_group",
        "map.sql:reset_failed_items",
        "sweeper.sql:finish_idle_batches",
        "ingest.sql:ingest_mark_loaded",
    } <= writers


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE task_log SET status = 'ERROR' WHERE log_id = :id",
        # a predicate on another table's status does not fence the target's row
        """UPDATE task_log tl SET status = 'CANCELLED' FROM batches b
           WHERE tl.log_id = :id AND b.batch_id = tl.batch_id AND b.status = 'RUNNING'""",
        # nor does one inside a subquery
        """UPDATE batches SET status = 'RUNNING'
           WHERE batch_id = :id AND EXISTS (SELECT 1 FROM task_log WHERE status = 'ERROR')""",
        # a CTE, a column list, a comment and a string that mention status
        """WITH x AS (UPDATE batches AS b SET (status, finished_at) = ('FAILED', :now)
                      WHERE b.batch_id = :id  -- AND b.status = 'RUNNING'
                        AND b.note <> 'status' RETURNING b.batch_id)
           SELECT * FROM x""",
        # a plpgsql body, as pg_get_functiondef prints it
        """CREATE OR REPLACE FUNCTION public.f(p bigint) RETURNS void LANGUAGE plpgsql
           AS $function$ BEGIN UPDATE file_log SET status = 'LOADED' WHERE file_id = p;
           END $function$""",
        # IS DISTINCT FROM in a WHERE clause is not a FROM clause
        """UPDATE task_log SET status = 'NEW'
           WHERE job IS NOT DISTINCT FROM :job AND log_id = :id""",
        "INSERT INTO t (k) VALUES (1) ON CONFLICT (k) DO UPDATE SET status = 'NEW'",
    ],
)
def test_an_update_without_a_status_predicate_is_reported(sql: str) -> None:
    (found,) = unfenced_updates(sql)
    assert "status" in found.statement
    assert not found.fenced


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE task_log SET status = 'ERROR' WHERE log_id = :id AND status = 'PROCESSING'",
        """UPDATE task_log tl SET status = 'CANCELLED' FROM batches b
           WHERE tl.log_id = :id AND b.batch_id = tl.batch_id
             AND (tl.status IN ('NEW', 'QUEUED') OR (tl.status = 'RETRY'))""",
        "UPDATE task_log SET status = 'X' WHERE log_id = 1 AND task_log.status = 'PROCESSING'",
        """CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN
           UPDATE batches b SET status = 'RUNNING' WHERE b.batch_id = 'x'
               AND b.status = 'CANCELLED'; END $$""",
        "WITH x AS (UPDATE batches SET status = 'FAILED' WHERE status = 'RUNNING') SELECT 1",
        """INSERT INTO t (k) VALUES (1) ON CONFLICT (k) DO UPDATE SET status = 'NEW'
           WHERE t.status = 'OLD'""",
    ],
)
def test_an_update_with_a_status_predicate_passes(sql: str) -> None:
    assert unfenced_updates(sql) == []
    assert [update.fenced for update in status_updates(sql)] == [True]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM task_log WHERE status = 'NEW' FOR UPDATE",
        "SELECT 1 FROM batches FOR NO KEY UPDATE SKIP LOCKED",
        "UPDATE outbox SET published_at = :now WHERE outbox_id = :id",
        "UPDATE task_attempts a SET outcome = 'ERROR' WHERE a.log_id = :id",
    ],
)
def test_statements_that_write_no_status_are_not_status_updates(sql: str) -> None:
    assert status_updates(sql) == []
