"""Showing a rejected message: its stored data decoded (dagrelay.ops.rejections) and the
--since option of ``dagrelay rejected``."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from dagrelay.cli.rejected import parse_since
from dagrelay.errors import DagrelayError
from dagrelay.ops.rejections import decode, safe


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("data", "attributes", "size", "expected"),
    [
        pytest.param(None, {}, 0, ("empty", "(no data)", None), id="no data"),
        pytest.param(
            b64(b'{"action":"sweep"}'), {}, 24, ("json", '{"action": "sweep"}', "sweep"), id="json"
        ),
        pytest.param(
            b64(b"[1,2]"), {"action": "rerun"}, 8, ("json", "[1, 2]", "rerun"), id="json array"
        ),
        pytest.param(
            b64(b'{"action": 3}'), {"action": "x"}, 20, ("json", '{"action": 3}', "x"),
            id="action not a string",
        ),
        pytest.param(b64(b"hi\nthere"), {}, 12, ("text", "hi\\nthere", None), id="text"),
        pytest.param(b64(b"\xff\x00a"), {}, 4, ("binary", "\\xff\\x00a", None), id="binary"),
        pytest.param("@@@", {"action": "run_task"}, 3, ("not-base64", "@@@", "run_task"),
                     id="not base64"),
        pytest.param(
            b64(b'{"action": "start_batch", "pipeline": "p"}')[:20], {}, 10_000,
            ("text", '{"action": "sta', None), id="cut at 64 KiB",
        ),
    ],
)  # fmt: skip
def test_decode(
    data: str | None, attributes: dict[str, str], size: int, expected: tuple[str, str, str | None]
) -> None:
    decoded = decode(data, attributes, size)
    assert (decoded.kind, decoded.text, decoded.action) == expected


def test_safe_escapes_what_a_terminal_would_obey() -> None:
    assert safe("a b\x1b[31m\u202e\t") == "a b\\x1b[31m\\u202e\\t"
    assert safe("héllo ✓") == "héllo ✓"


def test_preview_is_bounded() -> None:
    decoded = decode(b64(b'"' + b"x" * 500 + b'"'), {}, 504)
    assert len(decoded.preview()) == 200
    assert decoded.preview().endswith("…")


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("90s", datetime(2024, 3, 1, 11, 58, 30, tzinfo=UTC)),
        ("2h", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("7d", datetime(2024, 2, 23, 12, tzinfo=UTC)),
        ("2024-03-01T08:00", datetime(2024, 3, 1, 8, tzinfo=UTC)),
        ("2024-03-01T08:00+01:00", datetime(2024, 3, 1, 7, tzinfo=UTC)),
    ],
)
def test_parse_since(since: str, expected: datetime) -> None:
    assert parse_since(since, datetime(2024, 3, 1, 12, tzinfo=UTC)) == expected


def test_parse_since_refuses_what_it_cannot_read() -> None:
    assert parse_since(None, datetime(2024, 3, 1, tzinfo=UTC)) is None
    with pytest.raises(DagrelayError, match="neither an age"):
        parse_since("3 weeks", datetime(2024, 3, 1, tzinfo=UTC))
