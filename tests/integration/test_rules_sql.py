"""The SQL trigger-rule function equals dagrelay.engine.rules.decide, exhaustively."""

from __future__ import annotations

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


def test_every_combination_is_covered() -> None:
    assert len(COMBINATIONS) == sum((p + 1) * (p + 2) * (p + 3) // 6 for p in range(1, 5))


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
