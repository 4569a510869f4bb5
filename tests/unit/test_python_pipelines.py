"""Pipelines in Python build exactly the spec the YAML file builds, and name the task and the
field of every problem."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from dagrelay.errors import PipelineError
from dagrelay.handlers.registry import HandlerContext, default_registry
from dagrelay.pipelines.api import Map, Pipeline, Schedule
from dagrelay.pipelines.export import export_yaml
from dagrelay.pipelines.sources import load_specs
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.pipelines.validate import problems, registered_handlers
from dagrelay.states import TriggerRule

EXAMPLE = """\
pipeline: pyapi_all
description: a pipeline with a bit of everything
schedule:
  cron: "0 6 1 * *"
  timezone: Europe/Brussels
  batch_id_template: "{interval_start:%Y-%m}"
  catchup: all
  catchup_limit: 3
  max_active_batches: 2
  overlap: wait
  paused: true
tasks:
  - name: pyapi_all.extract
    description: a Python step
    handler: pyapi_all.pyapi_all.extract
    params: {rows: 3}
    max_retries: 2
    retry_delay_s: 5
    retry_backoff: 3.0
    retry_max_delay_s: 60
    timeout_s: 120
    pool: warehouse
    pool_slots: 2
    priority: 5
    max_active: 1
  - name: pyapi_all.check
    handler: bigquery.check
    parents: [pyapi_all.extract]
    params: {sql: "SELECT 1 FROM t", expect: empty, query_parameters: {n: 1}, wait_s: 5}
    trigger_rule: all_done
    enabled: false
  - name: pyapi_all.query
    handler: bigquery.query
    parents: [pyapi_all.check, pyapi_all.extract]
    params: {sql_file: etl/merge.sql, destination: ds.t, write_disposition: WRITE_TRUNCATE}
    trigger_rule: none_failed
  - name: pyapi_all.done
    handler: python.noop
    parents: [pyapi_all.query]
    params: {output: {ok: true}}
    pool: null
  - name: pyapi_files
    handler: python.noop
    params: {output: {files: [a, b]}}
  - name: pyapi_all.each
    handler: python.noop
    parents: [pyapi_files]
    map: {over: pyapi_files.files, max_parallel: 4, tolerated_failures: 10%}
"""


class ExtractParams(BaseModel):
    rows: int = 10


def build_example() -> Pipeline:
    p = Pipeline(
        "pyapi_all",
        description="a pipeline with a bit of everything",
        schedule=Schedule(
            cron="0 6 1 * *",
            timezone="Europe/Brussels",
            batch_id_template="{interval_start:%Y-%m}",
            catchup="all",
            catchup_limit=3,
            max_active_batches=2,
            overlap="wait",
            paused=True,
        ),
    )

    @p.task(
        "pyapi_all.extract",
        params=ExtractParams(rows=3),
        retries=2,
        retry_delay_s=5,
        retry_backoff=3.0,
        retry_max_delay_s=60,
        timeout_s=120,
        pool="warehouse",
        pool_slots=2,
        priority=5,
        max_active=1,
        description="a Python step",
    )
    def extract(ctx: HandlerContext[ExtractParams]) -> dict[str, Any]:
        return {"rows": ctx.params.rows}

    check = p.bigquery_check(
        "pyapi_all.check",
        sql="SELECT 1 FROM t",
        expect="empty",
        query_parameters={"n": 1},
        wait_s=5,
        parents=[extract],
        trigger_rule=TriggerRule.ALL_DONE,
        enabled=False,
    )
    query = p.bigquery_query(
        "pyapi_all.query",
        sql_file="etl/merge.sql",
        destination="ds.t",
        write_disposition="WRITE_TRUNCATE",
        parents=[check, "pyapi_all.extract"],
        trigger_rule=TriggerRule.NONE_FAILED,
    )
    p.noop("pyapi_all.done", output={"ok": True}, parents=[query])
    files = p.noop("pyapi_files", output={"files": ["a", "b"]})
    p.noop(
        "pyapi_all.each",
        parents=[files],
        map=Map(over="pyapi_files.files", max_parallel=4, tolerated_failures="10%"),
    )
    return p


def test_a_whole_pipeline_in_python_equals_its_yaml(tmp_path: Path) -> None:
    """An example; test_python_parity.py derives one case per key of the schema."""
    path = tmp_path / "all.yaml"
    path.write_text(EXAMPLE)
    from_yaml = load_pipeline(path)
    from_python = build_example().spec(source="all.yaml")
    assert from_python == from_yaml
    assert export_yaml(from_python) == export_yaml(from_yaml)
    assert problems(from_python, registered_handlers()) == []


def test_a_decorated_step_is_a_registered_typed_handler() -> None:
    spec = build_example().spec()
    registration = default_registry.get("pyapi_all.pyapi_all.extract")
    assert registration.params_model is ExtractParams
    ctx = HandlerContext("pyapi_all", "b", "t", 1, ExtractParams(rows=4))
    assert registration.function(ctx) == {"rows": 4}
    assert spec.tasks[0].params == {"rows": 3}


def test_params_are_checked_before_running_naming_task_and_field() -> None:
    p = Pipeline("pyapi_bad")
    p.add("pyapi_bad.a", handler="python.sleep", params={"seconds": "soon"})
    p.add("pyapi_bad.b", handler="pyapi_all.pyapi_all.extract", params={"rows": "many"})
    build_example()  # registers pyapi_all.pyapi_all.extract
    found = problems(p.spec(), registered_handlers())
    assert found[0].startswith("pipeline pyapi_bad: task 'pyapi_bad.a' (python.sleep): params ")
    assert "seconds" in found[0]
    assert found[1] == (
        "pipeline pyapi_bad: task 'pyapi_bad.b' (pyapi_all.pyapi_all.extract): params rows: "
        "Input should be a valid integer, unable to parse string as an integer"
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"retries": -1}, "task 'pyapi_f.a': max_retries: -1 is less than the minimum of 0"),
        ({"timeout_s": 0}, "task 'pyapi_f.a': timeout_s: 0 is less than the minimum of 1"),
        ({"retry_backoff": 0.5}, "task 'pyapi_f.a': retry_backoff: 0.5 is less than the minimum"),
        ({"trigger_rule": "any"}, "task 'pyapi_f.a': trigger_rule: 'any' is not one of"),
    ],
)
def test_a_bad_field_names_the_task_and_the_field(settings: dict[str, Any], expected: str) -> None:
    def build() -> None:
        p = Pipeline("pyapi_f")
        p.noop("pyapi_f.a", **settings)
        p.spec()

    with pytest.raises(PipelineError) as caught:
        build()
    (problem,) = caught.value.problems
    assert expected in problem


def test_a_bad_schedule_is_refused() -> None:
    p = Pipeline("pyapi_s", schedule=Schedule(cron="61 * * * *"))
    p.noop("pyapi_s.a")
    with pytest.raises(PipelineError) as caught:
        p.spec()
    assert caught.value.problems[0].startswith("pipeline pyapi_s: schedule: ")


def test_a_cycle_is_a_validation_problem() -> None:
    p = Pipeline("pyapi_c")
    p.noop("pyapi_c.a", parents=["pyapi_c.b"])
    p.noop("pyapi_c.b", parents=["pyapi_c.a"])
    assert problems(p.spec(), registered_handlers()) == [
        "pipeline pyapi_c: cycle: pyapi_c.a -> pyapi_c.b -> pyapi_c.a"
    ]


def test_load_a_python_file_and_a_module_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pyapi_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flows.py").write_text(
        textwrap.dedent(
            """
            from dagrelay.pipelines.api import Pipeline

            flow = Pipeline("pyapi_file")
            flow.noop("pyapi_file.a")
            other = Pipeline("pyapi_file2")
            other.noop("pyapi_file2.a")
            """
        )
    )
    specs = load_specs(package / "flows.py")
    assert [(s.pipeline, s.source) for s in specs] == [
        ("pyapi_file", "flows.py"),
        ("pyapi_file2", "flows.py"),
    ]
    monkeypatch.chdir(tmp_path)
    (spec,) = load_specs("pyapi_pkg.flows:other")
    assert spec.pipeline == "pyapi_file2"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("raise RuntimeError('boom')", "cannot import 'pyapi_broken': RuntimeError: boom (at "),
        ("x = 1", "defines no Pipeline at module level"),
    ],
)
def test_a_broken_python_file_is_one_line(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "pyapi_broken.py"
    path.write_text(body + "\n")
    with pytest.raises(PipelineError) as caught:
        load_specs(path)
    (problem,) = caught.value.problems
    assert problem.startswith(str(path) if "cannot" in expected else "pyapi_broken.py")
    assert expected in problem


def test_an_unknown_reference_says_what_is_accepted() -> None:
    with pytest.raises(PipelineError, match=r"expected a pipeline file \(.yaml, .yml, .py\)"):
        load_specs("etl")
