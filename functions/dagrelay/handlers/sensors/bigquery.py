"""``sensor.bigquery``: waits until a table exists, or holds at least ``min_rows`` rows, or a
partition of it (rows whose ``partition_field`` equals ``partition``) has rows. The count is a
parameterised query (values only through query parameters)::

    - name: wait_for_sales
      handler: sensor.bigquery
      params: {table: raw.sales, partition_field: day, partition: "{day}",
               poke_interval_s: 120, timeout_s: 7200}
"""

from __future__ import annotations

import re
from typing import Any, Self

from google.api_core.exceptions import NotFound
from google.cloud import bigquery
from pydantic import Field, model_validator

from dagrelay.handlers.bigquery import client as bq
from dagrelay.handlers.registry import HandlerContext, handler
from dagrelay.handlers.sensors import wait

_TABLE = r"^([A-Za-z0-9_.:-]+\.)?[A-Za-z0-9_]+\.[A-Za-z0-9_$-]+$"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BigQueryParams(wait.SensorParams):
    table: str = Field(pattern=_TABLE, description="dataset.table or project.dataset.table")
    min_rows: int = Field(0, ge=0, description="0: the table existing is enough.")
    partition_field: str | None = Field(None, pattern=_IDENTIFIER.pattern)
    partition: str | None = Field(
        None, min_length=1, description="The partition's value (compared as a string)."
    )

    @model_validator(mode="after")
    def whole_partition(self) -> Self:
        if (self.partition_field is None) != (self.partition is None):
            raise ValueError("give partition_field and partition together")
        return self


def awaited(params: BigQueryParams) -> str:
    what = f"BigQuery table {params.table}"
    if params.partition_field is not None:
        what += f" partition {params.partition_field}={params.partition}"
    if params.min_rows or params.partition_field is not None:
        what += f" with at least {max(params.min_rows, 1)} rows"
    return what


def find(params: BigQueryParams, client: bigquery.Client | None = None) -> wait.Found:
    """{"table", "rows"} once the table (or partition) is there with enough rows; else None."""
    client = client or bq.client()
    with bq.translated_errors(f"BigQuery table {params.table}"):
        try:
            table = client.get_table(
                params.table, retry=bq.api_retry(), timeout=bq.REQUEST_TIMEOUT_S
            )
        except NotFound:
            return None
        wanted = max(params.min_rows, 1 if params.partition_field else 0)
        if not wanted:
            return {"table": params.table, "created": _iso(table.created)}
        rows = _count(client, params)
    return {"table": params.table, "rows": rows} if rows >= wanted else None


def _count(client: bigquery.Client, params: BigQueryParams) -> int:
    sql = f"SELECT COUNT(*) AS n FROM `{params.table}`"  # the table's pattern is checked
    parameters = []
    if params.partition_field is not None:
        sql += f" WHERE CAST(`{params.partition_field}` AS STRING) = @partition"
        parameters = [bigquery.ScalarQueryParameter("partition", "STRING", params.partition)]
    config = bigquery.QueryJobConfig(query_parameters=parameters)
    job = client.query(sql, job_config=config, retry=bq.api_retry(), timeout=bq.REQUEST_TIMEOUT_S)
    rows = list(job.result(timeout=bq.REQUEST_TIMEOUT_S))
    return int(rows[0]["n"]) if rows else 0


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _poll(ctx: HandlerContext[BigQueryParams], job: Any) -> Any:
    return wait.poke(ctx, ctx.params, job, find(ctx.params))


@handler("sensor.bigquery", params=BigQueryParams, poll=_poll)
def bigquery_sensor(ctx: HandlerContext[BigQueryParams]) -> Any:
    """Wait for a table, a partition, or rows in BigQuery."""
    return wait.start(ctx, ctx.params, awaited(ctx.params), lambda: find(ctx.params))
