"""The rules a message must keep so that the database can hold what it says: full-string name
patterns (one definition), strings without NUL or lone surrogates, finite numbers — and the one
list of actions."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, get_args

import pytest

from dagrelay import names, schemas
from dagrelay.errors import BadMessage
from dagrelay.messages import ACTIONS, Action, Envelope, Message, escaped, parse, unstorable

SCHEMA = Path(__file__).resolve().parents[2] / "schema"


def env(data: str, message_id: str = "m1", **attributes: str) -> Envelope:
    return Envelope(base64.b64encode(data.encode()).decode(), attributes, message_id)


def body(action: str = "start_batch", **fields: Any) -> str:
    base: dict[str, Any] = {"action": action, "pipeline": "p", "batch_id": "2024-03"}
    if action in {"run_task", "rerun", "poll_task"}:
        base = {"action": action, "batch_id": "2024-03", "task": "t"}
        if action == "poll_task":
            base["attempt"] = 1
    return json.dumps({**base, **fields})


def reason_of(envelope: Envelope) -> str:
    with pytest.raises(BadMessage) as info:
        parse(envelope)
    return info.value.reason


# -- full-string patterns: a trailing newline is not part of a name --------------------------


@pytest.mark.parametrize(
    "action", ["start_batch", "run_task", "poll_task", "rerun", "cancel_batch"]
)
@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\u00b2"])
def test_a_trailing_character_makes_a_batch_id_invalid(action: str, suffix: str) -> None:
    assert "batch_id" in reason_of(env(body(action, batch_id="2024-03" + suffix)))


@pytest.mark.parametrize(
    ("field", "value"),
    [("pipeline", "p\n"), ("start_task", "t\n"), ("params", {"key\n": 1})],
)
def test_a_trailing_newline_makes_a_name_invalid(field: str, value: Any) -> None:
    assert "does not match" in reason_of(env(body(**{field: value})))


def test_patterns_have_ecma_semantics() -> None:
    assert not schemas.matches("^a$", "a\n")
    assert not schemas.matches(r"^\d$", "\u00b2")  # \d is ASCII in ECMA-262, not in re
    assert schemas.matches(r"^\d$", "7")
    assert not schemas.matches("^a$", "\ud800")


def test_names_are_defined_once() -> None:
    """No schema file but names.schema.json spells an identifier pattern; the rest refer to it."""
    defined = {names.NAME_PATTERN, names.BATCH_ID_PATTERN, names.PARAM_KEY_PATTERN}
    spelled: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("pattern") in defined:
                spelled.append(where)
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path in SCHEMA.rglob("*.json"):
        if path.name != "names.schema.json":
            walk(json.loads(path.read_text(encoding="utf-8")), path.name)
    assert spelled == []
    assert names.is_name("load_sales")
    assert not names.is_name("load_sales\n")
    assert names.is_batch_id("2024-03")
    assert not names.is_batch_id("2024-03\n")


# -- strings the database cannot hold ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param(body(triggered_by="me\u0000"), "triggered_by", id="triggered_by"),
        pytest.param(body(params={"x": "a\u0000b"}), "params/x", id="param value"),
        pytest.param(body(params={"x": ["ok", {"y": "\u0000"}]}), "params/x/1/y", id="nested"),
        pytest.param(body(params={"a\u0000": 1}), "params/a\\u0000 (a key)", id="param key"),
        pytest.param(body(batch_id="\u0000"), "batch_id", id="batch_id"),
        pytest.param(body(action="bogus\u0000"), "action", id="action"),
    ],
)
def test_nul_anywhere_in_the_data_is_rejected(data: str, where: str) -> None:
    reason = reason_of(env(data))
    assert f"{where}: contains a NUL character" in reason
    assert "\x00" not in reason


def test_nul_in_an_attribute_is_rejected() -> None:
    reason = reason_of(env(body(), origin="cli\u0000"))
    assert reason.startswith("attribute origin: contains a NUL character")
    reason = reason_of(env(body(), **{"or\u0000igin": "x"}))
    assert "a key" in reason
    assert "\x00" not in reason


def test_lone_surrogate_is_rejected() -> None:
    data = '{"action": "start_batch", "pipeline": "p", "batch_id": "b", "triggered_by": "\\ud800"}'
    assert "lone surrogate" in reason_of(env(data))


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_numbers_json_cannot_carry_are_rejected(number: str) -> None:
    data = '{"action": "start_batch", "pipeline": "p", "batch_id": "b", "params": {"x": %s}}'
    assert "not JSON we accept" in reason_of(env(data % number))


def test_escaped_is_storable_and_readable() -> None:
    assert escaped("a\x00b\ud800c") == "a\\u0000b\\ud800c"
    assert escaped("plain ü") == "plain ü"
    escaped("\ud800").encode("utf-8")  # no UnicodeEncodeError
    assert unstorable({"a": ["x", "y"]}) is None


# -- one list of actions -----------------------------------------------------------------------


def test_actions_are_defined_once() -> None:
    schema_files = {p.name.removesuffix(".schema.json") for p in (SCHEMA / "messages").glob("*")}
    assert set(ACTIONS) == schema_files
    kinds = {m.action for m in get_args(Message)}
    assert kinds == set(Action)
    assert len(kinds) == len(get_args(Message))
