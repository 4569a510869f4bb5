"""Trigger rules: what happens to a child given its parents' terminal outcomes.

The same decision runs inside PostgreSQL (``dagrelay_trigger_decision`` in the migration), where
the engine applies it set-based; this pure version documents it and is tested exhaustively
against the SQL one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dagrelay.states import TaskStatus, TriggerRule


class Decision(StrEnum):
    RUN = "RUN"
    UPSTREAM_FAILED = TaskStatus.UPSTREAM_FAILED
    SKIPPED = TaskStatus.SKIPPED


@dataclass(frozen=True)
class ParentCounts:
    """How many of a child's parents ended in each way (the rest have not ended yet)."""

    parents: int
    succeeded: int = 0
    failed: int = 0  # ERROR or UPSTREAM_FAILED
    skipped: int = 0

    def __post_init__(self) -> None:
        if min(self.succeeded, self.failed, self.skipped) < 0 or self.parents < 1:
            raise ValueError(f"invalid counts {self}")
        if self.done > self.parents:
            raise ValueError(f"more finished parents than parents: {self}")

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def all_done(self) -> bool:
        return self.done == self.parents

    @classmethod
    def of(cls, outcomes: list[TaskStatus], parents: int | None = None) -> ParentCounts:
        return cls(
            parents=len(outcomes) if parents is None else parents,
            succeeded=sum(o == TaskStatus.SUCCESS for o in outcomes),
            failed=sum(o.failed for o in outcomes),
            skipped=sum(o == TaskStatus.SKIPPED for o in outcomes),
        )


def decide(rule: TriggerRule, c: ParentCounts) -> Decision | None:  # noqa: PLR0911, PLR0912
    """The child's fate, or None while it must wait for more parents.

    Once a decision is reached it never changes as further parents finish, so whichever parent
    completion first makes it creates the child, and later ones find it there.
    """
    match rule:
        case TriggerRule.ALL_SUCCESS:
            if c.failed:
                return Decision.UPSTREAM_FAILED
            if c.skipped:  # wait: a later failure must still win (UPSTREAM_FAILED)
                return Decision.SKIPPED if c.all_done else None
            return Decision.RUN if c.succeeded == c.parents else None
        case TriggerRule.ALL_DONE:
            return Decision.RUN if c.all_done else None
        case TriggerRule.ALL_FAILED:
            if c.succeeded or c.skipped:
                return Decision.SKIPPED
            return Decision.RUN if c.failed == c.parents else None
        case TriggerRule.ONE_SUCCESS:
            if c.succeeded:
                return Decision.RUN
            if c.all_done:
                return Decision.UPSTREAM_FAILED if c.failed else Decision.SKIPPED
            return None
        case TriggerRule.ONE_FAILED:
            if c.failed:
                return Decision.RUN
            return Decision.SKIPPED if c.all_done else None
        case TriggerRule.NONE_FAILED:
            if c.failed:
                return Decision.UPSTREAM_FAILED
            return Decision.RUN if c.all_done else None
