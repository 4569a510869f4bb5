"""The bugs the model-based test found (issue 18), each as the short sequence of the model's
steps that shows it, replayed through the same machine (tests/integration/test_state_machine.py)
with every invariant of tests/invariants.py checked after each step and at quiescence. They ran
red on the code before the fixes (1e74d1e) and pass on main."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dagrelay.engine.hooks import HookPoint
from dagrelay.states import TriggerRule
from tests.integration.test_state_machine import (
    HARNESS,
    RETRYABLE,
    DagrelayMachine,
    Harness,
    Pipeline,
    Task,
    open_harness,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(template_db: str) -> Iterator[Harness]:
    with open_harness(template_db) as h:
        HARNESS.append(h)
        try:
            yield h
        finally:
            HARNESS.pop()


@pytest.fixture
def machine(model: Harness) -> Iterator[DagrelayMachine]:
    m = DagrelayMachine()
    yield m
    m.teardown()  # quiesces and checks every invariant (quiescence's too)


def checked(m: DagrelayMachine) -> None:
    m.holds()


def test_resume_after_cancel_mid_map_runs_the_other_items(machine: DagrelayMachine) -> None:
    """Bug 1: cancel while an instance of a mapped task runs, then resume: the batch ended
    SUCCESS with the other items (and everything downstream) never run."""
    m = machine
    m.define(Pipeline((Task(items=(1, 2)), Task(parents=(0,), map=()), Task(parents=(1,)))))
    m.start_batch("b1")
    checked(m)
    m.deliver_next()  # t0: two items
    checked(m)
    m.cancel_mid_map(0, False)  # t1[0] runs; the operator cancels the batch
    checked(m)
    m.resume(0)
    checked(m)
    m._quiesce()  # checks every invariant: t1[1] and t2 ran, the batch SUCCESS
    assert m._batch_status("b1") == "SUCCESS"


def test_rerun_of_a_cancelling_batch_is_refused(machine: DagrelayMachine) -> None:
    """Bug 2: a rerun of a CANCELLING batch set it back to RUNNING (the cancel undone)."""
    m = machine
    m.define(Pipeline((Task(), Task())))
    m.start_batch("b1")
    m.deliver(0, RETRYABLE, HookPoint.AFTER_CLAIM)  # t0 claimed, its worker died: PROCESSING
    checked(m)
    m.cancel(0)  # CANCELLING while t0's attempt runs
    checked(m)
    assert m._batch_status("b1") == "CANCELLING"
    m.rerun(0, 1, False)  # rerun t1: refused, the batch stays CANCELLING
    checked(m)
    assert m._batch_status("b1") == "CANCELLING"
    m.rerun_failed(0)
    checked(m)
    assert m._batch_status("b1") == "CANCELLING"


def test_a_value_the_database_refuses_ends_the_task_error(machine: DagrelayMachine) -> None:
    """Bug 4: a NUL among a mapped task's items made the database refuse the instances; the
    router rejected the parent's own run_task as a bad message and it stayed PROCESSING."""
    m = machine
    m.define(Pipeline((Task(items=("nul\x00item",)), Task(parents=(0,), map=()))))
    m.start_batch("b1")
    m.deliver_next()  # t0 succeeds; its items cannot be stored: t0 ends ERROR, no rejection
    checked(m)
    m._quiesce()
    assert m._batch_status("b1") == "FAILED"


def test_a_stale_run_task_after_a_downstream_rerun_is_ignored(machine: DagrelayMachine) -> None:
    """Found on main by the model: a duplicate run_task of a child whose row a rerun
    --downstream removed was recorded as a rejected (bad) message, although the engine sent it."""
    m = machine
    m.define(Pipeline((Task(), Task(parents=(0,)))))
    m.start_batch("b1")
    m.deliver_next()  # t0 runs; t1's run_task is published
    m.duplicate(0)  # ... and delivered twice
    m.deliver_next()  # t1 runs
    m.rerun(0, 0, True)  # t0 again, t1's row reset until t0 ends
    checked(m)
    m.deliver_next()  # the stale duplicate of t1's run_task: ignored, not rejected
    checked(m)


def test_an_output_the_database_refuses_ends_the_task_error(machine: DagrelayMachine) -> None:
    """Bug 4 as the CI profile shrank it on the old code: a NUL in a task's own output (no map
    involved) made its run_task a rejected message."""
    m = machine
    m.define(Pipeline((Task(items=(1, "nul\x00item")), Task(retries=1, items=(1, 2)))))
    m.start_batch("b1")
    m.deliver_next()
    checked(m)
    m._quiesce()
    assert m._batch_status("b1") == "FAILED"


def test_a_cancel_spares_a_teardown_task(machine: DagrelayMachine) -> None:
    """A model error the CI profile found on main: a teardown task claimed after the cancel is
    what a cancel must do (it spares teardown tasks), not a cancel undone."""
    m = machine
    m.define(
        Pipeline(
            (
                Task(items=(1, 2)),
                Task(parents=(0,), rule=TriggerRule.ALL_DONE, items=(1, 2), teardown=True),
                Task(parents=(1,), map=(), items=(1, 2)),
            )
        )
    )
    m.start_batch("b1")
    m.deliver_next()
    m.cancel(0)
    checked(m)
    m.deliver_next()  # the teardown task runs in the CANCELLING batch
    checked(m)
    m._quiesce()
    assert m._batch_status("b1") == "CANCELLED"


def test_a_rerun_while_cancelling_keeps_the_cancel(machine: DagrelayMachine) -> None:
    """Bug 2 as the CI profile found it on the old code: cancel while a task runs, then rerun
    another task before the batch is CANCELLED; the old code ran the batch again."""
    m = machine
    m.define(Pipeline((Task(items=(1, 2)), Task(parents=(0,)), Task(parents=(1,)))))
    m.start_batch("b1")
    m.cancel_while_running(0, True)  # t0 runs; cancel (CANCELLING), rerun t2: refused
    checked(m)
    m._quiesce()
    assert m._batch_status("b1") == "CANCELLED"
