"""Pure ingestion rules: object name -> source, content validation, months, sources config."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from dagrelay.errors import ConfigError
from dagrelay.ingest.parquet import arrow_schema, to_table
from dagrelay.ingest.rules import InvalidFile, month_of, month_of_name, validate
from dagrelay.ingest.sources import load_sources, match_object, parse_sources

SOURCES = load_sources()
SALES = SOURCES["sales"]
EVENTS = SOURCES["events"]
HEADER = "sale_date,region,product,quantity,amount\n"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("inbox/sales/sales_2024-03.csv", ("sales", "sales_2024-03.csv")),
        ("inbox/sales/2024/sales_2024-03.csv", ("sales", "2024/sales_2024-03.csv")),
        ("inbox/unknown/x.csv", None),
        ("inbox/sales/", None),
        ("inbox/sales", None),
        ("archive/sales/1/sales_2024-03.csv", None),
        ("staging/sales/1/sales_2024-03.csv.parquet", None),
        ("sales/2024-03.csv", None),
    ],
)
def test_match_object(name: str, expected: tuple[str, str] | None) -> None:
    match = match_object(name, SOURCES)
    assert (None if match is None else (match.source.name, match.file_name)) == expected


def test_valid_csv_is_typed() -> None:
    rows = validate((HEADER + "2024-03-01,north,,3,1.5\n").encode(), SALES)
    assert rows.count == 1
    assert rows.columns == {
        "sale_date": [date(2024, 3, 1)],
        "region": ["north"],
        "product": [None],
        "quantity": [3],
        "amount": [1.5],
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "file is empty"),
        (HEADER.encode(), "file has a header but no data rows"),
        (b"sale_date,region\n2024-03-01,n\n", "missing required column(s) quantity, amount"),
        ((HEADER.rstrip() + ",vat\n").encode(), "undeclared column(s) vat"),
        (
            (HEADER + "2024-03-01,north,w,3,1\n2024-03-02,south,w,x,1\n").encode(),
            "line 3, column 'quantity': 'x' is not an integer",
        ),
        ((HEADER + "2024-03-01,north,w,3\n").encode(), "line 2: 4 fields, the header has 5"),
        ((HEADER + "2024-03-01,,w,3,1\n").encode(), "line 2, column 'region': missing value"),
        ((HEADER + "2024-13-01,n,w,3,1\n").encode(), "'2024-13-01' is not a date"),
        ((HEADER + "2024-03-01,Z\xfcrich,w,3,1\n").encode("latin-1"), "not UTF-8: byte 0xfc"),
    ],
)
def test_invalid_csv(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidFile) as err:
        validate(data, SALES)
    assert reason in err.value.reason


def test_errors_are_counted_and_capped() -> None:
    data = HEADER + "".join(f"2024-03-01,n,w,q{i},1\n" for i in range(8))
    with pytest.raises(InvalidFile) as err:
        validate(data.encode(), SALES)
    assert err.value.reason.startswith("8 invalid value(s): line 2, column 'quantity'")
    assert err.value.reason.endswith("and 3 more")


def test_ndjson_types_and_errors() -> None:
    good = b'{"event_time": "2024-03-01T10:00:00+01:00", "user_id": 7}\n\n'
    rows = validate(good, EVENTS)
    assert rows.columns["event_time"] == [datetime(2024, 3, 1, 9, tzinfo=UTC)]
    assert rows.columns["page"] == [None]
    with pytest.raises(InvalidFile, match=r"line 3, column 'user_id': True is not an integer"):
        validate(good + b'{"event_time": "2024-03-01T00:00:00", "user_id": true}\n', EVENTS)
    with pytest.raises(InvalidFile, match=r"line 1: undeclared column\(s\) extra"):
        validate(b'{"event_time": "2024-03-01", "user_id": 1, "extra": 1}\n', EVENTS)
    with pytest.raises(InvalidFile, match=r"line 1: not valid JSON"):
        validate(b"{nope\n", EVENTS)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [("1", True), ("-5", True), ("1_000", False), ("1.0", False), ("9" * 20, False)],
)
def test_integer_conversion(raw: str, ok: bool) -> None:
    data = f"{HEADER}2024-03-01,n,w,{raw},1\n".encode()
    if ok:
        assert validate(data, SALES).columns["quantity"] == [int(raw)]
    else:
        with pytest.raises(InvalidFile):
            validate(data, SALES)


@pytest.mark.parametrize(
    ("name", "month"),
    [
        ("sales_2024-03.csv", "2024-03"),
        ("2024/sales-2024-11.csv", "2024-11"),
        ("sales_2024-13.csv", None),
        ("sales.csv", None),
    ],
)
def test_month_of_name(name: str, month: str | None) -> None:
    assert month_of_name(SALES, name) == month


def test_month_of_file_without_one_is_invalid() -> None:
    rows = validate((HEADER + "2024-03-01,n,w,1,1\n").encode(), SALES)
    with pytest.raises(InvalidFile, match="carries no month"):
        month_of(SALES, "sales.csv", rows)


def test_month_from_a_column_needs_one_month() -> None:
    one = b'{"event_time": "2024-03-01T00:00:00Z", "user_id": 1}\n'
    assert month_of(EVENTS, "e.json", validate(one, EVENTS)) == "2024-03"
    two = one + b'{"event_time": "2024-04-01T00:00:00Z", "user_id": 1}\n'
    with pytest.raises(InvalidFile, match=r"exactly one month \(found 2024-03, 2024-04\)"):
        month_of(EVENTS, "e.json", validate(two, EVENTS))


def test_arrow_table_follows_declared_types() -> None:
    rows = validate((HEADER + "2024-03-01,n,,1,2\n").encode(), SALES)
    table = to_table(rows, SALES)
    assert table.schema == arrow_schema(SALES.columns)
    assert [str(f.type) for f in table.schema] == [
        "date32[day]",
        "string",
        "string",
        "int64",
        "double",
    ]
    assert [f.nullable for f in table.schema] == [False, False, True, False, False]


def _config(**source: Any) -> dict[str, Any]:
    base = {"format": "csv", "target_table": "d.t", "columns": [{"name": "a", "type": "string"}]}
    return {"sources": {"s": {**base, **source}}}


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"format": "xml"}, "'xml' is not one of"),
        ({"target_table": "no_dataset"}, "does not match"),
        ({"month_from": {"file_name": "(\\d+)"}}, "needs groups"),
        ({"month_from": {"column": "a"}}, "must be a declared date or timestamp column"),
        ({"triggers": [{"pipeline": "p"}]}, "take its month from the file name"),
        (
            {
                "month_from": {"file_name": "(?P<year>\\d{4})(?P<month>\\d\\d)"},
                "triggers": [{"pipeline": "p", "requires": ["ghost"]}],
            },
            "unknown source 'ghost'",
        ),
    ],
)
def test_invalid_sources_config(source: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_sources(_config(**source))


def test_example_sources_trigger_monthly_profit() -> None:
    triggers = {name: s.triggers for name, s in SOURCES.items()}
    assert triggers["sales"][0].pipeline == "monthly_profit"
    assert triggers["sales"][0].requires == ("expenses",)
    assert triggers["expenses"][0].requires == ("sales",)
