"""The bigquery.* handlers against the local BigQuery (bqemulator), called directly with a
HandlerContext. Files for ``gs://bucket/path`` are written to ``<gcs_root>/bucket/path``."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from google.api_core.exceptions import (
    BadRequest,
    Conflict,
    GoogleAPICallError,
    InternalServerError,
    NotFound,
)
from google.cloud import bigquery

from dagrelay.config import get_settings
from dagrelay.errors import NonRetryableError
from dagrelay.handlers.bigquery import client as bq
from dagrelay.handlers.bigquery import handlers
from dagrelay.handlers.registry import Deferred, HandlerContext, default_registry
from dagrelay.local.bigquery import LocalBigQuery

pytestmark = pytest.mark.integration
# Until tests/conftest.py offers them (then drop these three lines):

SCHEMA = [
    {"name": "id", "type": "INT64", "mode": "REQUIRED"},
    {"name": "name", "type": "STRING"},
    {"name": "day", "type": "DATE"},
]


def context(task: str, params: Mapping[str, Any], **kw: Any) -> HandlerContext:
    fields: dict[str, Any] = {
        "pipeline": "sales",
        "batch_id": "2024-03",
        "task": task,
        "attempt": 1,
        "params": params,
        "batch_params": {"month": "2024-03"},
    }
    return HandlerContext(**(fields | kw))


def run(name: str, ctx: HandlerContext) -> Any:
    """What the engine does for a fresh attempt: check the params, call the handler."""
    registration = default_registry.get(name)
    registration.check_params(ctx.params, ctx.task)
    return registration.function(ctx)


def poll(name: str, ctx: HandlerContext, job: Mapping[str, Any]) -> Any:
    registration = default_registry.get(name)
    assert registration.poll is not None
    return registration.poll(ctx, job)


def rows(client: bigquery.Client, sql: str) -> list[dict[str, Any]]:
    return [dict(r.items()) for r in client.query(sql, retry=bq.api_retry()).result()]


def put(emulator: LocalBigQuery, path: str, data: str | pa.Table) -> str:
    """Write a file where the emulator reads gs://``path``; its URI."""
    target = emulator.gcs_root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        target.write_text(data)
    else:
        pq.write_table(data, target)
    return f"gs://{path}"


@pytest.fixture
def sales(bq_client: bigquery.Client, bq_dataset: str) -> str:
    """``<dataset>.sales`` with 7 rows (ids 1..7; names a..g)."""
    table = f"{bq_dataset}.sales"
    bq_client.query(
        f"CREATE TABLE {table} AS SELECT id, SUBSTR('abcdefg', id, 1) AS name, 10 * id AS amount "
        "FROM UNNEST(GENERATE_ARRAY(1, 7)) AS id",
        retry=bq.api_retry(),
    ).result()
    return table


# -- job ids and parameters (no I/O) ---------------------------------------------------------------


def test_job_id_is_deterministic_sanitised_and_bounded() -> None:
    first = bq.job_id("sales", "2024-03", "load.daily", 1)
    assert first == bq.job_id("sales", "2024-03", "load.daily", 1)
    assert first.startswith("dagrelay_sales_2024-03_load_daily_1_")
    assert first != bq.job_id("sales", "2024-03", "load.daily", 2)
    assert bq.job_id("a", "b", "x.y", 1) != bq.job_id("a", "b", "x_y", 1)
    long = bq.job_id("p" * 2000, "b", "t", 1)
    assert len(long) == bq.MAX_JOB_ID
    assert long != bq.job_id("p" * 2001, "b", "t", 1)
    assert set(bq.job_id("pé ü", "b/1", "t:x", 3)) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "BOOL"),
        (3, "INT64"),
        (1.5, "FLOAT64"),
        ("x", "STRING"),
        (dt.date(2024, 3, 1), "DATE"),
        (dt.datetime(2024, 3, 1, tzinfo=dt.UTC), "TIMESTAMP"),
        (dt.datetime(2024, 3, 1), "DATETIME"),  # noqa: DTZ001 - the naive case is the point
        ({"type": "date", "value": "2024-03-01"}, "DATE"),
    ],
)
def test_parameter_types(value: Any, expected: str) -> None:
    parameter = bq.parameter("p", value)
    assert isinstance(parameter, bigquery.ScalarQueryParameter)
    assert parameter.type_ == expected


def test_list_parameters_are_arrays_and_objects_need_a_type() -> None:
    array = bq.parameter("ids", [1, 2])
    assert isinstance(array, bigquery.ArrayQueryParameter)
    assert array.array_type == "INT64"
    with pytest.raises(NonRetryableError, match="mixed types"):
        bq.parameter("ids", [1, "2"])
    with pytest.raises(NonRetryableError, match=r"type: \.\.\., value"):
        bq.parameter("p", {"a": 1})


# -- bigquery.load ---------------------------------------------------------------------------------


def test_load_csv_ndjson_and_parquet(
    local_bigquery: LocalBigQuery,
    bq_client: bigquery.Client,
    bq_dataset: str,
) -> None:
    table = f"{bq_dataset}.events"
    csv = put(
        local_bigquery, f"b/{bq_dataset}/a.csv", "id;name;day\n1;a;2024-03-01\n2;b;2024-03-02\n"
    )
    ndjson = put(
        local_bigquery, f"b/{bq_dataset}/a.json", '{"id": 3, "name": "c", "day": "2024-03-03"}\n'
    )
    parquet = put(
        local_bigquery,
        f"b/{bq_dataset}/a.parquet",
        pa.table({"id": [4, 5], "name": ["d", "e"], "day": [dt.date(2024, 3, 4)] * 2}),
    )
    layout = {"time_partitioning": {"type": "DAY", "field": "day"}, "clustering_fields": ["id"]}
    out = run(
        "bigquery.load",
        context(
            "csv",
            {
                "source_uris": [csv],
                "destination": table,
                "format": "CSV",
                "schema": SCHEMA,
                "skip_leading_rows": 1,
                "field_delimiter": ";",
                "write_disposition": "WRITE_TRUNCATE",
                **layout,
            },
        ),
    )
    assert out["rows_loaded"] == 2
    assert out["destination"] == f"{bq_client.project}.{table}"
    assert out["job_id"] == bq.job_id("sales", "2024-03", "csv", 1)
    # The job carries the layout; bqemulator 1.4 does not apply it to the table it creates.
    job = bq_client.get_job(out["job_id"], retry=bq.api_retry())
    assert isinstance(job, bigquery.LoadJob)
    assert job.time_partitioning is not None
    assert job.time_partitioning.field == "day"
    assert job.clustering_fields == ["id"]
    ndjson_params = {"source_uris": ndjson, "destination": table, "format": "NDJSON"}
    # bqemulator reports the table's rows after an append as outputRows, not the rows loaded.
    assert run("bigquery.load", context("ndjson", ndjson_params))["rows_loaded"] in {1, 3}
    parquet_params = {
        "source_uris": parquet,
        "destination": f"{bq_dataset}.events_pq",
        "format": "PARQUET",
        "schema": SCHEMA,  # the emulator cannot load Parquet into a new table without one
    }
    assert run("bigquery.load", context("parquet", parquet_params))["rows_loaded"] == 2
    assert [r["id"] for r in rows(bq_client, f"SELECT id FROM {table} ORDER BY id")] == [1, 2, 3]
    assert rows(bq_client, f"SELECT COUNT(*) AS n FROM {bq_dataset}.events_pq") == [{"n": 2}]


def test_load_write_empty_into_a_table_with_rows_is_non_retryable(
    local_bigquery: LocalBigQuery,
    sales: str,
) -> None:
    uri = put(local_bigquery, f"b/{uuid.uuid4().hex}.csv", "id,name,amount\n9,x,1\n")
    params = {
        "source_uris": uri,
        "destination": sales,
        "format": "CSV",
        "skip_leading_rows": 1,
        "write_disposition": "WRITE_EMPTY",
    }
    with pytest.raises(NonRetryableError, match="not empty"):
        run("bigquery.load", context("load_empty", params))


def test_load_params_are_checked(bq_dataset: str) -> None:
    params = {"source_uris": "data/x.csv", "destination": f"{bq_dataset}.t", "format": "CSV"}
    with pytest.raises(NonRetryableError, match="source_uris"):
        run("bigquery.load", context("bad", params))


# -- bigquery.query --------------------------------------------------------------------------------


def test_dml_takes_batch_values_as_parameters(bq_client: bigquery.Client, sales: str) -> None:
    dataset = sales.split(".", maxsplit=1)[0]
    bq_client.query(
        f"CREATE TABLE {dataset}.totals (batch_id STRING, month STRING, pipeline STRING, "
        "total INT64)",
        retry=bq.api_retry(),
    ).result()
    sql = (
        f"INSERT INTO {dataset}.totals (batch_id, month, pipeline, total) "
        f"SELECT @batch_id, @month, @pipeline, SUM(amount) FROM {sales} WHERE id >= @min_id"
    )
    params = {"sql": sql, "query_parameters": {"min_id": 5}}
    out = run("bigquery.query", context("totals", params))
    assert out["rows_affected"] == 1
    assert out["statement_type"] == "INSERT"
    assert rows(bq_client, f"SELECT * FROM {dataset}.totals") == [
        {"batch_id": "2024-03", "month": "2024-03", "pipeline": "sales", "total": 180}
    ]


def test_query_into_a_destination(bq_client: bigquery.Client, sales: str) -> None:
    dataset = sales.split(".", maxsplit=1)[0]
    params = {
        "sql": f"SELECT id, @batch_id AS batch_id, @month AS month FROM {sales} WHERE id <= 2",
        "destination": f"{dataset}.snapshot",
        "write_disposition": "WRITE_TRUNCATE",
    }
    out = run("bigquery.query", context("snapshot", params))
    assert out["destination"] == f"{bq_client.project}.{dataset}.snapshot"
    job = bq_client.get_job(out["job_id"], retry=bq.api_retry())
    assert isinstance(job, bigquery.QueryJob)
    assert [dict(r.items()) for r in job.result()] == [
        {"id": 1, "batch_id": "2024-03", "month": "2024-03"},
        {"id": 2, "batch_id": "2024-03", "month": "2024-03"},
    ]


@pytest.mark.xfail(
    reason="bqemulator 1.4 ignores destinationTable for a SELECT job (no table is written); "
    "real BigQuery writes it. Use CREATE OR REPLACE TABLE / INSERT (DML) against the emulator.",
    strict=True,
)
def test_query_destination_table_is_written(bq_client: bigquery.Client, sales: str) -> None:
    dataset = sales.split(".", maxsplit=1)[0]
    params = {"sql": f"SELECT id FROM {sales}", "destination": f"{dataset}.copy"}
    run("bigquery.query", context("copy", params))
    assert rows(bq_client, f"SELECT COUNT(*) AS n FROM {dataset}.copy") == [{"n": 7}]


def test_query_from_a_sql_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bq_client: bigquery.Client,
    sales: str,
) -> None:
    (tmp_path / "sales").mkdir()
    (tmp_path / "sales" / "clean.sql").write_text(f"DELETE FROM {sales} WHERE id > @keep\n")
    monkeypatch.setenv("DAGRELAY_PIPELINES_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        params = {"sql_file": "sales/clean.sql", "query_parameters": {"keep": 4}}
        assert run("bigquery.query", context("clean", params))["rows_affected"] == 3
        with pytest.raises(NonRetryableError, match="outside"):
            run("bigquery.query", context("escape", {"sql_file": "../etc/x.sql"}))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


# -- bigquery.check --------------------------------------------------------------------------------


def test_checks_that_pass(sales: str) -> None:
    empty = {"sql": f"SELECT * FROM {sales} WHERE amount < 0", "expect": "empty"}
    assert run("bigquery.check", context("no_negatives", empty))["passed"] is True
    one_row = {"sql": f"SELECT COUNT(*) AS n, SUM(amount) AS total FROM {sales}"}
    expect = one_row | {"expect": {"n": 7, "total": 280}}
    assert run("bigquery.check", context("sum_and_count", expect))["passed"] is True
    condition = {
        "sql": f"SELECT COUNT(*) = 7 AS complete FROM {sales} WHERE name IS NOT NULL",
        "condition_column": "complete",
    }
    assert run("bigquery.check", context("complete", condition))["passed"] is True


def test_failed_check_shows_the_first_offending_rows(sales: str) -> None:
    params: dict[str, Any] = {"sql": f"SELECT id, name FROM {sales} WHERE id > @min_id ORDER BY id"}
    params |= {"expect": "empty", "query_parameters": {"min_id": 0}}
    with pytest.raises(NonRetryableError) as failure:
        run("bigquery.check", context("no_rows", params))
    message = str(failure.value)
    assert "expected no rows, got 6+" in message
    assert '{"id": 5, "name": "e"}' in message
    assert '"id": 6' not in message  # only a sample of 5
    wrong = {"sql": f"SELECT COUNT(*) AS n FROM {sales}", "expect": {"n": 8}}
    with pytest.raises(NonRetryableError, match=r"unexpected n \(want 8\); rows: \[\{\"n\": 7\}\]"):
        run("bigquery.check", context("count", wrong))


# -- idempotency, deferral, errors -----------------------------------------------------------------


def test_same_attempt_twice_runs_one_job(bq_client: bigquery.Client, sales: str) -> None:
    ctx = context("once", {"sql": f"INSERT INTO {sales} (id, name, amount) VALUES (8, 'h', 80)"})
    first = run("bigquery.query", ctx)
    second = run("bigquery.query", ctx)  # a redelivered run_task for the same attempt
    assert second["job_id"] == first["job_id"]
    jobs = [j.job_id for j in bq_client.list_jobs(retry=bq.api_retry())]
    assert jobs.count(first["job_id"]) == 1
    assert rows(bq_client, f"SELECT COUNT(*) AS n FROM {sales} WHERE id = 8") == [{"n": 1}]
    retried = run("bigquery.query", context("once", ctx.params, attempt=2))
    assert retried["job_id"] != first["job_id"]


def test_wait_s_zero_defers_and_the_poll_returns_the_output(sales: str) -> None:
    ctx = context("late", {"sql": f"SELECT COUNT(*) AS n FROM {sales}", "expect": {"n": 7}})
    deferred = run("bigquery.check", context("late", {**ctx.params, "wait_s": 0}))
    assert isinstance(deferred, Deferred)
    assert deferred.poll_after_s == 10
    assert deferred.job["job_id"] == bq.job_id("sales", "2024-03", "late", 1)
    assert deferred.job["kind"] == "check"
    assert poll("bigquery.check", ctx, deferred.job) == {
        "job_id": deferred.job["job_id"],
        "passed": True,
        "rows": 1,
    }


def test_a_running_job_defers_again(monkeypatch: pytest.MonkeyPatch) -> None:
    running = SimpleNamespace(job_id="j1", location="EU", state="RUNNING")
    monkeypatch.setattr(bq, "client", lambda: None)
    monkeypatch.setattr(bq, "find_job", lambda client, job_id, location: running)
    again = handlers.poll_query(
        context("q", {"sql": "SELECT 1"}), {"job_id": "j1", "kind": "query"}
    )
    assert isinstance(again, Deferred)
    assert again.job == {"job_id": "j1", "location": "EU", "kind": "query", "state": "RUNNING"}


@pytest.mark.parametrize(
    ("sql", "match"),
    [("SELEC 1", "invalidQuery"), ("SELECT * FROM nowhere.nothing", "notFound")],
)
def test_job_errors_that_a_retry_cannot_fix(
    bq_client: bigquery.Client,
    sql: str,
    match: str,
) -> None:
    with pytest.raises(NonRetryableError, match=match):
        run("bigquery.query", context(f"bad_{uuid.uuid4().hex[:6]}", {"sql": sql}))


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ({"reason": "backendError", "message": "try again"}, True),
        ({"reason": "rateLimitExceeded", "message": "slow down"}, True),
        ({"reason": "invalid", "message": "bad"}, False),
    ],
)
def test_job_error_reasons_decide_retryable(error: dict[str, str], retryable: bool) -> None:
    job = SimpleNamespace(job_id="j", error_result=error)
    with pytest.raises((bq.BigQueryError, NonRetryableError)) as failure:
        bq.raise_if_failed(job)  # type: ignore[arg-type]
    assert failure.value.retryable is retryable


def api_error(
    kind: Callable[..., GoogleAPICallError], message: str, **details: Any
) -> GoogleAPICallError:
    """One of google.api_core's exceptions, whose constructors carry no annotations."""
    return kind(message, **details)


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (api_error(InternalServerError, "boom"), True),
        (api_error(BadRequest, "bad", errors=[{"reason": "invalidQuery"}]), False),
        (api_error(NotFound, "gone"), False),
    ],
)
def test_api_errors_are_translated(exc: Exception, retryable: bool) -> None:
    with pytest.raises((bq.BigQueryError, NonRetryableError)) as failure, bq.translated_errors("x"):
        raise exc
    assert failure.value.retryable is retryable


def test_a_conflict_on_insert_finds_the_concurrent_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """BigQuery answers a duplicate job id with 409 (bqemulator does not): the job is read."""
    theirs: object = SimpleNamespace(job_id="j1")
    lookups = iter([None, theirs])  # not there before the insert; there after the 409
    monkeypatch.setattr(bq, "find_job", lambda client, job_id, location: next(lookups))

    def create() -> Any:
        raise api_error(Conflict, "Already Exists: Job j1")

    assert bq.submit_once(None, "j1", None, create) is theirs  # type: ignore[arg-type]
