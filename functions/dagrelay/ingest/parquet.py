"""Validated rows as Parquet, typed by the source's declared columns (never inferred), and the
matching BigQuery schema."""

from __future__ import annotations

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from dagrelay.ingest.rules import Rows
from dagrelay.ingest.sources import Column, ColumnType, Source

_ARROW: dict[ColumnType, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "boolean": pa.bool_(),
}

BIGQUERY_TYPES: dict[ColumnType, str] = {
    "string": "STRING",
    "integer": "INT64",
    "float": "FLOAT64",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "boolean": "BOOL",
}


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW[c.type], nullable=not c.required) for c in columns])


def to_table(rows: Rows, source: Source) -> pa.Table:
    schema = arrow_schema(source.columns)
    arrays = [pa.array(rows.columns[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def to_batch(rows: Rows, source: Source) -> pa.RecordBatch:
    schema = arrow_schema(source.columns)
    arrays = [pa.array(rows.columns[f.name], type=f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def writer(path: str, columns: tuple[Column, ...]) -> pq.ParquetWriter:
    """A Parquet file written batch by batch (opening it truncates ``path``)."""
    return pq.ParquetWriter(path, arrow_schema(columns), compression="snappy")
