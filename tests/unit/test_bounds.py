"""The one helper that bounds every error stored in a table."""

from __future__ import annotations

import pytest

from dagrelay.bounds import MAX_ERROR_CHARS, stored_error, stored_error_or_none


def test_a_short_error_is_kept_as_it_is_but_storable() -> None:
    assert stored_error("boom") == "boom"
    assert stored_error("a\x00b") == "a\\u0000b"  # PostgreSQL text cannot hold NUL
    assert stored_error_or_none(None) is None


@pytest.mark.parametrize("size", [MAX_ERROR_CHARS + 1, 8_900_000])
def test_a_long_error_keeps_its_start_and_names_its_size(size: int) -> None:
    text = "s" + "x" * (size - 1)
    stored = stored_error(text)
    assert len(stored) == MAX_ERROR_CHARS
    assert stored.startswith("sxx")
    assert stored.endswith(f" [… cut: {size:,} characters in all]")


def test_a_traceback_keeps_its_end() -> None:
    stored = stored_error("head" + "x" * 10_000 + "tail", keep_end=True)
    assert len(stored) == MAX_ERROR_CHARS
    assert stored.startswith("[… cut: 10,008 characters in all] x")
    assert stored.endswith("xtail")


def test_a_tiny_limit_still_holds() -> None:
    assert len(stored_error("x" * 100, 10)) == 10
