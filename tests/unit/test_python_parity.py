"""Python can say everything a pipeline file can: the cases are derived from
schema/pipeline.schema.json, not listed by hand. For every key of a task, of the schedule, of a
task's map and of the file itself, the API has a keyword, and a pipeline giving that key a value
(generated from the key's schema, never its default) builds the same spec in Python as in YAML.
A key added to the schema and not to the API fails ``test_every_schema_key_has_an_api_keyword``
and its case here."""

from __future__ import annotations

import copy
import dataclasses
import enum
import inspect
import json
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from dagrelay.errors import PipelineError
from dagrelay.pipelines import api
from dagrelay.pipelines.api import Map, Pipeline, Schedule, TaskSettings
from dagrelay.pipelines.export import export_yaml
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask, load_pipeline
from dagrelay.resources import schema_dir

SCHEMA: dict[str, Any] = json.loads(
    (schema_dir() / "pipeline.schema.json").read_text(encoding="utf-8")
)
PIPELINE = "parity"
BASE_TASK = {"name": "parity.a", "handler": "python.noop"}
# Values a schema's types cannot give: a pattern, or a string whose meaning is checked beyond the
# schema (a cron expression, a zone, a template), or a name that must differ from BASE_TASK's.
# A new string key with a pattern and no example here fails with a message saying so.
EXAMPLES: dict[str, Any] = {
    "tasks.name": "parity.b",
    "tasks.map.over": "parity.a.items",
    "schedule.cron": "0 6 1 * *",
    "schedule.timezone": "Europe/Brussels",
    "schedule.batch_id_template": "{interval_start:%Y-%m}",
    "on_assets.batch_id_template": "{partition}",
}
# The API's names of the file's top-level keys, where they differ: the name is the first argument of
# Pipeline(), the tasks come from its add().
FILE_KEYS = {"name": "pipeline", "add": "tasks"}


# -- what the schema says ------------------------------------------------------------------------


def section(schema: Mapping[str, Any], which: str) -> dict[str, Any]:
    """The properties of the file (``pipeline``), a task, a task's map, or the schedule."""
    defs = schema["$defs"]
    sections: dict[str, dict[str, Any]] = {
        "pipeline": schema["properties"],
        "task": defs["task"]["properties"],
        "map": defs["task"]["properties"]["map"]["properties"],
        "schedule": defs["schedule"]["properties"],
    }
    return sections[which]


def resolve(node: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` merged in (its own keys win)."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return dict(node)
    target = resolve(schema["$defs"][ref.removeprefix("#/$defs/")], schema)
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def example(node: Mapping[str, Any], where: str, default: Any, schema: Mapping[str, Any]) -> Any:
    """A valid value of ``node`` that is not ``default``."""
    if where in EXAMPLES:
        return EXAMPLES[where]
    if node.get("$ref") == "#/$defs/name":
        return BASE_TASK["name"]
    node = resolve(node, schema)
    if "enum" in node:
        return next(v for v in node["enum"] if v != default)
    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            branch = next(b for b in node[combinator] if b.get("type") != "null")
            return example(branch, where, default, schema)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    return _GENERATORS[str(kind)](node, where, default, schema)


def _integer(node: Mapping[str, Any], where: str, default: Any, schema: Mapping[str, Any]) -> int:
    value = int(min(node.get("minimum", 0) + 2, node.get("maximum", 2**31 - 1)))
    return value + 1 if value == default else value


def _number(node: Mapping[str, Any], where: str, default: Any, schema: Mapping[str, Any]) -> float:
    value = float(node.get("minimum", 0)) + 1.5
    return value + 1 if value == default else value


def _string(node: Mapping[str, Any], where: str, default: Any, schema: Mapping[str, Any]) -> str:
    if "pattern" in node:
        pytest.fail(f"{where} has a pattern: give it a value in EXAMPLES ({__name__})")
    return "text"


def _boolean(node: Mapping[str, Any], where: str, default: Any, schema: Mapping[str, Any]) -> bool:
    return default is not True


def _array(
    node: Mapping[str, Any], where: str, default: Any, schema: Mapping[str, Any]
) -> list[Any]:
    return [example(node["items"], f"{where}[]", None, schema)]


def _object(
    node: Mapping[str, Any], where: str, default: Any, schema: Mapping[str, Any]
) -> dict[str, Any]:
    properties = node.get("properties")
    if not properties:
        return {"key": 1}  # free-form (params)
    return {
        key: example(sub, f"{where}.{key}", sub.get("default"), schema)
        for key, sub in properties.items()
    }


_GENERATORS: dict[str, Callable[[Mapping[str, Any], str, Any, Mapping[str, Any]], Any]] = {
    "integer": _integer,
    "number": _number,
    "string": _string,
    "boolean": _boolean,
    "array": _array,
    "object": _object,
}


def defaults(spec_class: type[Any]) -> dict[str, Any]:
    return {
        f.name: f.default
        for f in dataclasses.fields(spec_class)
        if f.default is not dataclasses.MISSING
    }


# -- what the API says ---------------------------------------------------------------------------


def keywords(function: Callable[..., Any]) -> list[str]:
    return [
        name
        for name, p in inspect.signature(function).parameters.items()
        if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def api_keys() -> dict[str, dict[str, str]]:
    """{section: {file key: Python keyword}} of everything the API accepts."""
    task = [*keywords(Pipeline.add), *TaskSettings.__optional_keys__]
    pipeline = [*keywords(Pipeline.__init__), "add"]
    return {
        "pipeline": {FILE_KEYS.get(k, k): k for k in pipeline},
        "task": {api.YAML_KEYS.get(k, k): k for k in task},
        "map": {f.name: f.name for f in dataclasses.fields(Map)},
        "schedule": {f.name: f.name for f in dataclasses.fields(Schedule)},
    }


def mismatches(schema: Mapping[str, Any]) -> list[str]:
    """Keys the schema allows that the API has no keyword for, and the reverse."""
    found = []
    for which, keys in api_keys().items():
        in_schema = set(section(schema, which))
        found += [f"{which}: {k!r} is in the schema, not in the API" for k in in_schema - set(keys)]
        found += [f"{which}: {k!r} is in the API, not in the schema" for k in set(keys) - in_schema]
    return sorted(found)


def python_value(value: Any, hint: Any) -> Any:
    """``value`` (as the file has it) as the API takes it: a mapping as the dataclass and a
    string as the enum the keyword's type names."""
    for kind in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(kind) and isinstance(kind, type) and isinstance(value, dict):
            return kind(**value)
        if isinstance(kind, type) and issubclass(kind, enum.Enum) and isinstance(value, str):
            return kind(value)
    return value


TASK_HINTS = typing.get_type_hints(TaskSettings) | typing.get_type_hints(Pipeline.add)
PIPELINE_HINTS = typing.get_type_hints(Pipeline.__init__)


# -- the cases -----------------------------------------------------------------------------------


def from_yaml(tmp_path: Path, document: dict[str, Any]) -> PipelineSpec:
    path = tmp_path / "parity.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_pipeline(path)


def from_python(document: dict[str, Any]) -> PipelineSpec:
    """The document built through the API: every key through its keyword."""
    keys = api_keys()
    settings = {
        keys["pipeline"][k]: python_value(v, PIPELINE_HINTS[keys["pipeline"][k]])
        for k, v in document.items()
        if k not in ("pipeline", "tasks")
    }
    pipeline = Pipeline(document["pipeline"], **settings)
    for task in document["tasks"]:
        given = {
            keys["task"][k]: python_value(v, TASK_HINTS[keys["task"][k]]) for k, v in task.items()
        }
        pipeline.add(given.pop("name"), **given)
    return pipeline.spec(source="parity.yaml")


def task_case(key: str, schema: Mapping[str, Any] = SCHEMA) -> dict[str, Any]:
    task_defaults = defaults(PipelineTask)
    node = section(schema, "task")[key]
    value = example(node, f"tasks.{key}", task_defaults.get(key), schema)
    return {
        "pipeline": PIPELINE,
        "tasks": [BASE_TASK, {**BASE_TASK, "name": "parity.b", key: value}],
    }


def schedule_case(key: str) -> dict[str, Any]:
    node = section(SCHEMA, "schedule")[key]
    schedule = {"cron": EXAMPLES["schedule.cron"]}
    schedule[key] = example(node, f"schedule.{key}", defaults(Schedule).get(key), SCHEMA)
    return {"pipeline": PIPELINE, "schedule": schedule, "tasks": [BASE_TASK]}


def pipeline_case(key: str) -> dict[str, Any]:
    document: dict[str, Any] = {"pipeline": PIPELINE, "tasks": [BASE_TASK]}
    if key not in document:
        document[key] = example(section(SCHEMA, "pipeline")[key], key, None, SCHEMA)
    return document


def test_every_schema_key_has_an_api_keyword() -> None:
    assert mismatches(SCHEMA) == []


def test_a_key_added_to_the_schema_alone_is_caught() -> None:
    """What happens when the schema gains a key (say a task's ``deadline_s``) and the API does
    not: the check names it."""
    grown = copy.deepcopy(SCHEMA)
    grown["$defs"]["task"]["properties"]["deadline_s"] = {"type": "boolean"}
    grown["$defs"]["schedule"]["properties"]["jitter_s"] = {"type": "integer"}
    assert mismatches(grown) == [
        "schedule: 'jitter_s' is in the schema, not in the API",
        "task: 'deadline_s' is in the schema, not in the API",
    ]


@pytest.mark.parametrize("key", sorted(section(SCHEMA, "task")))
def test_each_task_key_builds_the_same_spec(tmp_path: Path, key: str) -> None:
    assert key in api_keys()["task"], f"task key {key!r} has no keyword in Pipeline.add"
    document = task_case(key)
    expected = from_yaml(tmp_path, document)
    assert from_python(document) == expected
    base = from_yaml(
        tmp_path, {**document, "tasks": [BASE_TASK, {**BASE_TASK, "name": "parity.b"}]}
    )
    assert key == "name" or expected != base, f"the example of {key!r} is its default"


@pytest.mark.parametrize("key", sorted(section(SCHEMA, "schedule")))
def test_each_schedule_key_builds_the_same_spec(tmp_path: Path, key: str) -> None:
    assert key in api_keys()["schedule"], f"schedule key {key!r} is not a field of Schedule"
    document = schedule_case(key)
    expected = from_yaml(tmp_path, document)
    assert from_python(document) == expected
    assert key == "cron" or expected.schedule != Schedule(cron=EXAMPLES["schedule.cron"])


@pytest.mark.parametrize("key", sorted(section(SCHEMA, "pipeline")))
def test_each_pipeline_key_builds_the_same_spec(tmp_path: Path, key: str) -> None:
    assert key in api_keys()["pipeline"], f"file key {key!r} has no keyword in Pipeline()"
    document = pipeline_case(key)
    assert from_python(document) == from_yaml(tmp_path, document)


def test_every_key_at_once_exports_the_same_file(tmp_path: Path) -> None:
    task_keys = section(SCHEMA, "task")
    every_task = {k: v for key in task_keys for k, v in task_case(key)["tasks"][1].items()}
    schedule = {
        k: v
        for key in section(SCHEMA, "schedule")
        for k, v in schedule_case(key)["schedule"].items()
    }
    document = {
        "pipeline": PIPELINE,
        "description": "text",
        "schedule": schedule,
        "tasks": [BASE_TASK, every_task],
    }
    assert set(every_task) == set(task_keys)
    expected = from_yaml(tmp_path, document)
    built = from_python(document)
    assert built == expected
    assert export_yaml(built) == export_yaml(expected)
    assert built.tasks[1].map == {
        "over": "parity.a.items",
        "max_items": 3,
        "max_parallel": 3,
        "tolerated_failures": 2,
    }


def test_a_setting_that_is_not_one_is_refused_with_the_closest() -> None:
    settings: dict[str, Any] = {"retires": 2}
    p = Pipeline("parity")
    with pytest.raises(PipelineError) as caught:
        p.noop("parity.a", **settings)
    (problem,) = caught.value.problems
    assert problem.startswith(
        "task 'parity.a': 'retires' is not a task setting (did you mean 'retries'?)"
    )
