"""Trigger rules as a table: rule x parent outcomes -> decision (None: wait)."""

from __future__ import annotations

import pytest

from dagrelay.engine.rules import Decision, ParentCounts, decide
from dagrelay.states import TaskStatus, TriggerRule

RUN, UF, SKIP = Decision.RUN, Decision.UPSTREAM_FAILED, Decision.SKIPPED
R = TriggerRule

# (rule, parents, succeeded, failed, skipped, expected)
CASES = [
    # all_success: every parent succeeded; a failure fails it, a skip skips it
    (R.ALL_SUCCESS, 3, 3, 0, 0, RUN),
    (R.ALL_SUCCESS, 3, 2, 0, 0, None),
    (R.ALL_SUCCESS, 3, 0, 0, 0, None),
    (R.ALL_SUCCESS, 3, 1, 1, 0, UF),
    (R.ALL_SUCCESS, 3, 0, 0, 1, None),  # a skip waits: a later failure must still win
    (R.ALL_SUCCESS, 3, 2, 0, 1, SKIP),
    (R.ALL_SUCCESS, 3, 0, 1, 1, UF),
    (R.ALL_SUCCESS, 1, 1, 0, 0, RUN),
    # all_done: runs once every parent ended, whatever the outcome
    (R.ALL_DONE, 3, 1, 1, 1, RUN),
    (R.ALL_DONE, 3, 0, 3, 0, RUN),
    (R.ALL_DONE, 3, 0, 0, 3, RUN),
    (R.ALL_DONE, 3, 1, 1, 0, None),
    (R.ALL_DONE, 2, 0, 0, 0, None),
    # all_failed: runs when every parent failed; any success or skip skips it
    (R.ALL_FAILED, 2, 0, 2, 0, RUN),
    (R.ALL_FAILED, 2, 0, 1, 0, None),
    (R.ALL_FAILED, 2, 1, 0, 0, SKIP),
    (R.ALL_FAILED, 2, 0, 1, 1, SKIP),
    (R.ALL_FAILED, 1, 0, 0, 0, None),
    # one_success: the first success runs it; all done without one: failed or skipped
    (R.ONE_SUCCESS, 3, 1, 0, 0, RUN),
    (R.ONE_SUCCESS, 3, 1, 2, 0, RUN),
    (R.ONE_SUCCESS, 3, 0, 2, 0, None),
    (R.ONE_SUCCESS, 3, 0, 2, 1, UF),
    (R.ONE_SUCCESS, 3, 0, 0, 3, SKIP),
    (R.ONE_SUCCESS, 3, 0, 3, 0, UF),
    # one_failed: the first failure runs it; all done without one: skipped
    (R.ONE_FAILED, 3, 0, 1, 0, RUN),
    (R.ONE_FAILED, 3, 2, 1, 0, RUN),
    (R.ONE_FAILED, 3, 2, 0, 0, None),
    (R.ONE_FAILED, 3, 2, 0, 1, SKIP),
    (R.ONE_FAILED, 3, 3, 0, 0, SKIP),
    # none_failed: runs when all ended with no failure (skips allowed)
    (R.NONE_FAILED, 3, 2, 0, 1, RUN),
    (R.NONE_FAILED, 3, 0, 0, 3, RUN),
    (R.NONE_FAILED, 3, 3, 0, 0, RUN),
    (R.NONE_FAILED, 3, 2, 0, 0, None),
    (R.NONE_FAILED, 3, 0, 1, 0, UF),
    (R.NONE_FAILED, 3, 1, 1, 1, UF),
]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c[0]}-{c[1]}p-{c[2]}s-{c[3]}f-{c[4]}k" for c in CASES]
)
def test_decide(case: tuple[TriggerRule, int, int, int, int, Decision | None]) -> None:
    rule, parents, succeeded, failed, skipped, expected = case
    counts = ParentCounts(parents, succeeded=succeeded, failed=failed, skipped=skipped)
    assert decide(rule, counts) == expected


def test_every_rule_is_in_the_table() -> None:
    assert {c[0] for c in CASES} == set(TriggerRule)


def _all_counts(parents: int) -> list[ParentCounts]:
    return [
        ParentCounts(parents, s, f, k)
        for s in range(parents + 1)
        for f in range(parents + 1 - s)
        for k in range(parents + 1 - s - f)
    ]


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_decision_is_final_and_reached_when_all_done(rule: TriggerRule) -> None:
    """Once decided, one more finished parent (of any outcome) never changes the decision; and
    when every parent has ended the decision is never 'wait'."""
    for counts in _all_counts(4):
        decision = decide(rule, counts)
        if counts.all_done:
            assert decision is not None, counts
            continue
        if decision is None:
            continue
        for more in (
            ParentCounts(4, counts.succeeded + 1, counts.failed, counts.skipped),
            ParentCounts(4, counts.succeeded, counts.failed + 1, counts.skipped),
            ParentCounts(4, counts.succeeded, counts.failed, counts.skipped + 1),
        ):
            assert decide(rule, more) == decision, (counts, more)


@pytest.mark.parametrize(
    ("parents", "succeeded", "failed", "skipped"),
    [
        (0, 0, 0, 0),
        (-1, 0, 0, 0),
        (2, -1, 0, 0),
        (2, 0, -1, 0),
        (2, 0, 0, -1),
        (2, 3, 0, 0),
        (2, 1, 1, 1),
        (1, 0, 1, 1),
    ],
)
def test_parent_counts_reject_invalid(
    parents: int, succeeded: int, failed: int, skipped: int
) -> None:
    with pytest.raises(ValueError, match=r"invalid counts|more finished parents"):
        ParentCounts(parents, succeeded=succeeded, failed=failed, skipped=skipped)


@pytest.mark.parametrize(
    ("outcomes", "parents", "expected"),
    [
        ([TaskStatus.SUCCESS, TaskStatus.ERROR], None, ParentCounts(2, 1, 1, 0)),
        ([TaskStatus.UPSTREAM_FAILED, TaskStatus.SKIPPED], 3, ParentCounts(3, 0, 1, 1)),
        ([], 2, ParentCounts(2, 0, 0, 0)),
        ([TaskStatus.SUCCESS] * 3, None, ParentCounts(3, 3, 0, 0)),
    ],
)
def test_parent_counts_of_outcomes(
    outcomes: list[TaskStatus], parents: int | None, expected: ParentCounts
) -> None:
    counts = ParentCounts.of(outcomes, parents)
    assert counts == expected
    assert counts.done == len(outcomes)
    assert counts.all_done == (expected.parents == len(outcomes))
