"""The SQL trigger-rule function equals dagrelay.engine.rules.decide, exhaustively."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.rules import ParentCounts, decide
from dagrelay.states import TriggerRule

pytestmark = pytest.mark.integration

MAX_PARENTS = 4
COMBINATIONS = [
    ParentCounts(p, s, f, k)
    for p in range(1, MAX_PARENTS + 1)
    for s in range(p + 1)
    for f in range(p + 1 - s)
    for k in range(p + 1 - s - f)
]

DECISIONS = text(
    "SELECT c.p, c.s, c.f, c.k, dagrelay_trigger_decision(CAST(:rule AS trigger_rule), "
    "c.p, c.s, c.f, c.k) "
    "FROM unnest(CAST(:p AS integer[]), CAST(:s AS integer[]), CAST(:f AS integer[]), "
    "CAST(:k AS integer[])) AS c(p, s, f, k)"
)


# What each rule can decide (None: wait); the SQL must reach every one of them on COMBINATIONS.
OUTCOMES: dict[TriggerRule, set[str | None]] = {
    TriggerRule.ALL_SUCCESS: {"RUN", "UPSTREAM_FAILED", "SKIPPED", None},
    TriggerRule.ALL_DONE: {"RUN", None},
    TriggerRule.ALL_FAILED: {"RUN", "SKIPPED", None},
    TriggerRule.ONE_SUCCESS: {"RUN", "UPSTREAM_FAILED", "SKIPPED", None},
    TriggerRule.ONE_FAILED: {"RUN", "SKIPPED", None},
    TriggerRule.NONE_FAILED: {"RUN", "UPSTREAM_FAILED", None},
}


def test_the_combinations_are_every_valid_count_once() -> None:
    """Checked against ParentCounts' own validation, not against how COMBINATIONS is built."""
    box = range(MAX_PARENTS + 1)
    valid = set()
    for p, s, f, k in itertools.product(box, repeat=4):
        try:
            valid.add(ParentCounts(p, s, f, k))
        except ValueError:
            continue
    assert len(set(COMBINATIONS)) == len(COMBINATIONS)
    assert set(COMBINATIONS) == valid


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_sql_decision_equals_python(db: Engine, rule: TriggerRule) -> None:
    with db.connect() as conn:
        rows = conn.execute(
            DECISIONS,
            {
                "rule": rule.value,
                "p": [c.parents for c in COMBINATIONS],
                "s": [c.succeeded for c in COMBINATIONS],
                "f": [c.failed for c in COMBINATIONS],
                "k": [c.skipped for c in COMBINATIONS],
            },
        ).all()
    assert len(rows) == len(COMBINATIONS)
    sql = {ParentCounts(*row[:4]): row[4] for row in rows}
    python = {c: (d.value if (d := decide(rule, c)) else None) for c in COMBINATIONS}
    mismatches = {c: (sql[c], python[c]) for c in COMBINATIONS if sql[c] != python[c]}
    assert mismatches == {}
    assert set(sql.values()) == OUTCOMES[rule]
