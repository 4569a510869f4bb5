"""BigQuery handlers: ``bigquery.load``, ``bigquery.query``, ``bigquery.check``.

Each submits one job per attempt under a deterministic id (``bq.job_id``), waits for it inline
up to ``wait_s`` (0: not at all), and otherwise returns ``Deferred`` with the job's id; the
handler's poll then reads the job by id until it is DONE. SQL takes values only through query
parameters: the task's ``query_parameters``, every batch param, ``batch_id`` and ``pipeline``
(``@batch_id``), each typed from its Python value. Use ``sql_file`` for SQL that contains
braces: strings in params have their ``{placeholders}`` resolved before the handler runs.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from google.cloud import bigquery

from dagrelay.config import get_settings
from dagrelay.errors import NonRetryableError
from dagrelay.handlers.bigquery import client as bq
from dagrelay.handlers.registry import Deferred, HandlerContext, handler
from dagrelay.resources import schema_dir

Output = Mapping[str, Any] | Deferred
Create = Callable[[str, str | None], bq.Job]  # (job id, location) -> the submitted job
Finish = Callable[[HandlerContext, Any], Mapping[str, Any]]  # a DONE job -> the output
DEFAULT_WAIT_S = 30.0
DEFAULT_POLL_AFTER_S = 10.0
SAMPLE_ROWS = 5
_FORMATS = {"NDJSON": "NEWLINE_DELIMITED_JSON"}
_LOAD_OPTIONS = (  # params that are LoadJobConfig attributes of the same name
    "skip_leading_rows",
    "field_delimiter",
    "quote_character",
    "null_marker",
    "allow_jagged_rows",
    "ignore_unknown_values",
    "max_bad_records",
    "encoding",
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PARAMETER = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


# -- params schemas --------------------------------------------------------------------------------

_TABLE = {"type": "string", "pattern": r"^([A-Za-z0-9_.:-]+\.)?[A-Za-z0-9_]+\.[A-Za-z0-9_$-]+$"}
_JOB = {
    "wait_s": {"type": "number", "minimum": 0, "maximum": 480},
    "poll_after_s": {"type": "number", "minimum": 1, "maximum": 3600},
}
_LAYOUT = {
    "write_disposition": {"enum": ["WRITE_APPEND", "WRITE_TRUNCATE", "WRITE_EMPTY"]},
    "create_disposition": {"enum": ["CREATE_IF_NEEDED", "CREATE_NEVER"]},
    "time_partitioning": {
        "type": "object",
        "properties": {
            "type": {"enum": ["HOUR", "DAY", "MONTH", "YEAR"]},
            "field": {"type": "string"},
            "expiration_ms": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": False,
    },
    "clustering_fields": {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 1,
        "maxItems": 4,
    },
}
_SQL = {
    "sql": {"type": "string", "minLength": 1},
    "sql_file": {"type": "string", "pattern": r"^[^/].*\.sql$"},
    "query_parameters": {"type": "object"},
}
_ONE_SQL = [{"required": ["sql"]}, {"required": ["sql_file"]}]
_FIELD = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string"},
        "mode": {"enum": ["NULLABLE", "REQUIRED", "REPEATED"]},
        "description": {"type": "string"},
        "fields": {"type": "array"},
    },
    "required": ["name", "type"],
    "additionalProperties": False,
}
LOAD_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "source_uris": {
            "oneOf": [
                {"type": "string", "pattern": "^gs://"},
                {"type": "array", "items": {"type": "string", "pattern": "^gs://"}, "minItems": 1},
            ]
        },
        "destination": _TABLE,
        "format": {"enum": ["CSV", "NDJSON", "NEWLINE_DELIMITED_JSON", "PARQUET", "AVRO", "ORC"]},
        "schema": {"type": "array", "items": _FIELD, "minItems": 1},
        "autodetect": {"type": "boolean"},
        "skip_leading_rows": {"type": "integer", "minimum": 0},
        "field_delimiter": {"type": "string", "minLength": 1},
        "quote_character": {"type": "string"},
        "null_marker": {"type": "string"},
        "allow_jagged_rows": {"type": "boolean"},
        "ignore_unknown_values": {"type": "boolean"},
        "max_bad_records": {"type": "integer", "minimum": 0},
        "encoding": {"enum": ["UTF-8", "ISO-8859-1"]},
        **_LAYOUT,
        **_JOB,
    },
    "required": ["source_uris", "destination", "format"],
    "additionalProperties": False,
}
QUERY_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        **_SQL,
        "destination": _TABLE,
        "maximum_bytes_billed": {"type": "integer", "minimum": 1},
        **_LAYOUT,
        **_JOB,
    },
    "oneOf": _ONE_SQL,
    "dependentRequired": {
        "write_disposition": ["destination"],
        "create_disposition": ["destination"],
        "time_partitioning": ["destination"],
        "clustering_fields": ["destination"],
    },
    "additionalProperties": False,
}
CHECK_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        **_SQL,
        "expect": {"oneOf": [{"const": "empty"}, {"type": "object", "minProperties": 1}]},
        "condition_column": {"type": "string", "minLength": 1},
        **_JOB,
    },
    "allOf": [
        {"oneOf": _ONE_SQL},
        {"oneOf": [{"required": ["expect"]}, {"required": ["condition_column"]}]},
    ],
    "additionalProperties": False,
}


# -- polls: read the job by id; the output once it is DONE ---------------------------------------


def poll_load(ctx: HandlerContext, job: Mapping[str, Any]) -> Output:
    return _poll(ctx, job, _load_output)


def poll_query(ctx: HandlerContext, job: Mapping[str, Any]) -> Output:
    return _poll(ctx, job, _query_output)


def poll_check(ctx: HandlerContext, job: Mapping[str, Any]) -> Output:
    return _poll(ctx, job, _check_output)


# -- handlers --------------------------------------------------------------------------------------


@handler("bigquery.load", LOAD_SCHEMA, poll=poll_load)
def load(ctx: HandlerContext) -> Output:
    """Load files (gs:// URIs) into ``destination`` with a load job."""
    p = ctx.params
    client = bq.client()
    uris = p["source_uris"]
    uris = [uris] if isinstance(uris, str) else list(uris)
    destination = _table(client, p["destination"])
    config = _load_config(p)
    return _run(
        ctx,
        "load",
        lambda job_id, location: client.load_table_from_uri(
            uris,
            destination,
            job_id=job_id,
            location=location,
            job_config=config,
            retry=bq.api_retry(),
            timeout=bq.REQUEST_TIMEOUT_S,
        ),
        _load_output,
    )


@handler("bigquery.query", QUERY_SCHEMA, poll=poll_query, raw_params=frozenset({"sql"}))
def query(ctx: HandlerContext) -> Output:
    """Run SQL (a SELECT into ``destination``, DML, DDL or a script)."""
    p = ctx.params
    config = bigquery.QueryJobConfig(query_parameters=query_parameters(ctx))
    if "destination" in p:
        config.destination = _table(bq.client(), p["destination"])
        config.write_disposition = p.get("write_disposition", "WRITE_TRUNCATE")
        config.create_disposition = p.get("create_disposition", "CREATE_IF_NEEDED")
        config.time_partitioning = _partitioning(p.get("time_partitioning"))
        config.clustering_fields = p.get("clustering_fields")
    if "maximum_bytes_billed" in p:
        config.maximum_bytes_billed = int(p["maximum_bytes_billed"])
    return _run_query(ctx, "query", config, _query_output)


@handler("bigquery.check", CHECK_SCHEMA, poll=poll_check, raw_params=frozenset({"sql"}))
def check(ctx: HandlerContext) -> Output:
    """A data-quality assertion: the query returns no rows (``expect: empty``), or one row whose
    columns equal ``expect``, or one row whose ``condition_column`` is true. A failure is
    NonRetryableError showing the first offending rows."""
    config = bigquery.QueryJobConfig(query_parameters=query_parameters(ctx))
    return _run_query(ctx, "check", config, _check_output)


# -- jobs ------------------------------------------------------------------------------------------


def _run_query(
    ctx: HandlerContext, kind: str, config: bigquery.QueryJobConfig, finish: Finish
) -> Output:
    client = bq.client()
    sql = read_sql(ctx.params)
    return _run(
        ctx,
        kind,
        lambda job_id, location: client.query(
            sql,
            job_config=config,
            job_id=job_id,
            location=location,
            retry=bq.api_retry(),
            timeout=bq.REQUEST_TIMEOUT_S,
            job_retry=None,  # a failed job is retried as a new attempt, with a new id
        ),
        finish,
    )


def _run(ctx: HandlerContext, kind: str, create: Create, finish: Finish) -> Output:
    client = bq.client()
    job_id = bq.job_id(ctx.pipeline, ctx.batch_id, ctx.task, ctx.attempt, ctx.run_id)
    location = client.location
    job = bq.submit_once(client, job_id, location, lambda: create(job_id, location))
    wait_s = float(ctx.params.get("wait_s", DEFAULT_WAIT_S))
    if wait_s > 0 and bq.wait(job, wait_s):  # wait_s 0: defer at once, even a finished job
        bq.raise_if_failed(job)
        return finish(ctx, job)
    return _deferred(ctx, kind, job)


def _poll(ctx: HandlerContext, info: Mapping[str, Any], finish: Finish) -> Output:
    job = bq.find_job(bq.client(), str(info["job_id"]), info.get("location"))
    if job is None:
        raise bq.BigQueryError(f"BigQuery job {info['job_id']} is gone")
    if job.state != "DONE":
        return _deferred(ctx, str(info["kind"]), job)
    bq.raise_if_failed(job)
    return finish(ctx, job)


def _deferred(ctx: HandlerContext, kind: str, job: bq.Job) -> Deferred:
    info = {"job_id": job.job_id, "location": job.location, "kind": kind, "state": job.state}
    return Deferred(info, float(ctx.params.get("poll_after_s", DEFAULT_POLL_AFTER_S)))


# -- outputs ---------------------------------------------------------------------------------------


def _load_output(ctx: HandlerContext, job: bigquery.LoadJob) -> Mapping[str, Any]:
    return {
        "job_id": job.job_id,
        "destination": _table_name(job.destination),
        "rows_loaded": job.output_rows,
        "files": job.input_files,
        "bytes_read": job.input_file_bytes,
    }


def _query_output(ctx: HandlerContext, job: bigquery.QueryJob) -> Mapping[str, Any]:
    output: dict[str, Any] = {
        "job_id": job.job_id,
        "statement_type": job.statement_type,
        "rows_affected": job.num_dml_affected_rows,
        "bytes_processed": job.total_bytes_processed,
    }
    if "destination" in ctx.params:
        output["destination"] = _table_name(job.destination)
    return output


def _check_output(ctx: HandlerContext, job: bigquery.QueryJob) -> Mapping[str, Any]:
    with bq.translated_errors(f"BigQuery job {job.job_id}"):
        rows = job.result(max_results=SAMPLE_ROWS + 1, retry=bq.api_retry(), timeout=30)
        sample = [dict(row.items()) for row in rows]
    problem = check_problem(ctx.params, sample)
    if problem is not None:
        shown = json.dumps(sample[:SAMPLE_ROWS], default=str)
        raise NonRetryableError(f"check {ctx.task!r} failed: {problem}; rows: {shown}")
    return {"job_id": job.job_id, "passed": True, "rows": len(sample)}


def check_problem(params: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str | None:
    """What is wrong with a check's ``rows`` (at most SAMPLE_ROWS + 1 of them), or None."""
    expect = params.get("expect")
    count = f"{len(rows)}{'+' if len(rows) > SAMPLE_ROWS else ''}"
    if expect == "empty":
        return f"expected no rows, got {count}" if rows else None
    if len(rows) != 1:
        return f"expected one row, got {count}"
    row = rows[0]
    if "condition_column" in params:
        column = str(params["condition_column"])
        return None if row.get(column) is True else f"{column} is not true"
    expected: Mapping[str, Any] = expect if isinstance(expect, Mapping) else {}
    wrong = [f"{c} (want {v!r})" for c, v in expected.items() if not _same(row.get(c), v)]
    return "unexpected " + ", ".join(wrong) if wrong else None


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool) or actual is None:
        return actual is expected or actual == expected
    if isinstance(actual, int | float | Decimal) and isinstance(expected, int | float):
        return abs(float(actual) - float(expected)) <= 1e-9 * max(1.0, abs(float(expected)))
    if isinstance(actual, dt.date | dt.datetime | dt.time):
        return actual.isoformat() == str(expected)
    return bool(actual == expected)


# -- params ----------------------------------------------------------------------------------------


def query_parameters(ctx: HandlerContext) -> list[Any]:
    """Batch params, ``batch_id`` and ``pipeline``, then the task's ``query_parameters``
    (which win on a shared name) — only those the SQL names (``@name``): a parameter the query
    does not use is an error for some engines (the local BigQuery's DML path). Batch params
    whose name is not an identifier, or whose value is an object, are not offered."""
    used = set(_PARAMETER.findall(read_sql(ctx.params)))
    values: dict[str, Any] = {
        k: v
        for k, v in ctx.batch_params.items()
        if _IDENTIFIER.match(k) and not isinstance(v, Mapping)
    }
    values |= {"batch_id": ctx.batch_id, "pipeline": ctx.pipeline}
    values |= dict(ctx.params.get("query_parameters") or {})
    return [bq.parameter(name, value) for name, value in values.items() if name in used]


def read_sql(params: Mapping[str, Any]) -> str:
    """``sql``, or the text of ``sql_file`` under ``pipelines_dir`` (default schema/pipelines)."""
    if "sql" in params:
        return str(params["sql"])
    root = (get_settings().pipelines_dir or schema_dir() / "pipelines").resolve()
    path = (root / str(params["sql_file"])).resolve()
    if not path.is_relative_to(root):
        raise NonRetryableError(f"sql_file {params['sql_file']!r} is outside {root}")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NonRetryableError(f"sql_file {params['sql_file']!r}: {exc}") from exc


def _load_config(p: Mapping[str, Any]) -> bigquery.LoadJobConfig:
    source_format = _FORMATS.get(p["format"], p["format"])
    config = bigquery.LoadJobConfig(
        source_format=source_format,
        write_disposition=p.get("write_disposition", "WRITE_APPEND"),
        create_disposition=p.get("create_disposition", "CREATE_IF_NEEDED"),
    )
    if "schema" in p:
        config.schema = [bigquery.SchemaField.from_api_repr(dict(f)) for f in p["schema"]]
    elif source_format in {"CSV", "NEWLINE_DELIMITED_JSON"}:
        config.autodetect = bool(p.get("autodetect", True))
    for option in _LOAD_OPTIONS:
        if option in p:
            setattr(config, option, p[option])
    config.time_partitioning = _partitioning(p.get("time_partitioning"))
    config.clustering_fields = p.get("clustering_fields")
    return config


def _partitioning(spec: Mapping[str, Any] | None) -> bigquery.TimePartitioning | None:
    if spec is None:
        return None
    return bigquery.TimePartitioning(
        type_=spec.get("type", "DAY"),
        field=spec.get("field"),
        expiration_ms=spec.get("expiration_ms"),
    )


def _table(client: bigquery.Client, name: str) -> bigquery.TableReference:
    try:
        return bigquery.TableReference.from_string(name, default_project=client.project)
    except ValueError as exc:
        raise NonRetryableError(f"destination {name!r}: {exc}") from exc


def _table_name(table: bigquery.TableReference | None) -> str | None:
    return None if table is None else f"{table.project}.{table.dataset_id}.{table.table_id}"
