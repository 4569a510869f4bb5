"""The one statement that reads the queries of every invariant (tests/invariants.py): each
invariant declares its queries, each query's binds are its own, each column names its invariant."""

from __future__ import annotations

import re

from tests import invariants


def test_every_invariant_declares_its_queries() -> None:
    for check in invariants.AT_QUIESCENCE:
        assert invariants.QUERIES.get(check.__name__), check.__name__


def test_each_column_names_its_invariant_and_query() -> None:
    names = tuple(c.__name__ for c in invariants.AT_QUIESCENCE)
    sql = invariants.statement(names).text
    labels = re.findall(r'\) r\) AS "([^"]+)"', sql)
    assert labels == [f"{n}.{k}" for n in names for k in invariants.QUERIES[n]]


def test_binds_are_prefixed_per_query_and_casts_left_alone() -> None:
    sql = (
        "SELECT x::text FROM t WHERE a = ANY(CAST(:open AS task_status[])) "
        "AND b LIKE 'schedule:%' AND c = :open"
    )
    assert invariants._prefixed(sql, "q3_") == (
        "SELECT x::text FROM t WHERE a = ANY(CAST(:q3_open AS task_status[])) "
        "AND b LIKE 'schedule:%' AND c = :q3_open"
    )


def test_the_statement_binds_exactly_the_parameters_it_is_given() -> None:
    """Every bind of the statement has a value (constants and facts), and no value is left
    without its bind: two queries using the same name (``open``, ``topic``) never share one."""
    names = tuple(c.__name__ for c in invariants.AT_QUIESCENCE)
    binds = set(invariants.statement(names).compile().params)
    given = {
        f"q{i}_{k}"
        for i, (_, _, query) in enumerate(invariants._queries(names))
        for k in query.values(invariants.Facts())
    }
    assert binds == given
    assert {"q0_finished", "q0_open"} <= binds


def test_facts_reach_the_queries_as_json() -> None:
    facts = invariants.Facts(cancelled={("p", "b"): frozenset({3, 1})}, resumed={("p", "b")})
    assert invariants._cancelled(facts) == {
        "cancelled": '[{"pipeline": "p", "batch_id": "b", "known": [1, 3]}]'
    }
    assert invariants._resumed(facts) == {"resumed": '[{"pipeline": "p", "batch_id": "b"}]'}
    assert invariants._stopped(invariants.Facts()) == {"stopped": "[]"}
