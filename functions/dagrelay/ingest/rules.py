"""Validation of a file's content against its source, and its month: the exact rules, with the
line and column of every problem. A stream in, typed chunks (or an InvalidFile) out, in bounded
memory. ``stream`` runs large CSV files through pyarrow first and falls back to these rules
whenever pyarrow cannot decide."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, BinaryIO

from dagrelay.errors import NonRetryableError
from dagrelay.ingest.sources import Column, ColumnType, Source

MAX_REPORTED_ERRORS = 5
MAX_LINE_BYTES = 16 << 20  # a longer line is not a row of a table: the file is refused
MAX_JSON_BYTES = 64 << 20  # a json array is parsed whole; larger files should be ndjson
CHUNK_ROWS = 50_000  # rows converted at a time: what bounds the memory of a large file
_BOM = b"\xef\xbb\xbf"
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class InvalidFile(NonRetryableError):
    """The file can never be loaded as it is: it is rejected with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rows:
    """Validated rows: one list of typed values per declared column."""

    columns: Mapping[str, list[Any]]
    count: int


Record = tuple[str, Mapping[str, Any]]  # (where, e.g. "line 3", {column: raw value})


def validate(data: bytes, source: Source) -> Rows:
    """The file's rows typed by the source's columns, or InvalidFile with every problem found
    (the first few, with their line and column). For files of any size use ``typed_chunks``
    over ``records`` of a stream, as this does."""
    columns: dict[str, list[Any]] = {c.name: [] for c in source.columns}
    count = 0
    for chunk in typed_chunks(records(io.BytesIO(data), source), source):
        for name, values in chunk.columns.items():
            columns[name] += values
        count += chunk.count
    return Rows(columns, count)


def records(stream: BinaryIO, source: Source) -> Iterator[Record]:
    """The file's records, read line by line from ``stream`` (bounded memory; a json array,
    which cannot be streamed, is read whole up to MAX_JSON_BYTES). InvalidFile when the file is
    empty, has no data rows, or is not UTF-8, CSV or JSON."""
    seen = _Seen()
    if source.format == "json":
        found = _json_records(_whole(stream, seen), source)
    else:
        reader = _csv_records if source.format == "csv" else _ndjson_records
        found = reader(decoded_lines(stream, seen), source)
    empty = True
    for record in found:
        empty = False
        yield record
    if empty:
        raise InvalidFile("file has a header but no data rows" if seen.text else "file is empty")


class _Seen:
    """Whether a file held anything but whitespace (which of the two empty-file reasons)."""

    text = False


def decoded_lines(stream: BinaryIO, seen: _Seen | None = None) -> Iterator[str]:
    """The stream's lines as text (newlines kept, a UTF-8 BOM dropped); InvalidFile naming the
    first byte that is not UTF-8, with its offset and line."""
    offset = 0
    for number in itertools.count(1):
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES:
            raise InvalidFile(f"line {number} is longer than {MAX_LINE_BYTES} bytes")
        if number == 1 and raw.startswith(_BOM):
            raw, offset = raw[len(_BOM) :], len(_BOM)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidFile(
                f"file is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {offset + exc.start}"
                f" (line {number})"
            ) from None
        offset += len(raw)
        if seen is not None and line.strip():
            seen.text = True
        yield line


def _whole(stream: BinaryIO, seen: _Seen) -> str:
    data = stream.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise InvalidFile(f"a json file is read whole: at most {MAX_JSON_BYTES} bytes; use ndjson")
    text = "".join(decoded_lines(io.BytesIO(data), seen))
    return text if text.strip() else "[]"  # nothing in it: "file is empty"


def typed_chunks(
    found: Iterable[Record], source: Source, chunk_rows: int = CHUNK_ROWS
) -> Iterator[Rows]:
    """``found`` typed by the source's columns, ``chunk_rows`` at a time. Every value is checked;
    once one is invalid nothing more is yielded, and InvalidFile (the first few problems, and
    how many there were) is raised at the end."""
    columns: dict[str, list[Any]] = {c.name: [] for c in source.columns}
    count, errors, shown = 0, 0, list[str]()
    for where, record in found:
        for column in source.columns:
            try:
                columns[column.name].append(convert(record.get(column.name), column))
            except ValueError as exc:
                errors += 1
                if len(shown) < MAX_REPORTED_ERRORS:
                    shown.append(f"{where}, column {column.name!r}: {exc}")
        count += 1
        if count >= chunk_rows:
            if not errors:
                yield Rows(columns, count)
            columns, count = {c.name: [] for c in source.columns}, 0
    if errors:
        raise InvalidFile(_summary(shown, errors))
    if count:
        yield Rows(columns, count)


def _summary(shown: list[str], total: int) -> str:
    more = total - len(shown)
    return f"{total} invalid value(s): " + "; ".join(shown) + (f"; and {more} more" if more else "")


def check_fields(fields: list[str], source: Source, where: str) -> None:
    """Missing required columns and undeclared columns, by name."""
    problems = field_problems(fields, source)
    if problems:
        raise InvalidFile(f"{where}: " + "; ".join(problems))


def field_problems(fields: list[str], source: Source) -> list[str]:
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
    return problems


def _csv_records(lines: Iterator[str], source: Source) -> Iterator[Record]:
    reader = csv.reader(lines)
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


def _ndjson_records(lines: Iterator[str], source: Source) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
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
    column = source.month_from.column if source.month_from else None
    values = rows.columns[column] if column else []
    return month_from(source, file_name, {f"{v.year:04d}-{v.month:02d}" for v in values if v})


def month_from(source: Source, file_name: str, months: set[str]) -> str | None:
    """The file's month from its name, or from ``months`` (the YYYY-MM of every value of the
    source's month column); InvalidFile when the source declares one and the file lacks it."""
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
    if len(months) != 1:
        found = ", ".join(sorted(months)) or "none"
        column = source.month_from.column
        raise InvalidFile(f"column {column!r} must hold dates of exactly one month (found {found})")
    return next(iter(months))
