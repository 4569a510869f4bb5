"""Terraform's regex engine (RE2) refuses a repeat count over 1000, and ``can(regex(...))`` then
turns the error into ``false``: a validation that uses one refuses every value, its default too
(``terraform plan`` stopped at ``bigquery_datasets must be distinct dataset ids``). Python's
``re`` accepts such counts, so the other tests cannot see it: this one reads every pattern
given to ``regex``/``regexall`` in our Terraform and checks its counts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.terraform_helpers import REPO

MAX_REPEAT = 1000  # RE2's limit on {n}, {n,} and {n,m}
ROOTS = (REPO / "terraform", REPO / "functions/dagrelay/scaffold/template/terraform")
PATTERN = re.compile(r'\bregex(?:all)?\(\s*"((?:[^"\\]|\\.)*)"')
REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")


def terraform_files() -> list[Path]:
    return sorted(
        p for root in ROOTS for p in root.rglob("*") if p.name.endswith((".tf", ".tf.tmpl"))
    )


def patterns(text: str) -> list[tuple[int, str]]:
    """(line, pattern) of every literal pattern given to regex() or regexall()."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in PATTERN.finditer(text)]


def too_many(pattern: str) -> list[str]:
    return [
        m.group(0)
        for m in REPEAT.finditer(pattern)
        if max(int(n) for n in m.groups() if n) > MAX_REPEAT
    ]


def test_the_files_hold_patterns() -> None:
    found = [p for path in terraform_files() for p in patterns(path.read_text(encoding="utf-8"))]
    assert len(found) >= 5  # the scan sees the validations (it would pass vacuously otherwise)


@pytest.mark.parametrize("path", terraform_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_repeat_count_is_over_what_terraform_accepts(path: Path) -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}: {pattern!r} repeats {bad}"
        for line, pattern in patterns(path.read_text(encoding="utf-8"))
        for bad in too_many(pattern)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("pattern", "bad"),
    [("^[a-z]{0,1023}$", ["{0,1023}"]), ("^a{1001}$", ["{1001}"]), ("^a{0,1000}b{3,}$", [])],
)
def test_the_check_finds_counts_over_1000(pattern: str, bad: list[str]) -> None:
    assert too_many(pattern) == bad
