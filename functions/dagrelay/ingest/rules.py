"""Validation of a file's content against its source, and its month. Pure: bytes in, typed
columns (or an InvalidFile naming the line and column) out."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from dagrelay.errors import NonRetryableError
from dagrelay.ingest.sources import Column, ColumnType, Source

MAX_REPORTED_ERRORS = 5
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class InvalidFile(NonRetryableError):
    """The file can never be loaded as it is: it is rejected with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rows:
    """A validated file: one list of typed values per declared column."""

    columns: Mapping[str, list[Any]]
    count: int


Record = tuple[str, Mapping[str, Any]]  # (where, e.g. "line 3", {column: raw value})


def validate(data: bytes, source: Source) -> Rows:
    """The file's rows typed by the source's columns, or InvalidFile with every problem found
    (the first few, with their line and column)."""
    text = decode(data)
    records = list(_records(text, source))
    if not records:
        raise InvalidFile("file has a header but no data rows" if text.strip() else "file is empty")
    columns: dict[str, list[Any]] = {c.name: [] for c in source.columns}
    errors: list[str] = []
    for where, record in records:
        for column in source.columns:
            try:
                columns[column.name].append(convert(record.get(column.name), column))
            except ValueError as exc:
                errors.append(f"{where}, column {column.name!r}: {exc}")
    if errors:
        raise InvalidFile(_summary(errors))
    return Rows(columns, len(records))


def decode(data: bytes) -> str:
    if not data:
        raise InvalidFile("file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidFile(
            f"file is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line})"
        ) from None


def _summary(errors: list[str]) -> str:
    shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
    more = len(errors) - MAX_REPORTED_ERRORS
    return f"{len(errors)} invalid value(s): {shown}" + (f"; and {more} more" if more > 0 else "")


def _records(text: str, source: Source) -> Iterator[Record]:
    readers: dict[str, Callable[[str, Source], Iterator[Record]]] = {
        "csv": _csv_records,
        "ndjson": _ndjson_records,
        "json": _json_records,
    }
    return readers[source.format](text, source)


def check_fields(fields: list[str], source: Source, where: str) -> None:
    """Missing required columns and undeclared columns, by name."""
    declared = {c.name for c in source.columns}
    missing = [c.name for c in source.columns if c.required and c.name not in fields]
    extra = [f for f in fields if f not in declared]
    problems = []
    if missing:
        problems.append(f"missing required column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"undeclared column(s) {', '.join(extra)}")
    if len(set(fields)) != len(fields):
        problems.append("a column appears twice")
    if problems:
        raise InvalidFile(f"{where}: " + "; ".join(problems))


def _csv_records(text: str, source: Source) -> Iterator[Record]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        check_fields(header, source, "header (line 1)")
        for row in reader:
            if not row:
                continue  # blank line
            where = f"line {reader.line_num}"
            if len(row) != len(header):
                raise InvalidFile(f"{where}: {len(row)} fields, the header has {len(header)}")
            yield where, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        raise InvalidFile(f"line {reader.line_num}: not valid CSV: {exc}") from None


def _ndjson_records(text: str, source: Source) -> Iterator[Record]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield _object(_json(line, f"line {number}"), source, f"line {number}")


def _json_records(text: str, source: Source) -> Iterator[Record]:
    value = _json(text, "file")
    if not isinstance(value, list):
        raise InvalidFile(f"a json file must hold an array of objects, not {type(value).__name__}")
    for number, item in enumerate(value, start=1):
        yield _object(item, source, f"item {number}")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidFile(f"{where}: not valid JSON: {exc}") from None


def _object(value: Any, source: Source, where: str) -> Record:
    if not isinstance(value, dict):
        raise InvalidFile(f"{where}: expected a JSON object, got {type(value).__name__}")
    check_fields(list(value), source, where)
    return where, value


def convert(raw: Any, column: Column) -> Any:
    """A raw value (CSV text or a JSON value) as the column's Python type; None when absent
    (ValueError when the column is required); ValueError naming the value when it does not fit."""
    if raw is None or raw == "":
        if column.required:
            raise ValueError("missing value in a required column")
        return None
    return _CONVERTERS[column.type](raw)


def _string(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    raise ValueError(f"{raw!r} is not a string")


def _integer(raw: Any) -> int:
    if isinstance(raw, bool | float | dict | list) or (isinstance(raw, str) and "_" in raw):
        raise ValueError(f"{raw!r} is not an integer")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not an integer") from None
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{raw!r} does not fit in 64 bits")
    return value


def _float(raw: Any) -> float:
    if isinstance(raw, bool | dict | list) or (isinstance(raw, str) and "_" in raw):
        raise ValueError(f"{raw!r} is not a number")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None


def _date(raw: Any) -> date:
    try:
        return date.fromisoformat(_string(raw))
    except ValueError:
        raise ValueError(f"{raw!r} is not a date (YYYY-MM-DD)") from None


def _timestamp(raw: Any) -> datetime:
    try:
        value = datetime.fromisoformat(_string(raw))
    except ValueError:
        raise ValueError(f"{raw!r} is not an ISO 8601 timestamp") from None
    # A timestamp without an offset is read as UTC, as BigQuery does.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower() if isinstance(raw, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not a boolean (true/false)")


_CONVERTERS: dict[ColumnType, Callable[[Any], Any]] = {
    "string": _string,
    "integer": _integer,
    "float": _float,
    "date": _date,
    "timestamp": _timestamp,
    "boolean": _boolean,
}


def month_of_name(source: Source, file_name: str) -> str | None:
    """``YYYY-MM`` read from the file's base name by ``month_from.file_name``; None when the
    source does not read months from names or the name does not match."""
    pattern = source.month_from.file_name if source.month_from else None
    if pattern is None:
        return None
    found = pattern.search(file_name.rsplit("/", 1)[-1])
    if found is None:
        return None
    year, month = found.group("year"), found.group("month")
    if not (year.isdigit() and len(year) == 4 and month.isdigit() and 1 <= int(month) <= 12):
        return None
    return f"{year}-{int(month):02d}"


def month_of(source: Source, file_name: str, rows: Rows) -> str | None:
    """The file's month, or InvalidFile when the source declares one and the file lacks it."""
    if source.month_from is None:
        return None
    if source.month_from.file_name is not None:
        month = month_of_name(source, file_name)
        if month is None:
            raise InvalidFile(
                f"file name {file_name!r} carries no month"
                f" (expected a match of {source.month_from.file_name.pattern!r})"
            )
        return month
    column = source.month_from.column or ""
    months = sorted({f"{v.year:04d}-{v.month:02d}" for v in rows.columns[column] if v is not None})
    if len(months) != 1:
        found = ", ".join(months) or "none"
        raise InvalidFile(f"column {column!r} must hold dates of exactly one month (found {found})")
    return months[0]
