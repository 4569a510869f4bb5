"""A downloaded file, checked and (optionally) written as Parquet, in bounded memory whatever its
size: it is read in blocks and converted batch by batch, never held whole.

CSV goes through pyarrow's streaming reader (``pyarrow.csv.open_csv``, every column read as text)
and vectorised casts that accept only what the exact rules (``rules``) accept, with the same
values. Whenever that fast path cannot decide (a value it does not take, a missing required
value, a header problem, text that is not UTF-8) it gives up and the file is read again by the
exact rules, which convert it or reject it naming the line and column. NDJSON and JSON always
take the exact rules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

from dagrelay.ingest import parquet, rules
from dagrelay.ingest.sources import Source

log = logging.getLogger(__name__)

# pyarrow's read unit: a batch holds about this much text. Measured: with 4 MiB blocks the
# reader's memory pool grew with the file (67 MiB at 50 MB, 157 MiB at 200 MB); 1 MiB stays flat.
BLOCK_BYTES = 1 << 20
_INTEGER = r"^-?[0-9]+$"  # pyarrow's cast also takes 0x10, which the exact rules refuse


class _Undecided(Exception):
    """The fast path cannot decide this file; the exact rules will."""


@dataclass(frozen=True)
class Scanned:
    rows: int
    months: frozenset[str]  # YYYY-MM of the month column's values (when the source has one)


def scan(path: Path, source: Source, parquet_out: Path | None = None) -> Scanned:
    """Check the file at ``path`` against ``source`` (InvalidFile when it does not fit) and,
    with ``parquet_out``, write it there as Parquet typed by the declared columns."""
    if source.format == "csv":
        try:
            return _consume(_fast_csv(path, source), source, parquet_out)
        except _Undecided as why:
            log.info("exact validation: %s", why, extra={"action": "ingest", "file": str(path)})
    return _consume(_exact(path, source), source, parquet_out)


def _consume(
    batches: Iterator[pa.RecordBatch], source: Source, parquet_out: Path | None
) -> Scanned:
    month_column = source.month_from.column if source.month_from else None
    rows, months = 0, set()
    sink = parquet.writer(str(parquet_out), source.columns) if parquet_out else None
    try:
        for batch in batches:
            rows += batch.num_rows
            if month_column:
                months |= _months(batch.column(month_column))
            if sink is not None:
                sink.write_batch(batch)
    finally:
        if sink is not None:
            sink.close()
    return Scanned(rows, frozenset(months))


def _months(values: pa.Array) -> set[str]:
    found = pc.unique(pc.drop_null(pc.strftime(values, format="%Y-%m")))
    return {str(v) for v in found.to_pylist()}


def _exact(path: Path, source: Source) -> Iterator[pa.RecordBatch]:
    with path.open("rb") as stream:
        for chunk in rules.typed_chunks(rules.records(stream, source), source):
            yield parquet.to_batch(chunk, source)


def _fast_csv(path: Path, source: Source) -> Iterator[pa.RecordBatch]:
    schema = parquet.arrow_schema(source.columns)
    convert = pacsv.ConvertOptions(
        column_types={c.name: pa.string() for c in source.columns},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    rows = 0
    try:
        reader = pacsv.open_csv(
            str(path),
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            convert_options=convert,
        )
        names = list(reader.schema.names)
        if rules.field_problems(names, source) or not names or names[0].startswith("\ufeff"):
            raise _Undecided("the header needs the exact rules")
        for batch in reader:
            rows += batch.num_rows
            yield _typed(batch, schema)
    except pa.ArrowInvalid as exc:
        raise _Undecided(str(exc)) from None
    if rows == 0:
        raise _Undecided("no data rows")


def _typed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        text = batch.column(index) if index >= 0 else pa.nulls(batch.num_rows, pa.string())
        digits = pc.match_substring_regex(text, _INTEGER)
        if pa.types.is_integer(field.type) and pc.all(digits).as_py() is False:
            raise _Undecided(f"column {field.name}: a value the exact rules must judge")
        typed = text if pa.types.is_string(field.type) else pc.cast(text, field.type)
        if not field.nullable and typed.null_count:
            raise _Undecided(f"column {field.name}: a missing required value")
        arrays.append(typed)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
