"""A deadline in a pipeline file or the Python API: what is refused, and how it is said (the
checks of the file's JSON Schema; the database refuses a malformed row as well,
tests/integration/test_deadlines.py)."""

from __future__ import annotations

import pytest

from dagrelay.errors import PipelineError
from dagrelay.pipelines import api
from dagrelay.pipelines.spec import schema_problems

TASK = {"name": "a", "handler": "python.noop"}


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"deadline": {"within_s": 60, "fail": True}}, "deadline: unknown key 'fail'"),
        ({"deadline": {"within_s": 0}}, "deadline/within_s: 0 is less than the minimum of 1"),
        ({"deadline": {"after": "start"}}, "deadline: 'within_s' is a required property"),
        (
            {"tasks": [{**TASK, "deadline": {"within": 60}}]},
            "task 'a': deadline: unknown key 'within' (did you mean 'within_s'?)",
        ),
        (
            {"tasks": [{**TASK, "deadline": {"within_s": 60, "after": "end"}}]},
            "task 'a': deadline/after: 'end' is not one of ['scheduled', 'start']",
        ),
    ],
)
def test_a_malformed_deadline_is_named(document: dict[str, object], problem: str) -> None:
    data = {"pipeline": "p", "tasks": [TASK], **document}
    assert problem in schema_problems(data)


def test_valid_deadlines_pass_and_python_says_the_same() -> None:
    data = {
        "pipeline": "p",
        "deadline": {"within_s": 7200, "after": "scheduled"},
        "tasks": [{**TASK, "deadline": {"within_s": 60, "after": "start", "fail": True}}],
    }
    assert schema_problems(data) == []
    p = api.Pipeline("p", deadline=api.Deadline(0))
    p.add("a", handler="python.noop")
    with pytest.raises(PipelineError, match="deadline/within_s: 0 is less than the minimum"):
        p.spec()
