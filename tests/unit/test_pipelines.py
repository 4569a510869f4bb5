"""Pipeline files: every problem is reported with the file's name and where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagrelay.errors import PipelineError
from dagrelay.handlers.registry import Registration, default_registry
from dagrelay.pipelines.apply import Plan, plan
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask, load_pipeline
from dagrelay.pipelines.validate import problems, registered_handlers, validate
from dagrelay.resources import schema_dir
from dagrelay.states import TriggerRule
from tests.paths import PYTHON_MONTHLY_PROFIT

NOOP = "handler: python.noop"
RULES = "['all_success', 'all_done', 'all_failed', 'one_success', 'one_failed', 'none_failed']"
END = "<stream end>"
NAME_RULE = "a letter, then at most 127 letters, digits, '_', '.' or '-'"


@pytest.fixture(scope="module")
def handlers() -> dict[str, Registration]:
    default_registry.load_plugins([])
    return registered_handlers()


def problems_of(tmp_path: Path, source: str, handlers: dict[str, Registration]) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(source, encoding="utf-8")
    try:
        validate(load_pipeline(path), handlers)
    except PipelineError as exc:
        return exc.problems
    return []


def tasks(*lines: str) -> str:
    return "pipeline: p\ntasks:\n" + "".join(f"  - {{{line}}}\n" for line in lines)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # -- the file itself
        pytest.param(
            "- a\n- b\n",
            ["expected a mapping with 'pipeline' and 'tasks', got a list"],
            id="not a mapping",
        ),
        pytest.param(
            "just text\n",
            ["expected a mapping with 'pipeline' and 'tasks', got a string"],
            id="a scalar",
        ),
        pytest.param(
            "", ["expected a mapping with 'pipeline' and 'tasks', got an empty file"], id="empty"
        ),
        pytest.param(
            "pipeline: p\ntasks: [\n",
            [f"not valid YAML: line 3, column 1: expected the node content, but found {END!r}"],
            id="unclosed bracket",
        ),
        pytest.param(
            "pipeline: p\ntasks:\n\t- name: a\n",
            ["not valid YAML: line 3, column 1: found character '\\t' that cannot start any token"],
            id="tab indentation",
        ),
        # -- the JSON Schema
        pytest.param(
            "pipeline: p\n", ["(top level): 'tasks' is a required property"], id="no tasks"
        ),
        pytest.param(
            "pipeline: p\ntasks: []\n", ["tasks: [] should be non-empty"], id="empty tasks"
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}") + "owner: me\n",
            ["(top level): unknown key 'owner'"],
            id="unknown top-level key",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", f"name: b, {NOOP}", f"name: c, {NOOP}, trigger_rule: often"),
            [f"task 'c': trigger_rule: 'often' is not one of {RULES}"],
            id="bad trigger rule",
        ),
        pytest.param(
            tasks(f"name: 9lives, {NOOP}"),
            [f"task '9lives': name: '9lives' is not a valid name ({NAME_RULE})"],
            id="bad task name",
        ),
        pytest.param(
            "pipeline: monthly profit\n" + tasks(f"name: a, {NOOP}").split("\n", 1)[1],
            [f"pipeline: 'monthly profit' is not a valid name ({NAME_RULE})"],
            id="bad pipeline name",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", f"name: b, parents: [a/x], {NOOP}"),
            [f"task 'b': parents/0: 'a/x' is not a valid name ({NAME_RULE})"],
            id="bad parent name",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", f"name: b, {NOOP}, parent: [a]"),
            ["task 'b': unknown key 'parent' (did you mean 'parents'?)"],
            id="misspelt key",
        ),
        pytest.param(
            "pipline: p\n" + tasks(f"name: a, {NOOP}").split("\n", 1)[1],
            ["(top level): unknown key 'pipline' (did you mean 'pipeline'?)"],
            id="misspelt pipeline key",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", "name: b, hander: python.noop, parents: [a]"),
            ["task 'b': unknown key 'hander' (did you mean 'handler'?)"],
            id="misspelt required task key",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", "name: b, parents: [a], owner: me"),
            ["task 'b': 'handler' is a required property"],  # one problem per task
            id="unknown key and a missing one",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", f"name: b, {NOOP}, parents: a"),
            ["task 'b': parents: 'a' is not of type 'array'"],
            id="parents not a list",
        ),
        pytest.param(
            "pipeline: p\ntasks:\n  - a\n",
            ["tasks/0: 'a' is not of type 'object'"],
            id="task string",
        ),
        pytest.param(
            tasks("name: a"), ["task 'a': 'handler' is a required property"], id="no handler"
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, params: [1, 2]"),
            ["task 'a': params: [1, 2] is not of type 'object'"],
            id="params not a mapping",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, params: {{output: {{day: 2024-03-01}}}}"),
            [
                (
                    "task 'a': params/output/day: datetime.date(2024, 3, 1) is not a JSON value "
                    "(quote dates and times in YAML)"
                )
            ],
            id="unquoted YAML date",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, params: {{output: {{1: x}}}}"),
            ["task 'a': params/output: key 1 is not a string (quote it in YAML)"],
            id="integer key",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, max_retries: -1"),
            ["task 'a': max_retries: -1 is less than the minimum of 0"],
            id="negative retries",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, retry_backoff: 0.5"),
            ["task 'a': retry_backoff: 0.5 is less than the minimum of 1"],
            id="backoff below 1",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, params: {{output: {{x: .nan}}}}"),
            ["task 'a': params: NaN and Infinity are not JSON values"],
            id="YAML NaN in params",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, retry_backoff: .inf"),
            ["task 'a': retry_backoff must be a finite number"],
            id="infinite backoff",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, timeout_s: 0", NOOP),
            [
                "task 'a': timeout_s: 0 is less than the minimum of 1",
                "tasks/1: 'name' is a required property",
            ],
            id="one problem per task",
        ),
        # -- the graph (dagrelay.engine.dag), handlers and params
        pytest.param(
            tasks(
                f"name: a, {NOOP}, parents: [c]",
                f"name: b, {NOOP}, parents: [a]",
                f"name: c, {NOOP}, parents: [b]",
                f"name: d, {NOOP}",
            ),
            ["cycle: a -> b -> c -> a"],
            id="cycle",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, parents: [a]"),
            ["task 'a' cannot depend on itself"],
            id="self edge",
        ),
        pytest.param(
            tasks("name: a, handler: bigquery.nope"),
            ["task 'a': unknown handler 'bigquery.nope'"],
            id="unknown handler",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", f"name: b, {NOOP}, parents: [a, zz]"),
            ["task 'b': unknown parent 'zz'"],
            id="unknown parent",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", f"name: a, {NOOP}"),
            ["task 'a' is defined more than once"],
            id="duplicate task",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", f"name: b, {NOOP}, parents: [a, a]"),
            ["task 'b': a parent is listed twice"],
            id="duplicate parent",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, retry_delay_s: 60, retry_max_delay_s: 10"),
            ["task 'a': retry_max_delay_s (10) is less than retry_delay_s (60)"],
            id="retry cap below delay",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, params: {{outptu: {{rows: 3}}}}"),
            [
                (
                    "task 'a' (python.noop): params (params): unknown key 'outptu' "
                    "(did you mean 'output'?)"
                )
            ],
            id="params against the handler's schema",
        ),
        pytest.param(
            tasks("name: a, handler: python.sleep"),
            ["task 'a' (python.sleep): params (params): 'seconds' is a required property"],
            id="required param missing",
        ),
        pytest.param(
            tasks(
                f"name: a, {NOOP}",
                f"name: b, {NOOP}, parents: [a], map: {{over: a.items, max_parallel: 0}}",
            ),
            ["task 'b': map/max_parallel: 0 is less than the minimum of 1"],
            id="map max_parallel below 1",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}, parents: [zz]", "name: b, handler: nope, parents: [b]"),
            [
                "task 'a': unknown parent 'zz'",
                "task 'b': unknown handler 'nope'",
                "task 'b' cannot depend on itself",
            ],
            id="every graph problem at once",
        ),
    ],
)
def test_bad_file(
    tmp_path: Path, handlers: dict[str, Registration], source: str, expected: list[str]
) -> None:
    found = problems_of(tmp_path, source, handlers)
    plain = [p.split(" (register it", 1)[0] for p in found]  # the hint: tests/unit/test_dag.py
    assert plain == [f"bad.yaml: {e}" for e in expected]


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            tasks("name: a, handler: python.sleep, params: {seconds: '{n}'}"),
            id="placeholder params are checked per batch",
        ),
        pytest.param(
            tasks(f"name: a, {NOOP}", f"name: b, {NOOP}, parents: [a], trigger_rule: all_done"),
            id="two tasks",
        ),
        pytest.param(
            tasks(f"name: b, {NOOP}, parents: [a]", f"name: a, {NOOP}"),
            id="parent after child",
        ),
        pytest.param(
            "pipeline: p\ndescription: x\n"
            + tasks(f"name: a, {NOOP}, pool: null").split("\n", 1)[1],
            id="description and null pool",
        ),
        pytest.param(
            tasks(
                f"name: a, {NOOP}",
                f"name: b, {NOOP}, parents: [a], map: {{over: a.items, max_parallel: 4}}",
            ),
            id="map with max_parallel",
        ),
    ],
)
def test_good_file(tmp_path: Path, handlers: dict[str, Registration], source: str) -> None:
    assert problems_of(tmp_path, source, handlers) == []


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PipelineError) as raised:
        load_pipeline(missing)
    assert raised.value.problems[0].startswith(f"{missing}: cannot read the file:")


@pytest.mark.parametrize("path", sorted((schema_dir() / "pipelines").glob("*.yaml")), ids=str)
def test_checked_in_pipelines_are_valid(path: Path, handlers: dict[str, Registration]) -> None:
    spec = load_pipeline(path)
    assert problems(spec, handlers) == []
    assert spec.source == path.name


def test_monthly_profit_spec() -> None:
    spec = load_pipeline(PYTHON_MONTHLY_PROFIT)
    by_name = {t.name: t for t in spec.tasks}
    assert spec.pipeline == "monthly_profit"
    assert list(by_name) == ["load_sales", "load_expenses", "calculate_profit"]
    assert by_name["load_sales"].params == {"output": {"total": 1250.5}}
    assert by_name["load_expenses"].params == {"output": {"total": 830.25}}
    profit = by_name["calculate_profit"]
    assert profit.handler == "python.call"
    assert profit.params == {"callable": "dagrelay.examples.calculate_profit"}
    assert profit.parents == ("load_sales", "load_expenses")
    assert profit.trigger_rule is TriggerRule.ALL_SUCCESS
    assert spec.edges() == [
        ("load_sales", "calculate_profit"),
        ("load_expenses", "calculate_profit"),
    ]


def test_names_only_skip_the_params_check(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(tasks(f"name: a, {NOOP}, params: {{wrong: 1}}"), encoding="utf-8")
    assert problems(load_pipeline(path), ["python.noop"]) == []


# -- plan: what an apply writes --------------------------------------------------------------


def _row(name: str, pipeline: str = "p", **columns: object) -> dict[str, object]:
    task = PipelineTask(name, "python.noop")
    return {**task.row(), "pipeline": pipeline, **columns}


def _spec(*tasks: PipelineTask) -> PipelineSpec:
    return PipelineSpec("p", tasks)


def test_plan_of_an_unchanged_pipeline_is_empty() -> None:
    spec = _spec(PipelineTask("a", "python.noop"), PipelineTask("b", "python.noop", parents=("a",)))
    changes = plan(spec, [_row("a"), _row("b")], [("a", "b")])
    assert changes == Plan((), (), (), (), ())


def test_plan_lists_each_kind_of_change() -> None:
    spec = _spec(
        PipelineTask("a", "python.noop", timeout_s=60),
        PipelineTask("new", "python.noop", parents=("a",)),
        PipelineTask("b", "python.noop", parents=("new",)),
        PipelineTask("theirs", "python.noop"),
    )
    rows = [_row("a"), _row("b"), _row("old"), _row("theirs", pipeline="q")]
    changes = plan(spec, rows, [("a", "b"), ("a", "old")])
    assert [t.name for t in changes.create] == ["new", "theirs"]  # q's "theirs" is q's own
    assert [t.name for t in changes.update] == ["a"]
    assert changes.stale == ("old",)
    assert changes.remove_edges == (("a", "b"),)  # the edge into "old" is not the file's to drop
    assert changes.add_edges == (("a", "new"), ("new", "b"))


@pytest.mark.parametrize(
    ("in_file", "in_row"),
    [
        pytest.param({"flag": True}, {"flag": 1}, id="true is not 1 in jsonb"),
        pytest.param({"n": 1}, {"n": 1, "m": None}, id="an extra key"),
    ],
)
def test_params_are_compared_as_json(in_file: dict[str, object], in_row: dict[str, object]) -> None:
    spec = _spec(PipelineTask("a", "python.noop", params=in_file))
    assert [t.name for t in plan(spec, [_row("a", params=in_row)], []).update] == ["a"]
